"""The prior job on a real SLURM: the store it fills equals the local run's, a worker job cancelled mid-run loses
nothing, and prior-stats computes on a scheduler whose workers are SLURM jobs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from prior_store import open_store
from tests.test_store_integrity import assert_same_store

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
PLAN = ["--crop", "32", "--crops-per-image", "3", "--batch", "2", "--preset", "demo", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, photo) -> Path:
    from gaussian_field.image_io import write_image

    folder = tmp_path_factory.mktemp("photos")
    for name, top, left in (("astronaut", 30, 180), ("coffee", 100, 250), ("rocket", 200, 300), ("chelsea", 60, 140)):
        write_image(folder / f"{name}.png", photo(name, top, left, size=72))
    return folder


@pytest.fixture(scope="module")
def local_store(corpus, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("local") / "prior.zarr"
    done = p2g("fit-prior", str(corpus), "--store", str(store), *PLAN, "--workers", "2")
    assert done.returncode == 0, done.stderr
    return store


def p2g(*args: str, env: dict | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def cluster_yaml(folder: Path, jobs: int, **more: str) -> Path:
    path = folder / "cluster.yaml"
    lines = [
        f"cluster: slurm\njobs: {jobs}\ncores: 1\nmemory: 2GB\ninterface: lo",
        f"extra: {{log_directory: {folder}}}",
    ]
    path.write_text("\n".join(lines + [f"{key}: {value}" for key, value in more.items()]) + "\n")
    return path


def test_a_store_filled_by_two_slurm_jobs_equals_the_local_one(slurm_cluster, corpus, local_store, tmp_path):
    store = tmp_path / "prior.zarr"
    done = p2g(
        "fit-prior", str(corpus), "--store", str(store), *PLAN, "--cluster-config", str(cluster_yaml(tmp_path, 2)),
        env=slurm_cluster.env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "12 crops: 12 done, 0 failed, 0 pending" in done.stdout, done.stdout
    assert "dashboard: http://127.0.0.1:" in done.stdout and "install bokeh" not in done.stdout
    assert_same_store(store, local_store)
    logs = sorted(tmp_path.glob("p2g-fit-prior-*.err"))
    assert len(logs) == 2, logs  # two batch jobs ran the workers


def test_a_worker_job_cancelled_mid_run_loses_nothing(slurm_cluster, corpus, local_store, tmp_path):
    store = tmp_path / "prior.zarr"
    config = cluster_yaml(tmp_path, 2)
    args = ["fit-prior", str(corpus), "--store", str(store), *PLAN, "--cluster-config", str(config)]
    job = _fit_until_some_done(slurm_cluster, args, jobs=2)
    try:
        victim = slurm_cluster.jobs()[0]
        slurm_cluster.run("scancel", victim, check=False)  # no retry: a second scancel of the job would fail
        _, err = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err  # the other job's worker finished the lost tasks
    again = p2g(*args, env=slurm_cluster.env)
    assert again.returncode == 0, again.stderr
    assert "12 crops: 12 done, 0 failed, 0 pending" in again.stdout
    assert_same_store(store, local_store)


def _some_done(store: Path) -> bool:
    try:
        return bool((open_store(store).read("crops/status") != 0).any())
    except Exception:  # not created yet, or mid-write
        return False


def test_prior_stats_computes_on_a_scheduler_whose_workers_are_slurm_jobs(
    slurm_cluster, local_store, tmp_path, monkeypatch
):
    from distributed import Client

    from dgp_fitting.clusters import ClusterSpec, jobqueue_cluster

    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    spec = ClusterSpec(
        kind="slurm", jobs=1, cores=1, memory="2GB", interface="lo", extra={"log_directory": str(tmp_path)}
    )
    with jobqueue_cluster(spec) as cluster:
        cluster.scale(jobs=1)
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=120)
            assert slurm_cluster.jobs(), "the worker runs in a SLURM job"
            remote = p2g("prior-stats", "--store", str(local_store), "--out", str(tmp_path / "remote"),
                         "--scheduler", cluster.scheduler_address)  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    here = p2g("prior-stats", "--store", str(local_store), "--out", str(tmp_path / "here"))
    assert here.returncode == 0, here.stderr
    written = sorted(p.name for p in (tmp_path / "here").iterdir() if p.suffix in (".npy", ".json"))
    assert "dictionary.npy" in written
    for name in written:
        if name.endswith(".npy"):
            assert (tmp_path / "remote" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name


def _fit_until_some_done(slurm_cluster, args: list[str], jobs: int) -> subprocess.Popen:
    """fit-prior started in the background, returned once its `jobs` worker jobs run and some crops are done."""
    job = subprocess.Popen(
        [sys.executable, "-m", "workflows.cli", *args], cwd=REPO, env=slurm_cluster.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    store = Path(args[args.index("--store") + 1])
    while len(slurm_cluster.run("squeue", "-h", "-t", "R", "-o", "%i").split()) < jobs or not _some_done(store):
        if job.poll() is not None or time.monotonic() > deadline:
            job.kill()
            raise AssertionError(job.communicate())
        time.sleep(0.2)
    return job


def _error_lines(err: str) -> list[str]:
    """The error lines of stderr (a busy dashboard port adds a warning line, which is not the report)."""
    return [line for line in err.splitlines() if not line.startswith("warning:")]


def _resume_locally_and_compare(args: list[str], store: Path, local_store: Path) -> None:
    """The rerun resumes the same store (here with local workers: the store does not depend on where it ran)."""
    plan = args[: args.index("--cluster-config")]
    again = p2g(*plan, "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert "12 crops: 12 done, 0 failed, 0 pending" in again.stdout, again.stdout
    assert_same_store(store, local_store)


def test_every_worker_job_ended_is_reported_in_one_line_and_the_rerun_resumes(
    slurm_cluster, corpus, local_store, tmp_path
):
    store = tmp_path / "prior.zarr"
    args = ["fit-prior", str(corpus), "--store", str(store), *PLAN, "--cluster-config", str(cluster_yaml(tmp_path, 1))]
    job = _fit_until_some_done(slurm_cluster, args, jobs=1)
    try:
        (victim,) = slurm_cluster.jobs()
        slurm_cluster.run("scancel", victim, check=False)
        _, err = job.communicate(timeout=120)  # before the watch, this waited for a worker forever
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 2, err
    (line,) = _error_lines(err)
    assert line.startswith("error: every worker job of the SLURM cluster has ended"), err
    assert f"job {victim} CANCELLED" in line and "rerun the same command" in line, err
    _resume_locally_and_compare(args, store, local_store)


@pytest.mark.slow  # a real walltime: SLURM kills a job only after a whole minute of its run time, ~90 s here
def test_a_worker_job_that_hits_its_walltime_is_reported_and_the_rerun_resumes(
    slurm_cluster, corpus, local_store, tmp_path
):
    store = tmp_path / "prior.zarr"
    slow_plan = [*PLAN, "--steps", "6000"]  # 60x the demo preset's steps: the fit outlasts a one-minute walltime
    config = cluster_yaml(tmp_path, 1, walltime="'00:01:00'")
    args = ["fit-prior", str(corpus), "--store", str(store), *slow_plan, "--cluster-config", str(config)]
    job = _fit_until_some_done(slurm_cluster, args, jobs=1)
    try:
        _, err = job.communicate(timeout=240)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 2, err
    (line,) = _error_lines(err)
    assert "has ended (job " in line and " TIMEOUT) with " in line, err
    counts = open_store(store).status_counts()
    assert counts["done"] > 0 and counts["pending"] > 0, counts
    plan = args[: args.index("--cluster-config")]
    again = p2g(*plan, "--workers", "2", timeout=600)
    assert again.returncode == 0, again.stderr
    assert "12 crops: 12 done, 0 failed, 0 pending" in again.stdout, again.stdout
    assert open_store(store).status_counts()["done"] == 12
