"""The prior-fitting job: one Dask task per store shard, workers write straight into the store.

The client plans the crops, creates (or reopens) the store, and submits one task per shard that still has
work (a shard is one file per array, so no two tasks ever write the same file); each task fits the shard's
unfinished chunks one batch at a time, writes each chunk as soon as it is fitted and returns a few numbers
per chunk. Because every result lands in the store as soon as its chunk is fitted, killing a worker or the
client costs only the chunks in flight: rerunning the same command skips finished chunks, refits the rest,
and retries crops that failed while fitting (crops that failed at planning time, i.e. images that are too
small or unreadable, stay failed). Tasks lost with a worker are rescheduled by the scheduler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgp_fitting.batch_size import auto_batch, check_requested_batch, resolve_batch
from dgp_fitting.chunk_pipeline import (
    ImageCache,
    crops_needing_work,
    decode_threads,
    fit_loaded,
    load_chunk,
    run_pipelined,
    write_fitted,
)
from dgp_fitting.clusters import BatchJobWatch, ClusterSpec, connect, local_gpu_index
from dgp_fitting.corpus_check import check_store_before_resume, record_files, refuse_unencodable
from dgp_fitting.crop_plan import CropPlan, plan_crops
from dgp_fitting.fitting import FitConfig
from dgp_fitting.job_limits import (
    WORKER_PROCESS_BYTES,
    check_batch,
    check_crop,
    check_disk,
    check_fit_numbers,
    check_grid,
    check_local_workers,
    fit_bytes,
    free_disk,
    free_memory,
    max_plan_crops,
    memory_size,
    store_bytes_per_crop,
)
from dgp_fitting.job_plan import JobPlan
from prior_store import (
    STATUS_DONE,
    StoreConfig,
    open_or_create,
    open_store,
    store_exists,
)
from prior_store.atomic_store import StoreDiskFullError, is_disk_full
from prior_store.creation import create_store_atomically
from prior_store.lock import check_writable, store_lock
from prior_store.store import PriorStore

#: Times a chunk whose fitting raised is tried again before it is reported as errored (worker loss is separate:
#: the scheduler reschedules the shard's task, up to distributed's `allowed-failures`).
TASK_RETRIES = 2


@dataclass
class JobSummary:
    """What the client learns: counts over the whole store after the run, and this run's throughput."""

    store: str
    crops: int
    done: int
    failed: int
    pending: int
    skipped: int  # crops already done before this run
    fitted: int  # crops fitted (done or failed) by this run's tasks
    chunks_run: int
    chunks_skipped: int
    seconds: float  # from the first task submitted to the last result (cluster start-up excluded)
    psnr_median: float | None
    psnr_p5: float | None
    crops_per_second: float
    dashboard: str | None = None
    errors: list[str] = field(default_factory=list)  # chunks whose task kept raising

    def lines(self) -> list[str]:
        psnr = (
            "n/a"
            if self.psnr_median is None
            else f"median {self.psnr_median:.2f} dB, 5th percentile {self.psnr_p5:.2f} dB"
        )
        out = [
            f"store {self.store}: {self.crops} crops: {self.done} done, {self.failed} failed, "
            f"{self.pending} pending; {self.skipped} skipped (already done)",
            f"this run: {self.fitted} crops in {self.chunks_run} chunks ({self.chunks_skipped} chunks skipped) "
            f"in {self.seconds:.1f} s = {self.crops_per_second:.2f} crops/s",
            f"PSNR of done crops: {psnr}",
        ]
        out += [f"chunk error: {e}" for e in self.errors]
        return out


def chunk_needs_work(status: np.ndarray, boxes: np.ndarray, crop: int) -> bool:
    """A chunk runs if any of its crops needs work."""
    return bool(crops_needing_work(status, boxes, crop).any())


#: --device values: auto, cpu, cuda (a worker's own GPU) or cuda:N (GPU N of the machine).
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> str:
    """The --device value, lower-cased, or a ValueError naming the accepted ones."""
    name = str(device).strip().lower()
    if not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")
    return name


def device_kind(device: str) -> str:
    """'cuda' for cuda and cuda:N (tasks then ask for a GPU resource), else the name."""
    return "cuda" if device.startswith("cuda") else device


def cuda_index(device: str, count: int) -> int:
    """N of cuda:N, when this machine has that device; else a one-line refusal saying how many there are."""
    index = int(device.partition(":")[2])
    if index >= count:
        seen = "no CUDA device" if count == 0 else f"{count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        raise ValueError(f"--device {device}: this machine has {seen}; use --device cuda, or cpu")
    return index


def _worker_device(device: str) -> torch.device:
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"--device {device} was asked but this worker sees no CUDA device")
    if ":" in device:
        return torch.device("cuda", cuda_index(device, torch.cuda.device_count()))
    try:
        from distributed import get_worker

        name = get_worker().name
    except ValueError:  # not inside a worker
        name = 0
    return torch.device("cuda", local_gpu_index(name, torch.cuda.device_count()))


def _set_worker_threads() -> None:
    """Inside a worker, let torch and numba use the worker's threads only (one each on a local cluster), so
    worker processes on one machine do not oversubscribe its cores."""
    try:
        from distributed import get_worker

        threads = max(1, int(get_worker().state.nthreads))
    except ValueError:  # not inside a worker
        return
    torch.set_num_threads(threads)
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass


def fit_chunk(store_path: str, index: int, root: str = ".", device: str = "auto") -> dict:
    """Fit every crop of chunk `index` that needs it and write the whole chunk; return a small summary.

    Runs on a worker, in line (load, fit, write); `fit_shard` runs a shard's chunks through the same stages
    overlapped. Image paths in the store are resolved against `root` (the client's working folder).
    """
    _set_worker_threads()
    store = open_store(store_path, mode="r+")
    dev = _worker_device(device)
    work = load_chunk(store, index, ImageCache(root), pin=dev.type == "cuda")
    fit_loaded(work, store, dev)
    return write_fitted(work, store)


def fit_shard(
    store_path: str,
    shard: int,
    chunks: Sequence[int],
    root: str = ".",
    device: str = "auto",
    threads_for_decoding: int | None = None,
) -> list[dict]:
    """Fit chunks `chunks` of shard `shard` in order, each written as soon as it is fitted, decoding the next
    chunk's images and writing the previous chunk while one fits (`dgp_fitting.chunk_pipeline`).

    Runs on a worker, the only writer of the shard's files; a kill loses only the chunks in flight. A chunk whose
    fitting raises is tried TASK_RETRIES more times (in line, with `fit_chunk`), then reported as
    {"chunk": i, "error": ...} while the shard's other chunks go on. `threads_for_decoding` None: several beside a
    GPU, one beside CPU fitting (`chunk_pipeline.decode_threads`)."""
    _set_worker_threads()
    store = open_store(store_path, mode="r+")
    owned = store.shard_chunks(shard)
    stray = [c for c in chunks if c not in owned]
    if stray:
        raise ValueError(f"chunks {stray} are not in shard {shard} (chunks {owned.start}..{owned.stop - 1})")
    dev = _worker_device(device)
    cache = ImageCache(root, decode_threads(dev) if threads_for_decoding is None else threads_for_decoding)
    return run_pipelined(
        chunks,
        load=lambda index: load_chunk(store, index, cache, pin=dev.type == "cuda"),
        fit=lambda work: fit_loaded(work, store, dev),
        write=lambda work: write_fitted(work, store),
        retry=lambda index: fit_chunk(store_path, index, root, device),
        retries=TASK_RETRIES,
    )


def prepare_store(
    job: JobPlan,
    batch: int | str | None = None,
    refit_changed: bool = False,
    echo: Callable[[str], None] = print,
) -> PriorStore:
    """Plan the crops and create the store, or reopen it after checking it was made the same way, mending
    damaged chunks and checking that its images did not change (`dgp_fitting.corpus_check`), in this process.

    `batch` None or "auto" on an existing store takes its chunk size; "auto" on a new one sizes the chunks to this
    process's device (`auto_batch`). A corpus none of whose crops can be fitted is refused before any store is made.
    `run_prior_job` does the same with its chunks checked (or `auto` measured) on the device that fits them.
    """
    crops = plan_corpus(job)
    store_chunks = open_store(job.store_path).chunk_size if store_exists(job.store_path) else None
    measured = auto_batch(job.crop, _worker_device("auto")) if batch == "auto" and store_chunks is None else None
    chunk = resolve_batch(batch, store_chunks, measured, len(crops.boxes))
    return open_job_store(job, crops, chunk, refit_changed, echo)


def plan_corpus(
    job: JobPlan, max_crops: int | None = None, max_crops_reason: str = "this machine's memory holds"
) -> CropPlan:
    """The job's crop plan (`plan_crops`, bounded by `max_crops`), refused when nothing in it can be fitted."""
    crops = plan_crops(
        job.images,
        job.crop,
        job.stride,
        job.crops_per_image,
        job.fit.seed,
        max_crops=max_crops,
        max_crops_reason=max_crops_reason,
    )
    refuse_unencodable(crops.sources)
    refuse_unusable_plan(crops, job.crop)
    return crops


def open_job_store(
    job: JobPlan, crops: CropPlan, batch: int, refit_changed: bool = False, echo: Callable[[str], None] = print
) -> PriorStore:
    """Create the job's store with chunks of `batch` crops, or reopen it after checking that it was made with the
    same settings and plan (a different `batch` included) and that its images did not change."""
    config = job.store_config(batch)
    if not store_exists(job.store_path):
        store = create_store_atomically(job.store_path, config, crops.sources, crops.boxes, crops.status, crops.reasons)
        record_files(store, crops.sources)
        return store
    store, _ = open_or_create(job.store_path, config, crops.sources, crops.boxes, crops.status, crops.reasons)
    check_store_before_resume(store, crops.sources, crops.boxes, crops.status, crops.reasons, refit_changed, echo=echo)
    return store


class NothingToFitError(ValueError):
    """A corpus none of whose crops can be fitted (unreadable files, images smaller than a crop)."""


def refuse_unusable_plan(plan, crop: int) -> None:
    """Refuse (one line naming the first files and why) a plan whose every entry failed at planning."""
    if not len(plan) or plan.num_failed < len(plan):
        return
    pairs = list(zip(plan.sources, plan.reasons))[:2]
    shown = "; ".join(reason if reason.startswith(source) else f"{source}: {reason}" for source, reason in pairs)
    more = f"; and {len(plan) - 2} more" if len(plan) > 2 else ""
    raise NothingToFitError(
        f"none of the {plan.num_images} image file(s) can be fitted ({shown}{more}); give readable images of at "
        f"least {crop}x{crop} px"
    )


def run_prior_job(
    images: Sequence[str | os.PathLike],
    store_path: str | os.PathLike,
    crop: int = 256,
    stride: int | None = None,
    crops_per_image: int | None = None,
    fit: FitConfig = FitConfig(),
    batch: int | str | None = None,
    cluster: ClusterSpec = ClusterSpec(),
    device: str = "auto",
    progress: bool = True,
    echo: Callable[[str], None] = print,
    client=None,
    refit_changed: bool = False,
    shard_size: int | None = None,
) -> JobSummary:
    """Fit every crop of the corpus into the store (resuming it if it exists) and summarise the run.

    `client` (a distributed.Client) overrides `cluster`: the job then runs on that client's cluster. One job
    per store at a time (`prior_store.lock`); a resumed store is verified and mended first. `batch` "auto" sizes
    the chunks of a new store to a worker's device (`batch_size.auto_batch`), measured on a worker. Every number
    is checked against what the machine holds (`dgp_fitting.job_limits`) before the store is created; a full disk
    ends the job with one line (`StoreDiskFullError`), the chunks written before it intact.
    """
    device = check_device(device)
    check_requested_batch(batch)
    check_fit_config(fit)
    check_grid(crop, stride)
    check_cluster_size(cluster)
    if _runs_here(cluster, client):
        _check_local_device(device)
    job = JobPlan(images, store_path, crop, stride, crops_per_image, fit, shard_size)
    with store_lock(store_path, "fit-prior"):
        check_writable(store_path)
        with disk_full_in_one_line(store_path):
            summary = _run_locked(job, batch, cluster, device, progress, echo, client, refit_changed)
    if summary.done == 0 and summary.pending == 0 and not summary.errors:
        raise NothingToFitError(
            f"no crop of store {store_path} could be fitted: all {summary.failed} failed "
            f"({_first_reason(store_path)}); `p2g info {store_path}` lists the reasons"
        )
    return summary


def check_fit_config(fit: FitConfig) -> None:
    """Refuse non-finite fitting numbers (NaN passes `lr <= 0`) and numbers past their bounds (zero steps
    included, `job_limits.check_fit_numbers`) before any store is touched."""
    for name, value in fit.as_dict().items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"fitting setting {name} must be a finite number, got {value!r}")
    check_fit_numbers(fit)


def check_cluster_size(cluster: ClusterSpec) -> None:
    """Refuse more worker processes than this process can hold connections to (its open-file limit)."""
    import resource

    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return
    processes = cluster.workers if cluster.kind == "local" else cluster.jobs * cluster.worker_processes
    for name, value in (("--jobs", cluster.jobs), ("--cores", cluster.cores), ("--gpus", cluster.gpus)):
        if value is not None and value > limit:
            raise ValueError(f"{name} {value} is over {limit}, the open files (connections) this process may hold")
    if processes > limit // 2:  # every worker holds connections to the scheduler, which runs in this process
        raise ValueError(
            f"{processes} worker processes would each hold connections to the scheduler in this process, whose "
            f"open-file limit is {limit}; ask for at most {limit // 2} (raise it with `ulimit -n`)"
        )


def _runs_here(cluster: ClusterSpec, client) -> bool:
    """Whether the workers are local processes of this machine (started by this job)."""
    return client is None and cluster.kind == "local" and not cluster.scheduler


def _check_local_device(device: str) -> None:
    """Refuse a CUDA device this machine does not have, naming what it has."""
    if device_kind(device) != "cuda":
        return
    if not torch.cuda.is_available():
        raise ValueError(
            f"--device {device}: this machine has no usable CUDA device (torch.cuda.is_available() is "
            "False); use --device cpu, or run on a cluster with GPU workers"
        )
    if ":" in device:
        cuda_index(device, torch.cuda.device_count())


@dataclass(frozen=True)
class Capacity:
    """Where a chunk is fitted: the device, its free bytes, and how many workers share it."""

    device: torch.device
    free: int
    sharing: int = 1


def _capacity_here(device: str, workers: int) -> Capacity:
    """This machine's capacity for local workers: CPU workers share its memory; GPU workers spread over its GPUs
    (all on one with cuda:N)."""
    dev = _worker_device(device)
    if dev.type == "cpu" or ":" in device:
        sharing = workers
    else:
        sharing = -(-workers // max(1, torch.cuda.device_count()))
    return Capacity(dev, free_memory(dev), sharing)


def _capacity_remote(device: str) -> tuple[str, int]:
    dev = _worker_device(device)
    return str(dev), free_memory(dev)


def _capacity_on_a_worker(client, device: str) -> Capacity:
    """The first worker's device and its free memory (not the client's)."""
    first = sorted(client.scheduler_info()["workers"])[0]
    name, free = client.run(_capacity_remote, device, workers=[first])[first]
    return Capacity(torch.device(name), int(free))


def _check_capacity(capacity: Capacity, crop: int, batch: int, store: str = "") -> None:
    check_crop(crop, capacity.device, capacity.free // capacity.sharing)
    check_batch(batch, crop, capacity.device, capacity.free, capacity.sharing, store)


def _check_local_workers(cluster: ClusterSpec, capacity: Capacity, crop: int, batch: int | None) -> None:
    """Local worker processes, each with its chunk in RAM when fitting on the CPU, must fit this machine."""
    per_worker = WORKER_PROCESS_BYTES + (fit_bytes(crop, batch) if batch and capacity.device.type == "cpu" else 0)
    ram = capacity.free if capacity.device.type == "cpu" else free_memory(torch.device("cpu"))
    check_local_workers(cluster.workers, ram, per_worker)


def _plan_bound(store_path, crop: int, reference_scale: int = 4, k: int = 2) -> tuple[int, str]:
    """The most crops a new store's plan may hold (this machine's memory, the store's disk), and why."""
    memory = free_memory(torch.device("cpu"))
    bound, reason = max_plan_crops(memory), f"this machine's memory holds ({memory_size(memory)} free)"
    disk = free_disk(store_path)
    if disk is not None and not store_exists(store_path):
        side = max(reference_scale, crop - crop % reference_scale)  # an estimate; the crop is checked when planned
        per_crop = store_bytes_per_crop(StoreConfig(crop_size=side, chunk_size=1, reference_scale=reference_scale, k=k))
        if disk // per_crop < bound:
            bound = max(1, disk // per_crop)
            reason = (
                f"the disk of store {store_path} holds ({memory_size(disk)} free, about {memory_size(per_crop)} "
                "per crop)"
            )
    return bound, reason


def _run_locked(
    job: JobPlan,
    batch: int | str | None,
    cluster: ClusterSpec,
    device: str,
    progress: bool,
    echo: Callable[[str], None],
    client,
    refit_changed: bool,
) -> JobSummary:
    """Resolve the chunk size once, check it against the device that fits the chunks, then create or reopen the
    store and run it.

    A chunk size asked or kept (an existing store's) is checked before the corpus is read and the store created:
    here for local workers, on a worker (after connecting) for any other cluster. `batch` "auto" on a new store is
    measured on a worker instead, after the crops are planned, since it is spread over them."""
    path, crop = job.store_path, job.crop
    new = not store_exists(path)
    here = _runs_here(cluster, client)
    max_crops, max_crops_reason = _plan_bound(path, crop, job.reference_scale, job.k)
    store_chunks = None if new else open_store(path).chunk_size
    auto = new and batch == "auto"
    on_a_worker = new and (auto or not here)  # checked or measured on a worker
    if on_a_worker and here:
        _check_local_workers(cluster, _capacity_here(device, cluster.workers), crop, None)
    context = (
        connect(cluster, device_kind(device)) if on_a_worker and client is None else contextlib.nullcontext(client)
    )
    with context as active:
        capacity: Capacity | None = None
        workers = 1
        if on_a_worker:
            capacity, workers = _capacity_of_the_workers(active, device, cluster, client)
        elif here:
            capacity = _capacity_here(device, cluster.workers)
        crops, measured = None, None
        if auto and capacity is not None:  # spread over the crops: planned first
            crops = plan_corpus(job, max_crops, max_crops_reason)
            measured = auto_batch(crop, capacity.device, capacity.free // capacity.sharing)
        chunk_size = resolve_batch(batch, store_chunks, measured, len(crops.boxes) if crops is not None else 0, workers)
        if capacity is not None and not auto:  # the chunks fitted are the store's own when it exists
            fitted = chunk_size if store_chunks is None else store_chunks
            _check_capacity(capacity, crop, fitted, "" if new else str(path))
            if not on_a_worker:
                _check_local_workers(cluster, capacity, crop, fitted)
        if crops is None:
            crops = plan_corpus(job, max_crops, max_crops_reason)
        store = open_job_store(job, crops, chunk_size, refit_changed, echo)
        if auto:
            echo(f"batch auto: {store.chunk_size} crops per chunk")
        return _run_job(store, path, crop, device, progress, echo, active, client, cluster)


def _capacity_of_the_workers(active, device: str, cluster: ClusterSpec, client) -> tuple[Capacity, int]:
    """Once a first worker has started: its capacity (shared as local workers share this machine) and the workers
    a new store's chunks are spread over (those started, or the local workers asked for)."""
    started = _wait_for_a_worker(active)
    if device_kind(device) == "cuda":
        _check_gpu_workers(active)
    capacity = _capacity_on_a_worker(active, device)
    if _runs_here(cluster, client):
        capacity = dataclasses.replace(capacity, sharing=_capacity_here(device, cluster.workers).sharing)
    return capacity, max(started, cluster.workers if client is None else 1)


#: How long `--batch auto` waits for a first worker to measure its device (batch jobs may queue).
AUTO_BATCH_WAIT_S = 600


def _wait_for_a_worker(client) -> int:
    try:
        client.wait_for_workers(1, timeout=AUTO_BATCH_WAIT_S)
    except TimeoutError as err:
        raise ValueError(
            f"no worker started within {AUTO_BATCH_WAIT_S} s to measure its device for the chunk size; "
            "check the cluster (queue, image), or give --batch N on a local run"
        ) from err
    return len(client.scheduler_info().get("workers", {}))


def _run_job(store, store_path, crop: int, device: str, progress: bool, echo, active, client, cluster) -> JobSummary:
    """Run the chunks that need work (connecting to `cluster` if `active` is None and there is work)."""
    status = store.status()
    boxes = np.asarray(store.read("crops/box"))
    todo = []
    left = 0
    for index in range(store.num_chunks):
        start, stop = store.chunk_bounds(index)
        needs = crops_needing_work(status[start:stop], boxes[start:stop], crop)
        if needs.any():
            todo.append(index)
            left += int(needs.sum())
    check_disk(store_path, store.config, left, free_disk(store_path))
    skipped = int((status == STATUS_DONE).sum())
    results: list[dict] = []
    errors: list[str] = []
    dashboard = None
    seconds = 0.0
    if todo:
        checked = active is not None or _runs_here(cluster, client)  # a resumed store on a cluster: check there
        context = contextlib.nullcontext(active) if active is not None else connect(cluster, device_kind(device))
        with context as active:
            if not checked:
                _wait_for_a_worker(active)
                if device_kind(device) == "cuda":
                    _check_gpu_workers(active)
                _check_capacity(_capacity_on_a_worker(active, device), crop, store.chunk_size, str(store_path))
            dashboard = getattr(active, "dashboard_link", None)
            if dashboard and client is None:
                echo(f"dashboard: {dashboard}" + ("" if _has_bokeh() else " (install bokeh to serve it)"))
            started = time.perf_counter()  # throughput excludes starting the cluster
            results, errors = _run_tasks(active, store, todo, device, progress)
            seconds = time.perf_counter() - started
    return _summarise(store_path, results, errors, skipped, len(todo), seconds, dashboard)


@contextlib.contextmanager
def disk_full_in_one_line(store_path):
    """Turn a full disk while the store is created, mended or recorded into one line (the writes before the job's
    tasks replace whole files and reset a crop's status first, so the store is as it was or says pending);
    a full disk in the tasks is reported by `_run_tasks` (`disk_full_error`)."""
    try:
        yield
    except StoreDiskFullError:
        raise
    except OSError as err:
        if not is_disk_full(err):
            raise
        free = free_disk(store_path)
        room = f" ({memory_size(free)} free)" if free is not None else ""
        if not store_exists(store_path):
            message = f"the disk of store {store_path} is full{room}: the store was not created; free space and rerun"
        else:
            message = (
                f"the disk of store {store_path} is full{room} before fitting began: no fitted crop was lost (crops "
                "being mended stay pending); free space and rerun the same command"
            )
        raise disk_full_error(message) from err


def disk_full_error(message: str) -> StoreDiskFullError:
    failure = StoreDiskFullError(message)
    failure.errno = errno.ENOSPC
    return failure


def _disk_full_message(store: PriorStore) -> str:
    """What a full disk during the tasks leaves: the chunks written before it (done) and what is left."""
    free = free_disk(store.path)
    room = f" ({memory_size(free)} free)" if free is not None else ""
    counts = open_store(store.path).status_counts()
    need = memory_size(store_bytes_per_crop(store.config) * counts["pending"])
    return (
        f"the disk of store {store.path} is full{room}: {counts['done']} crops are done and kept, "
        f"{counts['pending']} left to fit (about {need} more); free space and rerun the same command to fit the rest"
    )


def _first_reason(store_path) -> str:
    reasons = open_store(store_path).failure_reasons()
    if not reasons:
        return "no reason recorded"
    reason, count = max(reasons.items(), key=lambda item: item[1])
    return f"{count} x {reason}"


def _check_gpu_workers(client) -> None:
    """Tasks with --device cuda wait for a worker with a GPU resource: refuse at once if the cluster already
    has workers and none of them advertises one (batch-job workers that have not started yet are not checked)."""
    workers = client.scheduler_info().get("workers", {})
    if workers and not any(w.get("resources", {}).get("GPU") for w in workers.values()):
        raise ValueError(
            "--device cuda: no worker of this cluster advertises a GPU resource; start workers with "
            "`dask worker ... --resources GPU=1` (one per GPU), or use --device cpu"
        )


def _has_bokeh() -> bool:
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


#: How often a job whose tasks are all waiting checks that its SLURM worker jobs have not all ended (seconds).
WATCH_JOBS_EVERY_S = 5.0


class WorkerJobsEnded(ValueError):
    """Every batch job that ran the workers ended (walltime, scancel) with crops left: nothing more would run.
    A ValueError so that the CLI reports it in one line, as a condition for the user to act on."""


def _run_tasks(client, store, todo: list[int], device: str, progress: bool) -> tuple[list[dict], list[str]]:
    from tqdm import tqdm

    root = os.getcwd()
    store_path = str(Path(store.path).resolve()) if "://" not in store.path else store.path
    resources = {"GPU": 1} if device_kind(device) == "cuda" else None
    if resources:
        _check_gpu_workers(client)
    run = uuid.uuid4().hex[:8]  # task keys unique per run: a client may run several jobs
    shards: dict[int, list[int]] = {}  # one task per shard: its only writer
    for index in todo:
        shards.setdefault(store.shard_of_chunk(index), []).append(index)
    futures = [
        client.submit(
            fit_shard,
            store_path,
            shard,
            chunks,
            root,
            device,
            key=f"p2g-fit-shard-{shard}-{run}",
            pure=False,
            retries=TASK_RETRIES,
            resources=resources,
        )
        for shard, chunks in shards.items()
    ]
    results, errors = [], []
    bar = tqdm(
        total=sum(store.chunk_bounds(i)[1] - store.chunk_bounds(i)[0] for i in todo),
        unit="crop",
        desc="fit-prior",
        disable=not progress,
    )
    watch = BatchJobWatch(client)
    try:
        for future in _completed(client, futures, watch, store):
            if future.status == "error":
                if is_disk_full(future.exception()):
                    raise disk_full_error(_disk_full_message(store)) from future.exception()
                shard = list(shards)[futures.index(future)]
                errors.append(f"chunks {shards[shard]} (shard {shard}): {future.exception()!r}")
                continue
            for summary in future.result():
                if summary.get("no_space"):  # a full disk: no other chunk can be written either
                    raise disk_full_error(_disk_full_message(store))
                if "error" in summary:
                    errors.append(f"chunk {summary['chunk']}: {summary['error']}")
                    continue
                results.append(summary)
                bar.update(store.chunk_bounds(summary["chunk"])[1] - store.chunk_bounds(summary["chunk"])[0])
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()
    return results, errors


def _completed(client, futures: list, watch: BatchJobWatch, store: PriorStore):
    """The futures as they finish (in submission order among those finishing together); raises WorkerJobsEnded
    when the scheduler has no worker left and every SLURM job that could start one has ended."""
    from distributed import wait

    pending = list(futures)
    while pending:
        watch.remember_jobs()
        try:
            wait(pending, timeout=WATCH_JOBS_EVERY_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        finished = [future for future in pending if future.status != "pending"]
        pending = [future for future in pending if future.status == "pending"]
        yield from finished
        if pending and not finished and not client.scheduler_info().get("workers"):
            ended = watch.ended()
            if ended:
                raise WorkerJobsEnded(_jobs_ended_message(store, ended))


def _jobs_ended_message(store: PriorStore, ended: str) -> str:
    counts = open_store(store.path).status_counts()
    return (
        f"every worker job of the SLURM cluster has ended ({ended}) with {counts['pending']} crops left to fit; "
        f"the {counts['done']} crops done are kept: rerun the same command to fit the rest (with a longer "
        "--walltime if the jobs hit theirs)"
    )


def _summarise(store_path, results, errors, skipped, chunks_run, seconds, dashboard) -> JobSummary:
    store = open_store(store_path)
    counts = store.status_counts()
    psnr = store.psnr_summary()
    fitted = sum(r["fitted"] for r in results)
    return JobSummary(
        store=str(store_path),
        crops=store.num_crops,
        done=counts["done"],
        failed=counts["failed"],
        pending=counts["pending"],
        skipped=skipped,
        fitted=fitted,
        chunks_run=chunks_run,
        chunks_skipped=store.num_chunks - chunks_run,
        seconds=seconds,
        psnr_median=psnr.get("median"),
        psnr_p5=psnr.get("p5"),
        crops_per_second=fitted / seconds if seconds > 0 else 0.0,
        dashboard=dashboard,
        errors=errors,
    )
