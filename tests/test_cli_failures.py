"""Every failure is one `error:` line (exit 2; 130/143 for interrupts; 1 for a bug), with the traceback only under
--debug or P2G_DEBUG=1: NaN options, non-UTF-8 file names, oversized image headers, truncated field files, bad
devices, read-only stores, and the checks that must come before a store is created."""

from __future__ import annotations

import os
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dgp_fitting.fitting import FitConfig
from dgp_fitting.job_plan import JobPlan
from dgp_fitting.prior_job import check_fit_config
from gaussian_field.image_io import ImageReadError, read_image, write_image
from tests.cli_checks import one_error_line
from workflows import cli as cli_module
from workflows.cli import cli

#: A file name whose bytes are not UTF-8 (Latin-1 "é"), as os.listdir returns it: a surrogate escape.
LATIN1_NAME = os.fsdecode(b"caf\xe9.png")


def small_corpus(folder: Path, photo) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((photo("coffee", 100, 250, 32) * 255).round().astype(np.uint8)).save(folder / "coffee.png")
    return folder


@pytest.mark.parametrize("option, value", [("--lr", "nan"), ("--lr", "inf"), ("--color-lr", "-inf"), ("--lr", "0")])
def test_fit_prior_refuses_non_finite_rates_before_creating_a_store(tmp_path, photo, option, value):
    corpus = small_corpus(tmp_path / "photos", photo)
    result = CliRunner().invoke(
        cli, ["fit-prior", str(corpus), "--store", str(tmp_path / "s.zarr"), "--crop", "32", option, value]
    )
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    assert ("is not a finite number" in result.output) or ("must be greater than 0" in result.output)
    assert not (tmp_path / "s.zarr").exists()


def test_library_refuses_non_finite_fitting_settings():
    with pytest.raises(ValueError, match="fitting setting lr must be a finite number, got nan"):
        check_fit_config(FitConfig(lr=float("nan")))
    check_fit_config(FitConfig())


@pytest.mark.parametrize(
    "args",
    [
        ["prior-stats", "--store", "s.zarr", "--out", "o", "--min-psnr", "nan"],
        ["prior-stats", "--store", "s.zarr", "--out", "o", "--quantiles", "nan,99"],
        ["train", "--out", "run", "--images", ".", "--lr", "inf"],
        ["train", "--out", "run", "--images", ".", "--grad-clip", "nan"],
        ["bench", "--scale", "nan"],
    ],
)
def test_other_verbs_refuse_non_finite_numbers(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and ("finite" in result.output or "expected two percentages" in result.output)
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_fit_prior_device_check_comes_before_the_store(tmp_path, photo, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    corpus = small_corpus(tmp_path / "photos", photo)
    result = CliRunner().invoke(
        cli, ["fit-prior", str(corpus), "--store", str(tmp_path / "s.zarr"), "--crop", "32", "--device", "cuda"]
    )
    assert one_error_line(result).startswith("error: --device cuda: this machine has no usable CUDA device")
    assert not (tmp_path / "s.zarr").exists()


def test_fit_prior_refuses_a_non_utf8_name_without_leaving_a_store(tmp_path, photo):
    corpus = small_corpus(tmp_path / "photos", photo)
    (corpus / LATIN1_NAME).write_bytes((corpus / "coffee.png").read_bytes())
    store = tmp_path / "s.zarr"
    result = CliRunner().invoke(cli, ["fit-prior", str(corpus), "--store", str(store), "--crop", "32"])
    line = one_error_line(result)
    assert "1 image file name(s) are not valid UTF-8" in line and r"caf\udce9.png" in line and "rename" in line
    assert sorted(os.listdir(tmp_path)) == ["photos"]  # no store, no half-created folder, no lock file


def test_interrupted_creation_leaves_nothing_at_the_store_path(tmp_path, photo, monkeypatch):
    from dgp_fitting import prior_job
    from prior_store import creation

    corpus = small_corpus(tmp_path / "photos", photo)
    real = creation.create_store

    def interrupted(path, *args, **kwargs):
        real(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(creation, "create_store", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prior_job.prepare_store(JobPlan([corpus], tmp_path / "s.zarr", crop=32, fit=FitConfig(steps=1)))
    assert sorted(os.listdir(tmp_path)) == ["photos"]
    monkeypatch.setattr(creation, "create_store", real)
    store = prior_job.prepare_store(JobPlan([corpus], tmp_path / "s.zarr", crop=32, fit=FitConfig(steps=1)))
    assert store.num_crops == 1


def test_images_with_non_utf8_names_are_read_and_written(tmp_path, photo):
    pixels = photo("astronaut", 0, 0, 24)
    for bits, name in ((8, LATIN1_NAME), (16, LATIN1_NAME), (16, os.fsdecode(b"r\xf6cket.tif"))):
        path = tmp_path / name
        write_image(path, pixels, bits=bits)
        peak = 255 if bits == 8 else 65535
        assert np.array_equal(np.round(read_image(path) * peak), np.round(np.clip(pixels, 0, 1) * peak))
        path.unlink()


def test_large_output_writer_takes_non_utf8_names(tmp_path):
    from gaussian_field.image_io import FORMATS, encode_pixels  # what the band writer encodes with

    pixels = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    target = tmp_path / LATIN1_NAME
    encode_pixels(pixels, target, FORMATS[".png"])
    assert np.array_equal(np.asarray(Image.open(target))[..., ::-1], pixels)  # written as BGR, like OpenCV


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid small PNG whose header claims width x height pixels (the data stays tiny)."""
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data[12:29]  # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_decompression_bomb_headers_are_one_line(tmp_path, photo, monkeypatch):
    from dgp_fitting.crop_plan import plan_crops
    from gaussian_field.image_io import probe_image

    bomb = bomb_png(tmp_path / "photos" / "huge.png") if (tmp_path / "photos").mkdir() is None else None
    with pytest.raises(ImageReadError, match="header claims too many pixels to decode safely.*P2G_MAX_IMAGE_PIXELS"):
        read_image(bomb)
    with pytest.raises(ImageReadError, match="too many pixels"):
        probe_image(bomb)
    small_corpus(tmp_path / "photos", photo)
    plan = plan_crops([tmp_path / "photos"], 32)
    reasons = dict(zip(plan.sources, plan.reasons))
    assert "too many pixels" in reasons[str(bomb)] and reasons[str(tmp_path / "photos" / "coffee.png")] == ""
    monkeypatch.setenv("P2G_MAX_IMAGE_PIXELS", "none")
    assert probe_image(bomb).size == (20000, 20000)  # allowed on request (the header is all that is read)


def test_render_refuses_a_truncated_field_file(tmp_path):
    from gaussian_field import save_field
    from gaussian_field.initial import field_from_image

    path = tmp_path / "f.npz"
    save_field(field_from_image(torch.rand(1, 3, 6, 6)), path)
    path.write_bytes(path.read_bytes()[:200])
    result = CliRunner().invoke(cli, ["render", str(path), "--scale", "2", "--out", str(tmp_path / "o")])
    assert one_error_line(result).startswith(f"error: {path} is not a readable field file")


def test_eval_checks_the_device_first(tmp_path, photo):
    image = small_corpus(tmp_path / "photos", photo) / "coffee.png"
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", "bicubic", "--images", str(image), "--device", "bogus"])
    assert one_error_line(result) == "error: 'bogus' is not a device; use cpu, cuda or cuda:N"


def test_read_only_store_is_refused_before_any_fitting(tmp_path, photo, monkeypatch):
    from dgp_fitting import prior_job
    from prior_store import lock

    corpus = small_corpus(tmp_path / "photos", photo)
    prior_job.prepare_store(JobPlan([corpus], tmp_path / "s.zarr", crop=32, fit=FitConfig(steps=1)))
    real_open = open

    def read_only(path, *args, **kwargs):  # the fault: the store refuses new files, as on a read-only mount
        if ".p2g-write-probe" in str(path):
            raise OSError(30, "Read-only file system")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(lock, "open", read_only, raising=False)
    monkeypatch.setattr(prior_job, "connect", lambda *a, **k: pytest.fail("no cluster may start"))
    for args in (
        ["fit-prior", str(corpus), "--store", str(tmp_path / "s.zarr"), "--crop", "32", "--steps", "1"],
        ["prior-stats", "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "o")],
    ):
        line = one_error_line(CliRunner().invoke(cli, args))
        assert line == (
            f"error: store {tmp_path / 's.zarr'} is not writable (Read-only file system); make it "
            "writable, or copy it somewhere writable and use the copy"
        )


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_store_by_permissions(tmp_path, photo):
    from dgp_fitting import prior_job

    corpus = small_corpus(tmp_path / "photos", photo)
    store = tmp_path / "s.zarr"
    prior_job.prepare_store(JobPlan([corpus], store, crop=32, fit=FitConfig(steps=1)))
    store.chmod(0o555)
    try:
        result = CliRunner().invoke(cli, ["prior-stats", "--store", str(store), "--out", str(tmp_path / "o")])
        assert "is not writable" in one_error_line(result)
    finally:
        store.chmod(0o755)


def test_debug_shows_the_traceback_and_bugs_say_so(tmp_path, monkeypatch):
    runner = CliRunner()
    missing = str(tmp_path / "missing.zarr")
    plain = runner.invoke(cli, ["info", missing])
    assert one_error_line(plain) == f"error: prior store not found: {missing}"
    for args, env in ((["--debug", "info", missing], {}), (["info", missing], {"P2G_DEBUG": "1"})):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 2 and "Traceback (most recent call last)" in result.output
        assert result.output.strip().splitlines()[-1] == f"error: prior store not found: {missing}"

    from workflows import info_cmd

    monkeypatch.setattr(info_cmd, "describe_or_refuse", lambda store: {}["bug"])
    result = runner.invoke(cli, ["info", missing])
    assert one_error_line(result, code=1) == (
        "error: internal error (KeyError: 'bug'); rerun with --debug (or P2G_DEBUG=1) for the traceback, and report it"
    )


def test_sigterm_is_an_interrupt_with_cleanup(monkeypatch, tmp_path):
    from workflows import info_cmd

    def terminated(store):
        cli_module._terminate(15, None)

    monkeypatch.setattr(info_cmd, "describe_or_refuse", terminated)
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code == 143
    assert result.output == "terminated: finished outputs are kept, no partial file is left\n"


@pytest.mark.parametrize(
    "stop_signal, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated"), (None, 0, "")]
)
def test_a_signal_that_stopped_train_after_a_step_sets_the_exit_code(tmp_path, monkeypatch, stop_signal, code, word):
    """Ctrl-C (130) or SIGTERM (143) stopped the run after step 3 with last.pt saved; a time limit (no signal): 0."""
    from sr_model.training import loop as training
    from sr_model.training.loop import TrainResult

    def stopped(config, **runtime):  # what train() returns after the signal at step 3: last.pt saved
        last = Path(config.out) / "last.pt"
        return TrainResult(3, True, last, None, None, 1.0, stop_signal)

    monkeypatch.setattr(training, "train", stopped)  # the verb imports it when it runs
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli,
        [
            "train",
            "--out",
            str(run),
            "--prior",
            "official",
            "--images",
            str(tmp_path),
            "--val-images",
            str(tmp_path),
            "--steps",
            "10",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == code
    assert result.output.splitlines()[:3] == [
        "trained: stopped at step 3 (resume with --resume), 1 s of training in total",
        "no validation yet (stopped at step 3, before the first one)",
        f"wrote {run / 'last.pt'} and {run / 'metrics.jsonl'}",
    ]
    end = [f"{word}: {run / 'last.pt'} holds step 3; rerun with --resume to continue"] if stop_signal else []
    assert result.output.splitlines()[3:] == end


@pytest.mark.parametrize("bits", [8, 16])
def test_a_png_whose_data_ends_early_is_refused_not_zero_filled(tmp_path, photo, bits):
    path = write_image(tmp_path / "cut.png", photo("chelsea", 0, 0, 48), bits=bits)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="unreadable image"):
        read_image(path)


def test_upscale_names_its_own_inputs_when_a_folder_has_no_images(tmp_path):
    from sr_model.inference.upscale_files import collect_inputs

    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="found in folder .*empty; give image files or folders") as err:
        collect_inputs([tmp_path / "empty"])
    assert "--images" not in str(err.value)


def test_eval_report_keeps_non_utf8_names(tmp_path):
    from sr_model.evaluation.evaluate import EvalRow, write_report

    row = EvalRow(
        image=LATIN1_NAME,
        scale=2.0,
        method="bicubic",
        hr_height=48,
        hr_width=48,
        lr_height=24,
        lr_width=24,
        psnr=30.0,
        ssim=0.9,
        encode_ms=None,
        render_ms=1.0,
    )
    files = write_report([row], tmp_path, "benchmark")
    assert [p.name for p in files] == ["per_image.csv", "summary.md"]
    assert r"caf\udce9.png" in (tmp_path / "per_image.csv").read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["per_image.csv", "summary.md"]  # no .partial left


def test_train_refuses_a_store_dictionary_older_than_its_crops(tmp_path):
    from prior_store import STATUS_PENDING, open_store
    from tests.test_prior_stats import make_store

    store = tmp_path / "prior.zarr"
    make_store(store, crops=6, crop=32, chunk=2)
    runner = CliRunner()
    made = runner.invoke(cli, ["prior-stats", "--store", str(store), "--out", str(tmp_path / "o"), "--size", "9"])
    assert made.exit_code == 0, made.output
    open_store(store, mode="r+").group["crops/status"][4:6] = np.full(2, STATUS_PENDING, np.int8)  # 4 of 6 left
    result = runner.invoke(
        cli,
        [
            "train",
            "--prior",
            str(store),
            "--images",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--steps",
            "1",
            "--device",
            "cpu",
        ],
    )
    assert one_error_line(result) == (
        f"error: the dictionary in {store} is out of date (its statistics: they were computed from 6 crops, the "
        f"store now has 4 usable ones); rerun `p2g prior-stats --store {store} --out DIR` to rebuild it"
    )
    assert not (tmp_path / "run").exists()
