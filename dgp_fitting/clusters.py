"""Where the prior job runs: a local cluster, an existing scheduler, SLURM/PBS (dask-jobqueue) or Kubernetes
(dask-kubernetes), chosen by flags or a YAML file, so the same job scales from a laptop to a cluster.

GPU workers advertise a ``GPU`` resource (one unit per worker process); the job asks for one unit per
task when it runs with ``--device cuda``, so a GPU is never shared by two tasks.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CLUSTER_KINDS = ("local", "slurm", "pbs", "kubernetes")


class ClusterConfigError(ValueError):
    """A cluster request that cannot be met (bad YAML, missing optional package, contradictory flags)."""


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster request. `workers` counts local worker processes; `jobs` counts batch jobs / pods."""

    kind: str = "local"
    scheduler: str | None = None  # address of an existing scheduler; overrides kind
    workers: int = 1
    cores: int | None = None  # per job / pod
    memory: str | None = None  # per job / pod, e.g. "16GB"
    gpus: int = 0  # per job / pod
    walltime: str | None = None  # e.g. "02:00:00"
    queue: str | None = None
    account: str | None = None
    jobs: int = 1
    image: str | None = None  # Kubernetes container image with pixel2gauss installed
    dashboard_address: str = ":8787"
    #: network interface the scheduler and the SLURM/PBS workers listen on (e.g. "ib0", or "lo" when every job
    #: runs on this host); None: the machine's outward address, what compute nodes reach from a login node
    interface: str | None = None
    #: passed unchanged to the cluster class (e.g. job_extra_directives, local_directory, namespace)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise ClusterConfigError(f"unknown cluster {self.kind!r}; choose one of {', '.join(CLUSTER_KINDS)}")
        for name in ("workers", "jobs"):
            if int(getattr(self, name)) < 1:
                raise ClusterConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.gpus < 0 or (self.cores is not None and self.cores < 1):
            raise ClusterConfigError("cores must be at least 1 and gpus at least 0")

    @property
    def worker_processes(self) -> int:
        """Worker processes per job: one per GPU on GPU jobs, else one per core (one thread each)."""
        return self.gpus if self.gpus else (self.cores or 1)


def load_cluster_config(path: str | Path) -> dict:
    """Read a YAML mapping of ClusterSpec fields (unknown keys are refused, so typos do not pass silently)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cluster config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ClusterConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ClusterConfigError(f"{path} must hold a mapping of cluster settings, not {type(data).__name__}")
    if "cluster" in data:
        data["kind"] = data.pop("cluster")
    known = {f.name for f in fields(ClusterSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ClusterConfigError(
            f"{path}: unknown cluster setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return data


def cluster_spec(config_file: str | Path | None = None, **flags: Any) -> ClusterSpec:
    """A spec from the YAML file (if any) overridden by the flags that were given (None means not given)."""
    values = load_cluster_config(config_file) if config_file else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    return ClusterSpec(**values)


def _require(module: str, what: str):
    # dask-jobqueue's runner module replaces the Ctrl-C handler at import time with one that exits with
    # status 0 and no message; keep ours, so an interrupted job still says so and exits 130.
    ctrl_c_handler = signal.getsignal(signal.SIGINT)
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise ClusterConfigError(
            f"--cluster {what} needs the {module.replace('_', '-')} package: pip install 'pixel2gauss[cluster]'"
        ) from None
    finally:
        if ctrl_c_handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, ctrl_c_handler)


def jobqueue_cluster(spec: ClusterSpec):
    """A dask-jobqueue SLURMCluster/PBSCluster for the spec (no jobs submitted until it is scaled)."""
    jobqueue = _require("dask_jobqueue", spec.kind)
    if spec.cores is None or spec.memory is None:
        raise ClusterConfigError(f"--cluster {spec.kind} needs --cores and --memory (per job), by flag or YAML")
    check_worker_memory(spec)
    kwargs: dict[str, Any] = {
        "cores": spec.cores,
        "processes": spec.worker_processes,
        "memory": spec.memory,
        "walltime": spec.walltime,
        "queue": spec.queue,
        "account": spec.account,
        "job_name": "p2g-fit-prior",
        "scheduler_options": {"dashboard_address": spec.dashboard_address},
        "interface": spec.interface,  # dask-jobqueue uses it for the scheduler and the workers
    }
    extra = dict(spec.extra)
    directives = list(extra.pop("job_extra_directives", []))
    worker_args = list(extra.pop("worker_extra_args", []))
    if spec.gpus:
        worker_args += ["--resources", "GPU=1"]  # per worker process: one process per GPU
        if spec.kind == "slurm":
            directives.append(f"--gres=gpu:{spec.gpus}")
        else:
            kwargs["resource_spec"] = extra.pop(
                "resource_spec", f"select=1:ncpus={spec.cores}:ngpus={spec.gpus}:mem={spec.memory}"
            )
    kwargs.update(job_extra_directives=directives, worker_extra_args=worker_args, **extra)
    cls = jobqueue.SLURMCluster if spec.kind == "slurm" else jobqueue.PBSCluster
    return cls(**{k: v for k, v in kwargs.items() if v is not None})


#: what one fitting worker process needs: torch and the fitting code take ~0.8 GiB resident before any crop, and
#: Dask pauses a worker at 80 % of its limit (a paused worker never finishes, and nothing says why)
MIN_WORKER_MEMORY = 3 * 2**29  # 1.5 GiB


def check_worker_memory(spec: ClusterSpec) -> None:
    """Refuse a per-job memory that leaves a worker process less than MIN_WORKER_MEMORY."""
    from dask.utils import parse_bytes

    try:
        per_worker = parse_bytes(spec.memory) / spec.worker_processes
    except (ValueError, TypeError):
        raise ClusterConfigError(f"--memory {spec.memory!r} is not a size; use e.g. 16GB") from None
    if per_worker < MIN_WORKER_MEMORY:
        raise ClusterConfigError(
            f"--memory {spec.memory} gives each of the job's {spec.worker_processes} worker process(es) "
            f"{per_worker / 2**30:.2f} GiB; each needs at least {MIN_WORKER_MEMORY / 2**30:.1f} GiB (torch alone "
            "takes ~0.8 GiB): raise --memory or lower --cores"
        )


def slurm_memory(memory: str) -> str:
    """`--mem` for a memory size as dask-jobqueue writes it (whole GiB, rounded up): "32GB" -> "30G", so one YAML
    asks SLURM for the same memory in fit-prior's jobs and in `p2g train --print-job-script`."""
    from dask.utils import parse_bytes

    return _require("dask_jobqueue", "slurm").slurm.slurm_format_bytes_ceil(parse_bytes(memory))


def job_script(spec: ClusterSpec) -> str:
    """The batch script dask-jobqueue would submit for one job (no scheduler system needed to make it)."""
    cluster = jobqueue_cluster(spec)
    try:
        return cluster.job_script()
    finally:
        cluster.close()


#: SLURM states of a job that may still run a worker (squeue's long names); any other state, or no longer listed,
#: means the job has ended (TIMEOUT at its walltime, CANCELLED, FAILED, NODE_FAIL, COMPLETING ...)
SLURM_LIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED"}
)


class BatchJobWatch:
    """Tells when every worker job of a SLURM cluster has ended, so a job waiting for workers that will never come
    can say so instead of waiting forever. Job IDs are remembered as they appear (the cluster may drop a job that
    ended); the queue is asked only while the scheduler has no worker. Other clusters: never ended (unknown)."""

    def __init__(self, client: Any) -> None:
        self.cluster = getattr(client, "cluster", None)
        self.enabled = type(self.cluster).__name__ == "SLURMCluster"
        self.job_ids: list[str] = []

    def remember_jobs(self) -> None:
        if not self.enabled:
            return
        for job in list(getattr(self.cluster, "workers", {}).values()):
            job_id = getattr(job, "job_id", None)
            if job_id and str(job_id) not in self.job_ids:
                self.job_ids.append(str(job_id))

    def ended(self) -> str | None:
        """ "job 17 TIMEOUT, job 18 CANCELLED" once every job seen has ended; None while one may still run a worker,
        before any job was seen, or when the queue cannot be read."""
        self.remember_jobs()
        if not self.job_ids:
            return None
        try:
            listed = subprocess.run(
                ["squeue", "--me", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return None  # a slow or failing controller is not evidence that the jobs ended
        states = dict(line.split()[:2] for line in listed.splitlines() if len(line.split()) >= 2)
        if any(states.get(job_id) in SLURM_LIVE_STATES for job_id in self.job_ids):
            return None
        return ", ".join(f"job {job_id} {_slurm_final_state(job_id)}" for job_id in self.job_ids)


def _slurm_final_state(job_id: str) -> str:
    """TIMEOUT, CANCELLED ... as the controller still remembers it (for MinJobAge, 300 s by default), else "ended"."""
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "ended"
    match = re.search(r"\bJobState=(\S+)", shown)
    return match.group(1) if match else "ended"


def kubernetes_cluster(spec: ClusterSpec):
    """A dask-kubernetes operator KubeCluster with `jobs` worker pods of `cores`/`memory`/`gpus` each."""
    _require("dask_kubernetes", "kubernetes")
    from dask_kubernetes.operator import KubeCluster

    if not spec.image:
        raise ClusterConfigError("--cluster kubernetes needs an image with pixel2gauss installed (YAML key 'image')")
    limits: dict[str, str] = {}
    if spec.cores:
        limits["cpu"] = str(spec.cores)
    if spec.memory:
        limits["memory"] = spec.memory
    if spec.gpus:
        limits["nvidia.com/gpu"] = str(spec.gpus)
    command = f"dask worker --nworkers {spec.worker_processes} --nthreads 1"
    if spec.gpus:
        command += " --resources GPU=1"
    extra = dict(spec.extra)
    return KubeCluster(
        name=extra.pop("name", "p2g-fit-prior"),
        image=spec.image,
        n_workers=spec.jobs,
        resources={"requests": dict(limits), "limits": limits} if limits else None,
        worker_command=command,
        **extra,
    )


@contextlib.contextmanager
def connect(spec: ClusterSpec, device: str = "cpu") -> Iterator[Any]:
    """A distributed Client for the spec; local clusters and batch jobs are closed on exit."""
    from distributed import Client, LocalCluster

    if spec.scheduler:
        with Client(spec.scheduler) as client:
            yield client
        return
    if spec.kind == "local":
        resources = {"GPU": 1} if device == "cuda" else None
        options = {"silence_logs": logging.ERROR, **spec.extra}  # no shutdown chatter; errors still show
        cluster = None
        try:
            with sigint_ignored_by_children():
                cluster = LocalCluster(
                    n_workers=spec.workers,
                    threads_per_worker=1,
                    processes=True,
                    resources=resources,
                    dashboard_address=spec.dashboard_address,
                    **options,
                )
        except BaseException:
            if cluster is not None:
                cluster.close()
            raise
        with cluster, Client(cluster) as client:
            from dgp_fitting.quiet_workers import QuietLocalHeartbeats

            client.register_plugin(QuietLocalHeartbeats())
            yield client
        return
    if spec.kind in ("slurm", "pbs"):
        cluster = jobqueue_cluster(spec)
        cluster.scale(jobs=spec.jobs)
    else:
        cluster = kubernetes_cluster(spec)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def sigint_ignored_by_children() -> Iterator[None]:
    """Start local workers with SIGINT ignored (an ignored disposition survives exec; a blocked mask does not),
    so Ctrl-C at the terminal reaches only the client, which stops the job once instead of every worker
    printing a traceback. The price: a Ctrl-C during the seconds the workers start is not seen."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def local_gpu_index(worker_name: Any, device_count: int) -> int:
    """Which local GPU a worker process uses: its process index on the node (LocalCluster names workers 0, 1,
    ...; dask-jobqueue and `dask worker --nworkers` name them <job>-0, <job>-1, ...), modulo the GPUs seen."""
    if device_count <= 0:
        return 0
    match = re.search(r"(\d+)$", str(worker_name))
    return int(match.group(1)) % device_count if match else 0


__all__ = [
    "CLUSTER_KINDS",
    "BatchJobWatch",
    "ClusterConfigError",
    "ClusterSpec",
    "cluster_spec",
    "connect",
    "job_script",
    "jobqueue_cluster",
    "kubernetes_cluster",
    "load_cluster_config",
    "local_gpu_index",
    "slurm_memory",
]
