"""DDP through torchrun and through SLURM's srun: a 2-process gloo run on CPU equals one process that averages the
two ranks' gradients."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from gaussian_field.image_io import write_image
from sr_model.data.datasets import ScaleBatchSampler, SRTrainDataset
from sr_model.networks.covariance_dictionary import official_kernels
from sr_model.networks.model import build_model
from sr_model.training.distributed import first_host, launcher_environment
from sr_model.training.loop import Upscaler
from sr_model.training.losses import reconstruction_loss
from sr_model.training.state import TrainConfig, learning_rate

TINY = dict(lite_channels=8, lite_blocks=1, cov_dim=16, cov_hidden=(16,), color_hidden=(16,), offset_hidden=(16,))
TINY_CLI = [
    arg
    for key, value in TINY.items()
    for arg in ("--model-option", f"{key}={list(value) if isinstance(value, tuple) else value}")
]
REPO = Path(__file__).resolve().parents[1]


def _emulate(config: TrainConfig, world: int) -> dict[str, torch.Tensor]:
    """What DDP computes, in one process: per step, the mean of the gradients of batches t*world + r."""
    dataset = SRTrainDataset(config.images, config.patch, (config.scale_min, config.scale_max))
    batches = ScaleBatchSampler(dataset, config.batch, config.seed)
    torch.manual_seed(config.seed)
    model = build_model(config.model_config(), config.prior)
    net, optimizer = Upscaler(model, amp=False), torch.optim.Adam(model.parameters(), lr=config.lr)
    for step in range(config.steps):
        grads = None
        for rank in range(world):
            data = default_collate([dataset[key] for key in batches.batch(step * world + rank)])
            model.zero_grad()
            reconstruction_loss(net(data["lr"], data["hr"].shape[-2:]), data["hr"])["loss"].backward()
            mine = [p.grad.clone() for p in model.parameters()]
            grads = mine if grads is None else [g + m for g, m in zip(grads, mine)]
        for param, grad in zip(model.parameters(), grads):
            param.grad = grad / world
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        optimizer.step()
    return model.state_dict()


def _train_args(tmp_path: Path, photo) -> list[str]:
    """`p2g train` arguments of a 3-step run on three photo crops (the files written into tmp_path)."""
    images = tmp_path / "train"
    images.mkdir()
    for name, top, left in (("astronaut", 30, 180), ("coffee", 100, 250), ("rocket", 200, 300)):
        write_image(images / f"{name}.png", photo(name, top, left, size=40))
    write_image(tmp_path / "val.png", photo("chelsea", 60, 140, size=32))
    kernels = official_kernels()[:-1].reshape(9, 9, 9, 3)[::4, ::4, ::4].reshape(-1, 3)
    np.save(tmp_path / "dictionary.npy", kernels.numpy())
    return [
        "-m", "workflows.cli", "train", "--prior", str(tmp_path / "dictionary.npy"), "--images", str(images),
        "--out", str(tmp_path / "run"), "--steps", "3", "--batch", "2", "--patch", "8", "--scales", "2-4",
        "--lr", "1e-3", "--val-images", str(tmp_path / "val.png"), "--val-every", "2", "--device", "cpu", *TINY_CLI,
    ]  # fmt: skip


def _check_two_rank_run(done: subprocess.CompletedProcess, run: Path) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained: 3 steps") == 1, done.stdout  # rank 0 alone reports
    saved = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 3 and (run / "best.pt").exists()
    config = TrainConfig.from_dict(saved["train_config"])
    expected = _emulate(config, world=2)
    for key, value in saved["state_dict"].items():
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-6, msg=key)
    # the comparison tells worlds apart: one rank's batches alone give other weights
    alone = _emulate(config, world=1)
    assert any(not torch.allclose(v, alone[k], rtol=1e-4, atol=1e-6) for k, v in saved["state_dict"].items())


@pytest.mark.torchrun
def test_two_process_gloo_run_matches_averaged_gradients(tmp_path, photo):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += _train_args(tmp_path, photo)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    _check_two_rank_run(done, tmp_path / "run")


@pytest.mark.slurm
@pytest.mark.torchrun
def test_srun_two_tasks_match_averaged_gradients(slurm_cluster, tmp_path, photo):
    """SLURM's rank variables instead of torchrun's: the same weights as the torchrun run of the same seed."""
    command = [
        "srun",
        "--ntasks",
        "2",
        "--cpus-per-task",
        "1",
        "--mem",
        "4G",
        sys.executable,
        *_train_args(tmp_path, photo),
    ]
    env = {**slurm_cluster.env, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    _check_two_rank_run(done, tmp_path / "run")


def test_srun_variables_become_torchrun_variables():
    step = {"SLURM_STEP_NUM_TASKS": "4", "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "123456",
            "SLURM_STEP_NODELIST": "nodeA"}  # fmt: skip
    assert launcher_environment(step) == {
        "WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "nodeA", "MASTER_PORT": str(20000 + 3456),
    }  # fmt: skip
    assert launcher_environment({**step, "WORLD_SIZE": "4"}) == {}  # torchrun inside an allocation wins
    batch_script = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": "7"}
    assert launcher_environment(batch_script) == {}  # not an srun step: a world of one
    assert first_host("gpu[07-09,12],cpu1") == "gpu07" and first_host("node12") == "node12"


def test_a_plain_process_is_a_world_of_one(monkeypatch):
    from sr_model.training.distributed import setup

    for variable in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(variable, raising=False)
    runtime = setup("cpu")
    assert runtime.world_size == 1 and runtime.is_main and not runtime.distributed
    assert not torch.distributed.is_initialized()
    with pytest.raises(ValueError, match="unknown device"):
        setup("tpu9")


@pytest.mark.slurm
@pytest.mark.torchrun
def test_the_printed_job_script_trains_two_ranks_under_sbatch(slurm_cluster, tmp_path, photo):
    config = tmp_path / "cluster.yaml"
    config.write_text("cluster: slurm\njobs: 1\nworkers: 2\ncores: 2\nmemory: 4GB\nwalltime: '00:10:00'\n")
    args = _train_args(tmp_path, photo)
    printed = subprocess.run(
        [sys.executable, *args, "--print-job-script", "--cluster-config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    script = printed.stdout
    assert "#SBATCH --nodes=1\n#SBATCH --ntasks-per-node=2\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=4G\n" in script
    assert "#SBATCH --time=00:10:00" in script and "--print-job-script" not in script and "cluster.yaml" not in script
    (tmp_path / "train.sh").write_text(script)
    log = tmp_path / "train.log"
    slurm_cluster.run(
        "sbatch", "--wait", "--chdir", str(REPO), "--output", str(log), str(tmp_path / "train.sh"), timeout=240
    )
    done = subprocess.CompletedProcess([], 0, log.read_text(), "")
    _check_two_rank_run(done, tmp_path / "run")


def test_cluster_config_without_the_script_flag_is_refused_and_neither_lands_in_config_yaml(tmp_path, photo):
    from click.testing import CliRunner

    from workflows.cli import cli

    args = _train_args(tmp_path, photo)[2:]  # after "-m workflows.cli"
    refused = CliRunner().invoke(cli, [*args, "--cluster-config", str(tmp_path / "c.yaml")])
    assert refused.exit_code == 2 and "--cluster-config is for --print-job-script" in refused.output
    done = CliRunner().invoke(cli, [*args[: -len(TINY_CLI)], *TINY_CLI, "--steps", "1", "--val-every", "1"])
    assert done.exit_code == 0, done.output
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert "print-job-script" not in config and "cluster-config" not in config
