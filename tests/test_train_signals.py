"""`p2g train` stopped by a signal in a real process (tests/train_gate.py pauses it at the point under test): at
start-up nothing is saved and the line says so; mid-step and during validation the step is finished, last.pt is
saved, config.yaml kept, exit 143 (SIGTERM) or 130 (Ctrl-C), and `--resume` ends at the uninterrupted run's weights.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tests.test_training import folders, train_cli_args  # noqa: F401  (fixture)
from workflows.cli import cli

REPO = Path(__file__).parents[1]
WORDS = {signal.SIGTERM: ("terminated", 143), signal.SIGINT: ("interrupted", 130)}


def four_steps(folders, run: Path) -> list[str]:
    """`p2g train` of the tiny model for 4 steps, validated at steps 2 and 4 (one scale, to keep it fast)."""
    return train_cli_args(folders, run, 4, "--val-scales", "2")


def run_gated(point: str, gate: Path, args: list[str], signum: int) -> tuple[int, str, str]:
    """Run `p2g ARGS` paused at `point`, send `signum` there, let it go on; (exit code, stdout, stderr)."""
    gate.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.train_gate", point, str(gate), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (gate / "reached").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached the gate"
            time.sleep(0.02)
        proc.send_signal(signum)
        (gate / "go").touch()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()  # no-op once it has exited
    return proc.returncode, out, err


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_at_start_up_saves_nothing_says_so_and_leaves_nothing(folders, signum):
    run = folders["root"] / "run"
    args = four_steps(folders, run)
    code, out, err = run_gated("start-up", folders["root"] / "gate", args, signum)
    word, expected = WORDS[signum]
    assert code == expected, err
    assert err.splitlines() == [
        f"{word}: no checkpoint was saved (stopped before the first one) and {run} was removed; start the run again"
    ]
    assert out == "" and not run.exists()  # the folder was made for this run, so it goes with its config.yaml
    again = CliRunner().invoke(cli, args)  # what the line says to do works
    assert again.exit_code == 0 and "trained: 4 steps" in again.output, again.output


@pytest.mark.parametrize("point, saved_step", [("step:3", 3), ("validation", 2)])
def test_sigterm_mid_step_or_in_validation_saves_last_pt_and_resumes_bit_for_bit(folders, point, saved_step):
    run = folders["root"] / "run"
    code, out, err = run_gated(point, folders["root"] / "gate", four_steps(folders, run), signal.SIGTERM)
    assert code == 143, err
    assert err.splitlines() == [
        f"terminated: {run / 'last.pt'} holds step {saved_step}; rerun with --resume to continue"
    ]
    assert out.startswith(f"trained: stopped at step {saved_step} (resume with --resume)"), out
    assert _load(run / "last.pt")["step"] == saved_step and (run / "config.yaml").is_file()
    assert _load(run / "best.pt")["step"] == 2  # the validation at step 2 was finished (and saved) in both cases

    runner = CliRunner()
    resumed = runner.invoke(cli, ["train", "--out", str(run), "--resume", "--device", "cpu"])
    assert resumed.exit_code == 0 and "trained: 4 steps" in resumed.output, resumed.output
    whole = runner.invoke(cli, four_steps(folders, folders["root"] / "whole"))
    assert whole.exit_code == 0, whole.output
    a, b = _load(folders["root"] / "whole" / "last.pt"), _load(run / "last.pt")
    assert a["step"] == b["step"] == 4 and a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    moments = [
        (s["exp_avg_sq"], t["exp_avg_sq"])
        for s, t in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values())
    ]
    assert moments and all(torch.equal(x, y) for x, y in moments)
    assert _load(run / "best.pt")["best"] == _load(folders["root"] / "whole" / "best.pt")["best"]


def test_a_second_ctrl_c_before_the_first_checkpoint_says_so_and_a_new_start_logs_only_its_own_steps(
    folders, monkeypatch
):
    """The second Ctrl-C interrupts step 2 at once (before the checkpoint at step 2); step 1 was logged."""
    from sr_model.training import loop as training

    run, step, calls = folders["root"] / "run", training._train_step, []

    def second_ctrl_c_in_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(*args, **kwargs)

    args = [*four_steps(folders, run), "--log-every", "1"]
    with monkeypatch.context() as patch:
        patch.setattr(training, "_train_step", second_ctrl_c_in_step_2)
        stopped = CliRunner().invoke(cli, args)
    assert stopped.exit_code == 130
    assert stopped.output.splitlines() == [
        f"interrupted: no checkpoint was saved (stopped before the first one) and {run / 'config.yaml'} was "
        "removed; start the run again"
    ]
    assert not (run / "last.pt").exists() and not (run / "config.yaml").exists()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 2, 3, 4, 4]  # losses of steps 1-4 and validations at 2 and 4, once each
