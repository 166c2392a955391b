"""The CLI's shell: lazy verbs (help and version import no heavy package), --device auto everywhere, --debug.

Start-up *time* is measured by benchmarks/cli_startup.py, not here; these tests check what makes it fast.
"""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from workflows import cli as cli_module
from workflows.cli import VERBS, cli, load_verb
from workflows.options import resolve_device

HEAVY = ("torch", "numpy", "dask", "zarr", "PIL", "cv2", "spandrel", "scipy", "yaml", "numba")


def test_every_verb_is_one_table_entry_that_loads_its_command():
    assert sorted(cli.list_commands(click.Context(cli))) == sorted(VERBS)
    for name in VERBS:
        command = load_verb(name)
        assert isinstance(command, click.Command) and command.name == name


def test_help_and_version_import_no_heavy_package():
    """One fresh interpreter runs --version, --help and every VERB --help, then lists the heavy modules loaded."""
    code = f"""
import json, sys
from click.testing import CliRunner
from workflows.cli import VERBS, cli
runs = [["--version"], ["--help"]] + [[verb, "--help"] for verb in VERBS]
codes = [CliRunner().invoke(cli, args).exit_code for args in runs]
heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["codes"] == [0] * (len(VERBS) + 2)
    assert report["heavy"] == []


def test_version_is_the_package_version():
    import gaussian_field

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"p2g, version {gaussian_field.__version__}"


def test_choices_repeated_in_verbs_match_the_library():
    from dgp_fitting import dictionary_sampling
    from dgp_fitting.fitting import FIT_PRESETS
    from gaussian_field import backend_table, speed
    from workflows import bench_cmd, fit_prior_cmd, options, prior_stats_cmd

    assert tuple(sorted(FIT_PRESETS)) == fit_prior_cmd.FIT_PRESET_NAMES
    assert (prior_stats_cmd.METHODS, prior_stats_cmd.SPACINGS, prior_stats_cmd.DEFAULT_SIZE) == (
        dictionary_sampling.METHODS,
        dictionary_sampling.SPACINGS,
        dictionary_sampling.DEFAULT_SIZE,
    )
    assert bench_cmd.DEFAULT_SCALES == speed.DEFAULT_SCALES
    assert options.BACKEND_NAMES == backend_table.BACKEND_NAMES


def test_device_defaults_to_auto_in_every_verb():
    with_device = []
    for name in VERBS:
        params = {p.name: p for p in load_verb(name).params}
        if "device" in params:
            with_device.append(name)
            assert params["device"].default == "auto", name
    assert {"upscale", "eval", "train", "fit-prior", "bench"} <= set(with_device)


def test_auto_device_is_a_gpu_only_when_there_is_one(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_prints_the_traceback_instead_of_one_line(tmp_path, how):
    args = ["render", str(tmp_path / "missing.npz"), "--scale", "2", "--out", str(tmp_path / "out")]
    plain = CliRunner().invoke(cli, args, env={cli_module.DEBUG_ENV: ""})
    assert plain.exit_code == 2
    assert plain.output.count("\n") == 1 and plain.output.startswith("error: ") and "missing.npz" in plain.output
    if how == "flag":
        debug = CliRunner().invoke(cli, ["--debug", *args], env={cli_module.DEBUG_ENV: ""})
    else:
        debug = CliRunner().invoke(cli, args, env={cli_module.DEBUG_ENV: "1"})
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.output and "missing.npz" in debug.output
    assert "load_field" in debug.output  # the library frame that raised, not just the message


def test_error_line_is_the_one_place_that_words_user_errors():
    assert cli_module.error_line(ValueError("bad --scale\nmore detail")) == "error: bad --scale"
    assert cli_module.error_line(FileNotFoundError("no such file")) == "error: no such file"
    assert cli_module.error_line(RuntimeError("a bug")) == (
        "error: internal error (RuntimeError: a bug); rerun with --debug (or P2G_DEBUG=1) for the traceback, and "
        "report it"
    )


def test_a_lite_model_upscales_without_importing_spandrel(tmp_path):
    """spandrel (SwinIR/HAT) costs ~1.5 s and ~170 MiB to import; only models with those encoders pay it."""
    code = f"""
import json, sys
import numpy as np
import torch
from click.testing import CliRunner
from gaussian_field.image_io import write_image
from sr_model.networks.model import build_model
from sr_model.networks.presets import preset
from workflows.cli import cli
write_image({str(tmp_path / "tiny.png")!r}, np.full((8, 8, 3), 0.5, np.float32))
result = CliRunner().invoke(cli, ["upscale", {str(tmp_path / "tiny.png")!r}, "--scale", "2", "--out",
                                  {str(tmp_path / "out")!r}, "--device", "cpu"])
after_lite = "spandrel" in sys.modules
build_model(preset("swinir", embed_dim=12, depths=(1,), num_heads=(2,), window_size=4), "official")
print(json.dumps([result.exit_code, after_lite, "spandrel" in sys.modules]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.splitlines()[-1]) == [0, False, True]
