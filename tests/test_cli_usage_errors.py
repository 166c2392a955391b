"""click's own refusals are one `error:` line (exit 2) that points to --help; `p2g view` exits 143 on SIGTERM;
Python warnings are one `warning:` line each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gaussian_field import save_field
from tests.cli_checks import one_error_line
from tests.test_training import folders, train_cli_args  # noqa: F401  (fixture)
from tests.viewer_fields import field, lr  # noqa: F401  (fixtures)
from workflows import cli as cli_module
from workflows import view_cmd
from workflows.cli import cli
from workflows.viewer.server import ViewerServer

REPO = Path(__file__).parents[1]


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["train", "--out", "run", "--images", ".", "--lr", "nan"],
            "error: Invalid value for '--lr': 'nan' is not a finite number (p2g train --help)",
        ),
        (
            ["fit-prior", "photos", "--store", "s.zarr", "--batch", "0"],
            "error: Invalid value for '--batch': needs at least 1 crop, got 0 (p2g fit-prior --help)",
        ),
        (
            ["render", "f.npz", "--out", "o", "--scale", "0"],
            "error: Invalid value for '--scale': scale '0' must be one positive number or two (HxW) "
            "(p2g render --help)",
        ),
        (
            ["train", "--out", "run", "--preset", "tiny"],
            "error: Invalid value for '--preset': 'tiny' is not one of 'swinir', 'hat', 'lite' (p2g train --help)",
        ),
        (["train", "--images", "."], "error: Missing option '--out' (p2g train --help)"),
        (["view"], "error: Missing argument 'IMAGE|FIELD.npz' (p2g view --help)"),
        (["info", "s.zarr", "--colour"], "error: No such option '--colour' (p2g info --help)"),
        (["upscal"], "error: No such command 'upscal' (p2g --help)"),
        (["--bogus", "info"], "error: No such option '--bogus' (p2g --help)"),
        # a verb's own click.UsageError, raised without a context
        (["train", "--out", "run"], "error: give training images with --images DIR (p2g train --help)"),
    ],
)
def test_click_refusals_are_one_line_that_points_to_help(args, line, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert one_error_line(result) == line
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_help_is_still_shown_where_asked_for():
    runner = CliRunner()
    verb = runner.invoke(cli, ["train", "--help"])
    assert verb.exit_code == 0 and verb.output.startswith("Usage: p2g train [OPTIONS]")
    alone = runner.invoke(cli, [])  # `p2g` alone shows the verbs, as click does
    assert "Commands:" in alone.output and "train" in alone.output


def test_view_exits_143_on_sigterm_and_0_on_ctrl_c(tmp_path, field, monkeypatch):
    save_field(field, tmp_path / "f.npz")
    monkeypatch.setattr(view_cmd.webbrowser, "open", lambda url: None)
    monkeypatch.setattr(ViewerServer, "serve_forever", lambda self: cli_module._terminate(15, None))
    terminated = CliRunner().invoke(cli, ["view", str(tmp_path / "f.npz"), "--port", "0", "--no-browser"])
    assert terminated.exit_code == 143, terminated.output
    assert terminated.output.splitlines()[-1] == "terminated: viewer stopped"

    def ctrl_c(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(ViewerServer, "serve_forever", ctrl_c)
    stopped = CliRunner().invoke(cli, ["view", str(tmp_path / "f.npz"), "--port", "0", "--no-browser"])
    assert stopped.exit_code == 0 and stopped.output.splitlines()[-1] == "viewer stopped", stopped.output


def test_warnings_are_one_line_each_without_source(folders):
    broken = folders["train"] / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    args = train_cli_args(folders, folders["root"] / "run", 1, "--val-scales", "2")
    done = subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: skipping unreadable image {broken}: "), done.stderr
