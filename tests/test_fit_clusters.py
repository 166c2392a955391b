"""Cluster configuration: flags and YAML, the SLURM/PBS job scripts dask-jobqueue would submit, clear errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from dgp_fitting.clusters import (
    ClusterConfigError,
    ClusterSpec,
    cluster_spec,
    job_script,
    kubernetes_cluster,
    local_gpu_index,
)
from workflows.cli import cli

pytest.importorskip("dask_jobqueue")


def test_slurm_job_script_holds_cores_memory_gpus_and_walltime():
    script = job_script(
        ClusterSpec(kind="slurm", cores=8, memory="32GiB", gpus=2, walltime="02:00:00", queue="gpu", account="proj")
    )
    lines = script.splitlines()
    assert "#SBATCH --cpus-per-task=8" in lines
    assert "#SBATCH --mem=32G" in lines
    assert "#SBATCH --gres=gpu:2" in lines
    assert "#SBATCH -t 02:00:00" in lines
    assert "#SBATCH -p gpu" in lines and "#SBATCH -A proj" in lines
    worker = lines[-1]
    # one worker process per GPU, each advertising one GPU unit for the tasks that ask for it
    assert "--nworkers 2" in worker and "--resources GPU=1" in worker


def test_cpu_jobs_run_one_single_threaded_worker_per_core():
    script = job_script(ClusterSpec(kind="slurm", cores=4, memory="8GiB", walltime="00:30:00"))
    assert "--gres" not in script and "GPU" not in script
    assert "--nworkers 4" in script and "--nthreads 1" in script


def test_pbs_job_script_asks_for_gpus():
    script = job_script(ClusterSpec(kind="pbs", cores=8, memory="32GB", gpus=1, walltime="01:00:00", queue="q"))
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=32GB" in script
    assert "#PBS -l walltime=01:00:00" in script and "#PBS -q q" in script
    assert "--resources GPU=1" in script


def test_yaml_config_with_flag_overrides(tmp_path):
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "cluster: slurm\ncores: 16\nmemory: 64GiB\ngpus: 1\nwalltime: '04:00:00'\njobs: 10\n"
        "extra:\n  job_extra_directives: ['--constraint=a100']\n"
    )
    spec = cluster_spec(config, cores=None, walltime="01:00:00")
    assert (spec.kind, spec.cores, spec.memory, spec.gpus, spec.walltime, spec.jobs) == (
        "slurm",
        16,
        "64GiB",
        1,
        "01:00:00",
        10,
    )
    script = job_script(spec)
    assert "#SBATCH --constraint=a100" in script and "#SBATCH -t 01:00:00" in script
    assert "#SBATCH --gres=gpu:1" in script

    config.write_text("cluster: slurm\ncors: 16\n")
    with pytest.raises(ClusterConfigError, match="unknown cluster setting.*cors"):
        cluster_spec(config)
    config.write_text("- just\n- a list\n")
    with pytest.raises(ClusterConfigError, match="mapping"):
        cluster_spec(config)
    with pytest.raises(FileNotFoundError):
        cluster_spec(tmp_path / "missing.yaml")


def test_bad_cluster_requests_are_clear():
    with pytest.raises(ClusterConfigError, match="unknown cluster 'lsf'"):
        ClusterSpec(kind="lsf")
    with pytest.raises(ClusterConfigError, match="needs --cores and --memory"):
        job_script(ClusterSpec(kind="slurm"))
    with pytest.raises(ClusterConfigError, match="workers must be at least 1"):
        ClusterSpec(workers=0)
    try:
        import dask_kubernetes  # noqa: F401
    except ImportError:
        with pytest.raises(ClusterConfigError, match=r"pip install 'pixel2gauss\[cluster\]'"):
            kubernetes_cluster(ClusterSpec(kind="kubernetes", image="x"))


def test_gpu_index_of_a_worker():
    assert local_gpu_index(0, 2) == 0 and local_gpu_index(3, 2) == 1
    assert local_gpu_index("SLURMCluster-4-1", 4) == 1
    assert local_gpu_index("worker", 4) == 0 and local_gpu_index(5, 0) == 0


def test_cli_prints_the_job_script_and_rejects_bad_combinations():
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "fit-prior",
            "photos",
            "--store",
            "s.zarr",
            "--cluster",
            "slurm",
            "--cores",
            "8",
            "--memory",
            "32GiB",
            "--gpus",
            "1",
            "--walltime",
            "02:00:00",
            "--print-job-script",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "#SBATCH --gres=gpu:1" in result.output and "#SBATCH -t 02:00:00" in result.output
    result = runner.invoke(cli, ["fit-prior", "photos", "--store", "s.zarr", "--print-job-script"])
    assert result.exit_code == 2 and "error: --print-job-script needs --cluster slurm or pbs" in result.output


def test_building_a_jobqueue_cluster_keeps_the_ctrl_c_handler():
    # in a fresh interpreter: dask-jobqueue replaces the handler only on its first import
    import subprocess
    import sys

    code = (
        "import signal\n"
        "from dgp_fitting.clusters import ClusterSpec, job_script\n"
        "job_script(ClusterSpec(kind='slurm', cores=4, memory='8GB'))\n"
        "assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, signal.getsignal(signal.SIGINT)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_job_memory_too_small_for_its_workers_is_refused_in_one_line():
    with pytest.raises(
        ClusterConfigError, match=r"--memory 1GB gives each of the job's 1 worker process\(es\) 0.93 GiB"
    ):
        job_script(ClusterSpec(kind="slurm", cores=1, memory="1GB"))
    with pytest.raises(ClusterConfigError, match="4 worker process"):
        job_script(ClusterSpec(kind="pbs", cores=4, memory="5GB"))
    with pytest.raises(ClusterConfigError, match="is not a size"):
        job_script(ClusterSpec(kind="slurm", cores=1, memory="lots"))


def test_the_train_job_script_asks_for_the_memory_that_fit_prior_jobs_ask_for():
    from workflows.train_job import train_job_script

    spec = ClusterSpec(kind="slurm", cores=8, memory="32GB")
    fit_prior = [line for line in job_script(spec).splitlines() if line.startswith("#SBATCH --mem")]
    train = [line for line in train_job_script(spec, ["p2g", "train"]).splitlines() if line.startswith("#SBATCH --mem")]
    assert fit_prior == train == ["#SBATCH --mem=30G"]


def test_local_workers_do_not_log_heartbeat_failures():
    """A local cluster's workers drop "failed to communicate with scheduler during heartbeat" (the scheduler is the
    client's own, closing: a worker busy fitting logged two tracebacks after Ctrl-C's one line); others still log."""
    import logging

    from dgp_fitting.clusters import connect
    from dgp_fitting.quiet_workers import HEARTBEAT_FAILURE, not_a_heartbeat_failure

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, message, None, None)

    assert not not_a_heartbeat_failure(record(HEARTBEAT_FAILURE + "."))
    assert not_a_heartbeat_failure(record("Compute Failed"))

    def worker_filters() -> list[str]:
        return [getattr(f, "__name__", "") for f in logging.getLogger("distributed.worker").filters]

    with connect(ClusterSpec(kind="local", workers=1, dashboard_address=None)) as client:
        assert [names for names in client.run(worker_filters).values()] == [["not_a_heartbeat_failure"]]
