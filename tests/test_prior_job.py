"""The Dask job on a real 2-worker LocalCluster: fills the store, batch/worker independence, and the faults a
long job meets (a worker killed mid-task, the client interrupted and rerun, broken files in the corpus)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from dgp_fitting.fitting import FitConfig
from dgp_fitting.job_plan import JobPlan
from dgp_fitting.prior_job import chunk_needs_work, fit_chunk, prepare_store, run_prior_job
from prior_store import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, open_store

#: Small and quick: 32 px crops, so 8x8 lattices.
CROP = 32
FIT = FitConfig(steps=100)  # ~1.5 s of CPU per 2-crop task (6 such crops took 4.4 s): time to hit one mid-task
PHOTOS = (("astronaut", 10, 180), ("coffee", 100, 250), ("chelsea", 40, 120))
COMPARED = (
    "field/means",
    "field/chol",
    "field/colors",
    "crops/psnr",
    "crops/status",
    "crops/iterations",
    "crops/content_hash",
    "crops/source",
    "crops/box",
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo) -> Path:
    """Three 64x64 photo crops = 12 crops of 32 px."""
    folder = tmp_path_factory.mktemp("corpus")
    for name, top, left in PHOTOS:
        pixels = (photo(name, top, left, 64) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus, client) -> Path:
    """A fault-free run with batch 4 (3 chunks) on both workers."""
    path = tmp_path_factory.mktemp("ref") / "prior.zarr"
    summary = run_prior_job([corpus], path, crop=CROP, fit=FIT, batch=4, client=client, progress=False)
    assert (summary.done, summary.failed, summary.pending, summary.fitted) == (12, 0, 0, 12)
    return path


def assert_same_crops(path_a: Path, path_b: Path) -> None:
    a, b = open_store(path_a), open_store(path_b)
    for name in COMPARED:
        va, vb = a.read(name), b.read(name)
        if isinstance(va, list):
            assert va == vb, name
        else:
            np.testing.assert_array_equal(va, vb, err_msg=name)


def test_job_fills_the_store_and_records_content(reference, corpus):
    store = open_store(reference)
    assert store.status_counts() == {"pending": 0, "done": 12, "failed": 0}
    assert store.num_chunks == 3 and store.chunk_size == 4
    psnr = store.read("crops/psnr")
    assert np.isfinite(psnr).all() and (psnr > 25).all()
    assert (store.read("crops/iterations") == FIT.steps).all()
    hashes = store.read("crops/content_hash")
    for source, digest in zip(store.read("crops/source"), hashes):
        assert digest == hashlib.sha256(Path(source).read_bytes()).hexdigest()
    assert store.config.fitting == FIT.as_dict()
    chol = store.read("field/chol")
    assert (chol[..., 0] > 0).all() and (chol[..., 2] > 0).all()


def test_results_do_not_depend_on_batch_or_worker(reference, corpus, client, tmp_path):
    path = tmp_path / "prior.zarr"
    summary = run_prior_job([corpus], path, crop=CROP, fit=FIT, batch=5, client=client, progress=False)
    assert summary.chunks_run == 3 and summary.done == 12
    assert_same_crops(reference, path)


def test_auto_batch_sizes_chunks_on_a_worker_and_changes_no_result(reference, corpus, client, tmp_path):
    """--batch auto on CPU workers: 256 crops of 32 px by the pixel budget, spread so both workers get a chunk
    (12 crops -> 6 per chunk); every crop equals the batch-4 reference; a rerun keeps the store's chunk size."""
    path = tmp_path / "prior.zarr"
    lines = []
    summary = run_prior_job(
        [corpus], path, crop=CROP, fit=FIT, batch="auto", client=client, progress=False, echo=lines.append
    )
    assert open_store(path).chunk_size == 6 and summary.chunks_run == 2 and summary.done == 12
    assert lines == ["batch auto: 6 crops per chunk"]
    assert_same_crops(reference, path)
    again = run_prior_job([corpus], path, crop=CROP, fit=FIT, batch="auto", client=client, progress=False)
    assert (again.chunks_run, again.skipped) == (0, 12)
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        run_prior_job([corpus], tmp_path / "other.zarr", crop=CROP, fit=FIT, batch="many", client=client)


def test_rerunning_a_finished_job_fits_nothing(reference, corpus, client):
    before = {p: p.stat().st_mtime_ns for p in Path(reference).rglob("*") if p.is_file()}
    summary = run_prior_job([corpus], reference, crop=CROP, fit=FIT, client=client, progress=False)
    assert (summary.chunks_run, summary.fitted, summary.skipped, summary.done) == (0, 0, 12, 12)
    assert {p: p.stat().st_mtime_ns for p in Path(reference).rglob("*") if p.is_file()} == before


def _worker_pids(client) -> dict[str, int]:
    return client.run(os.getpid)


def _executing(dask_worker) -> int:
    return len(dask_worker.state.executing)


def test_killing_a_worker_mid_task_loses_nothing(reference, corpus, client, tmp_path):
    """A store of 3 shards of 2 chunks: the killed worker's shard task is rerun elsewhere, keeping the chunks
    it had written, and the result is the reference's bit for bit."""
    path = tmp_path / "prior.zarr"
    outcome: dict = {}

    def job():
        try:
            outcome["summary"] = run_prior_job(
                [corpus], path, crop=CROP, fit=FIT, batch=2, client=client, progress=False, shard_size=4
            )
        except BaseException as err:  # reported below
            outcome["error"] = err

    pids = _worker_pids(client)
    thread = threading.Thread(target=job)
    thread.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        busy = client.run(_executing)
        victim = next((addr for addr, n in busy.items() if n > 0), None)
        if victim is None:
            time.sleep(0.02)
    assert victim is not None, "no task was seen running"
    os.kill(pids[victim], signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    summary = outcome["summary"]
    assert (summary.done, summary.failed, summary.pending) == (12, 0, 0)
    assert summary.fitted == 12 and summary.chunks_run == 6 and not summary.errors  # no chunk counted twice
    assert victim not in _worker_pids(client)  # the victim is really gone (its nanny started a new one)
    client.wait_for_workers(2, timeout=120)
    store = open_store(path)
    assert (store.num_shards, store.shard_size, store.num_chunks) == (3, 4, 6)
    assert_same_crops(reference, path)
    files = {p: p.stat().st_mtime_ns for p in Path(path).rglob("*") if p.is_file() and p.name != "zarr.json"}
    assert len(files) <= 10 * 3  # at most one file per array per shard (all-empty ones, e.g. reasons, are not written)
    for shard in range(3):
        assert {f"field/chol/c/{shard}/0/0", f"crops/status/c/{shard}"} <= {str(p.relative_to(path)) for p in files}
    again = run_prior_job([corpus], path, crop=CROP, fit=FIT, client=client, progress=False)
    assert (again.chunks_run, again.fitted, again.skipped) == (0, 0, 12)
    assert {p: p.stat().st_mtime_ns for p in files} == files


def _chunk_files(store: Path, index: int) -> list[Path]:
    """Files of chunk `index` of every array (zarr v3 keys: <array>/c/<index>[/0/0])."""
    out = []
    for p in store.rglob("*"):
        parts = p.relative_to(store).parts
        if p.is_file() and "c" in parts and parts[parts.index("c") + 1] == str(index):
            out.append(p)
    return out


def test_interrupted_client_resumes_only_unfinished_chunks(reference, corpus, client, tmp_path):
    path = tmp_path / "prior.zarr"
    cmd = [
        sys.executable,
        "-m",
        "workflows.cli",
        "fit-prior",
        str(corpus),
        "--store",
        str(path),
        "--crop",
        str(CROP),
        "--steps",
        str(FIT.steps),
        "--batch",
        "2",
        "--workers",
        "1",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    deadline = time.monotonic() + 180
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if (path / "zarr.json").exists():
            try:
                status = zarr.open_group(str(path), mode="r")["crops/status"][:]
                done = int((status == STATUS_DONE).sum())
            except Exception:  # the store is being created
                done = 0
            if done >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, f"the job ended before it could be interrupted: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "rerun the same command to fit only the rest" in err

    store = open_store(path)
    status = store.status()
    done_before = int((status == STATUS_DONE).sum())
    assert 2 <= done_before < 12 and (status != STATUS_FAILED).all()
    finished_chunks = [i for i in range(store.num_chunks) if (status[2 * i : 2 * i + 2] == STATUS_DONE).all()]
    chunk_files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for i in finished_chunks for p in _chunk_files(path, i)}
    arrays = {p.relative_to(path).parts[:2] for p in chunk_files}
    assert {("field", "means"), ("field", "chol"), ("field", "colors"), ("crops", "status")} <= arrays

    summary = run_prior_job([corpus], path, crop=CROP, fit=FIT, client=client, progress=False)
    assert summary.skipped == done_before
    assert summary.chunks_run == store.num_chunks - len(finished_chunks)
    assert summary.fitted == 12 - 2 * len(finished_chunks)
    assert (summary.done, summary.pending) == (12, 0)
    for p, (mtime, data) in chunk_files.items():  # finished chunks were not touched
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    assert_same_crops(reference, path)


def test_broken_files_are_recorded_as_failed_and_good_ones_fitted(tmp_path, photo, client):
    import cv2

    folder = tmp_path / "corpus"
    folder.mkdir()
    good = (photo("coffee", 100, 200, 48) * 255).round().astype(np.uint8)
    Image.fromarray(good).save(folder / "truncated.jpg", quality=95)
    data = (folder / "truncated.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("this is a text file, renamed .png\n")
    Image.fromarray(good[:16, :16]).save(folder / "small.png")
    gray16 = (photo("astronaut", 0, 100, 48).mean(-1) * 65535).round().astype(np.uint16)
    cv2.imwrite(str(folder / "gray16.png"), gray16)

    summary = run_prior_job(
        [folder], tmp_path / "prior.zarr", crop=CROP, fit=FitConfig(steps=10), batch=2, client=client, progress=False
    )
    store = open_store(tmp_path / "prior.zarr")
    rows = {}
    for source, code, reason, psnr in zip(
        store.read("crops/source"), store.status(), store.read("crops/reason"), store.read("crops/psnr")
    ):
        rows[Path(source).name] = (code, reason, psnr)
    assert rows["gray16.png"][0] == STATUS_DONE and rows["gray16.png"][2] > 20  # 10 steps only
    assert rows["truncated.jpg"][0] == STATUS_FAILED and "truncated" in rows["truncated.jpg"][1]
    assert rows["text.png"][0] == STATUS_FAILED and "not a recognised image" in rows["text.png"][1]
    assert rows["small.png"][0] == STATUS_FAILED and "smaller than the 32 px crop" in rows["small.png"][1]
    assert (summary.done, summary.failed, summary.pending) == (1, 3, 0)
    # a rerun retries only the crop that failed while fitting (the truncated JPEG), not the planning failures
    again = run_prior_job(
        [folder], tmp_path / "prior.zarr", crop=CROP, fit=FitConfig(steps=10), client=client, progress=False
    )
    assert (again.chunks_run, again.fitted, again.failed) == (1, 1, 3)


def test_fit_chunk_without_a_cluster_keeps_done_crops(reference, corpus, tmp_path):
    """The task function itself: refits only what is not done, leaves done crops byte-identical."""
    path = tmp_path / "prior.zarr"
    store = prepare_store(JobPlan([corpus], path, crop=CROP, fit=FIT), batch=4)
    ref = open_store(reference)
    values = ref.read_chunk(
        0,
        [
            "field/means",
            "field/chol",
            "field/colors",
            "crops/content_hash",
            "crops/reason",
            "crops/psnr",
            "crops/iterations",
            "crops/status",
        ],
    )
    values["crops/status"] = np.array([STATUS_DONE, STATUS_PENDING, STATUS_DONE, STATUS_PENDING], np.int8)
    values["field/colors"][0] += 1.0  # a marker: a refit of crop 0 would overwrite it
    store.write_chunk(0, values)
    summary = fit_chunk(str(path), 0, root=os.getcwd(), device="cpu")
    assert (summary["fitted"], summary["done"]) == (2, 2)
    back = open_store(path).read_chunk(0)
    np.testing.assert_array_equal(back["field/colors"][0], values["field/colors"][0])
    np.testing.assert_array_equal(back["field/means"][1], ref.read("field/means", 1, 2)[0])
    assert (back["crops/status"] == STATUS_DONE).all()


def test_cuda_without_gpu_workers_is_refused(corpus, client, tmp_path):
    with pytest.raises(ValueError, match="no worker of this cluster advertises a GPU resource"):
        run_prior_job(
            [corpus], tmp_path / "prior.zarr", crop=CROP, fit=FIT, client=client, device="cuda", progress=False
        )
    assert not (tmp_path / "prior.zarr").exists()  # refused before the store is created


def test_chunk_needs_work():
    full, small = [0, 0, 32, 32], [0, 0, 16, 16]
    assert chunk_needs_work(np.array([1, 0]), np.array([full, full]), 32)
    assert not chunk_needs_work(np.array([1, 1]), np.array([full, full]), 32)
    assert chunk_needs_work(np.array([1, 2]), np.array([full, full]), 32)  # failed while fitting: retried
    assert not chunk_needs_work(np.array([1, 2]), np.array([full, small]), 32)  # failed at planning: final


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_job_on_cuda_workers_asks_for_the_gpu_resource(corpus, tmp_path):
    from dgp_fitting.clusters import ClusterSpec

    summary = run_prior_job(
        [corpus],
        tmp_path / "prior.zarr",
        crop=CROP,
        fit=FIT,
        batch=4,
        cluster=ClusterSpec(workers=1, dashboard_address=":0"),
        device="cuda",
        progress=False,
    )
    assert (summary.done, summary.failed, summary.errors) == (12, 0, [])
    assert summary.psnr_median > 25


def test_fit_shard_refuses_chunks_of_another_shard(tmp_path):
    from dgp_fitting import prior_job
    from prior_store import StoreConfig, create_store

    config = StoreConfig(crop_size=CROP, chunk_size=2, shard_size=6, fitting=FIT.as_dict())
    create_store(
        tmp_path / "p.zarr", config, [f"img{i}.png" for i in range(12)], np.array([[0, 0, CROP, CROP]] * 12, np.int32)
    )
    with pytest.raises(ValueError, match=r"chunks \[2\] are not in shard 1"):
        prior_job.fit_shard(str(tmp_path / "p.zarr"), 1, [2, 3])


def test_fit_shard_writes_what_fit_chunk_writes(corpus, tmp_path):
    """The overlapped stages (next chunk decoded, previous one written while one fits) change no byte."""
    from dgp_fitting.prior_job import fit_shard

    inline, piped = tmp_path / "inline.zarr", tmp_path / "piped.zarr"
    for path in (inline, piped):
        prepare_store(JobPlan([corpus], path, crop=CROP, fit=FitConfig(steps=20), shard_size=12), batch=2)
    for index in range(6):
        fit_chunk(str(inline), index, root=os.getcwd(), device="cpu")
    summaries = fit_shard(str(piped), 0, list(range(6)), root=os.getcwd(), device="cpu", threads_for_decoding=3)
    assert [s["chunk"] for s in summaries] == list(range(6))
    assert all({"load_seconds", "fit_seconds", "write_seconds"} <= set(s) for s in summaries)
    assert open_store(piped).status_counts() == {"pending": 0, "done": 12, "failed": 0}
    assert_same_crops(inline, piped)
