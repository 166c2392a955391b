"""Bounds on every number of `p2g fit-prior` and `p2g prior-stats`, checked before anything is allocated or a store
is created (one `error:` line, nothing left behind); --device cuda:N; a corpus with nothing to fit; crop plans that
changed, named by file; and what plain `p2g info` says about damage it cannot see."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dgp_fitting import prior_job
from dgp_fitting.fitting import FitConfig
from dgp_fitting.job_plan import JobPlan
from dgp_fitting.prior_job import prepare_store
from prior_store import open_store
from tests.cli_checks import assert_one_line_error, one_error_line
from workflows.cli import cli

FIT = FitConfig(steps=8)


def write_corpus(folder: Path, photo, names=(("coffee", 100, 250), ("astronaut", 10, 180))) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, top, left in names:
        Image.fromarray((photo(name, top, left, 64) * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def fit_prior(tmp_path: Path, corpus: Path, *extra: str):
    """`p2g fit-prior CORPUS --store tmp/s.zarr --crop 32 --steps 8 --no-progress EXTRA...` (CliRunner)."""
    store = tmp_path / "s.zarr"
    args = ["fit-prior", str(corpus), "--store", str(store), "--crop", "32", "--steps", "8", "--no-progress"]
    return CliRunner().invoke(cli, [*args, *extra])


def assert_nothing_made(tmp_path: Path) -> None:
    """No store, no half-made store, no lock file."""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "photos") == []


@pytest.mark.parametrize("batch", ["99999999999", "10000000"])
def test_a_batch_beyond_memory_is_refused_before_the_store_is_made(tmp_path, photo, batch):
    corpus = write_corpus(tmp_path / "photos", photo)
    line = one_error_line(fit_prior(tmp_path, corpus, "--batch", batch, "--device", "cpu"))
    assert line.startswith(f"error: --batch {batch}: fitting one chunk of 32 px crops needs about ")
    assert "this machine's memory has" in line and "or auto" in line
    assert_nothing_made(tmp_path)


def test_a_store_whose_chunks_cannot_be_fitted_here_is_refused_unchanged(tmp_path, photo, monkeypatch):
    corpus = write_corpus(tmp_path / "photos", photo)
    prepare_store(JobPlan([corpus], tmp_path / "s.zarr", crop=32, fit=FIT), batch=4)
    before = {p: p.read_bytes() for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()}
    monkeypatch.setattr(prior_job, "free_memory", lambda device=None: 3 * 32 * 32 * 312)  # room for 3 crops
    line = one_error_line(fit_prior(tmp_path, corpus, "--device", "cpu"))
    assert line.startswith(f"error: store {tmp_path / 's.zarr'} has chunks of 4 crops: fitting one chunk")
    assert line.endswith("start a new --store with --batch 3 or auto")
    assert {p: p.read_bytes() for p in (tmp_path / "s.zarr").rglob("*") if p.is_file()} == before


def test_a_crop_beyond_memory_is_refused(tmp_path, photo):
    corpus = write_corpus(tmp_path / "photos", photo)
    line = one_error_line(fit_prior(tmp_path, corpus, "--crop", "1000000", "--device", "cpu"))
    assert line.startswith("error: --crop 1000000: fitting one 1000000 px crop needs about ")
    assert "GiB" in line and "use --crop" in line
    assert_nothing_made(tmp_path)


def test_a_plan_beyond_memory_or_disk_is_refused_before_its_boxes_are_made(tmp_path, photo, monkeypatch):
    corpus = write_corpus(tmp_path / "photos", photo)
    monkeypatch.setattr(prior_job, "max_plan_crops", lambda free: 2048)  # as if 1 MiB of memory were free
    line = one_error_line(fit_prior(tmp_path, corpus, "--crops-per-image", "5000", "--batch", "1"))
    assert line.startswith(
        "error: the crop plan would hold 10000 or more crops, over the 2048 that this machine's memory holds ("
    )
    assert line.endswith("free); fit fewer crops (a larger --stride, fewer --crops-per-image or fewer images)")
    monkeypatch.undo()
    monkeypatch.setattr(prior_job, "free_disk", lambda path: 50 * 2**10)  # 50 KiB: 6 crops of 8.3 KiB
    line = one_error_line(fit_prior(tmp_path, corpus))
    assert line == (
        f"error: the crop plan would hold 8 or more crops, over the 6 that the disk of store {tmp_path / 's.zarr'} "
        "holds (50.0 KiB free, about 8.3 KiB per crop); fit fewer crops (a larger --stride, fewer "
        "--crops-per-image or fewer images)"
    )
    assert_nothing_made(tmp_path)


def test_a_store_left_to_fit_beyond_its_disk_is_refused(tmp_path, photo, monkeypatch):
    corpus = write_corpus(tmp_path / "photos", photo)
    prepare_store(JobPlan([corpus], tmp_path / "s.zarr", crop=32, fit=FIT), batch=4)
    monkeypatch.setattr(prior_job, "free_disk", lambda path: 32 * 2**10)
    line = one_error_line(fit_prior(tmp_path, corpus, "--device", "cpu"))
    assert line == (
        f"error: store {tmp_path / 's.zarr'} needs about 66.1 KiB on disk for the 8 crops left to fit, but its disk "
        "has 32.0 KiB free (room for about 3 crops); free space, fit fewer crops (--stride, --crops-per-image, "
        "fewer images) or put --store on a larger disk"
    )
    assert open_store(tmp_path / "s.zarr").status_counts()["pending"] == 8


def test_more_local_workers_than_memory_holds_are_refused_before_starting_them(tmp_path, photo, monkeypatch):
    corpus = write_corpus(tmp_path / "photos", photo)
    monkeypatch.setattr(prior_job, "free_memory", lambda device=None: 2 * 2**30)
    line = one_error_line(fit_prior(tmp_path, corpus, "--workers", "4", "--device", "cpu"))
    assert line == (
        "error: --workers 4: 4 worker processes need about 4.01 GiB (1.00 GiB each), but this machine has 2.00 GiB "
        "free; use --workers 1 or less"
    )
    assert_nothing_made(tmp_path)


def test_more_cluster_workers_than_open_files_are_refused(tmp_path, photo):
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit")
    corpus = write_corpus(tmp_path / "photos", photo)
    line = one_error_line(fit_prior(tmp_path, corpus, "--workers", str(limit)))
    assert f"open-file limit is {limit}; ask for at most {limit // 2}" in line


@pytest.mark.parametrize(
    "option, value, words",
    [
        ("--steps", "0", "--steps must be at least 1, got 0: with no step a crop keeps its unfitted start"),
        ("--steps", str(2**31), f"--steps {2**31} is over 2147483647, the most the store's iteration count holds"),
        ("--lr", "1e38", "--lr 1e+38 is over 3.4e+37: Adam's first step (lr / 0.1) would overflow float32"),
        ("--color-lr", "1e300", "--color-lr 1e+300 is over 3.4e+37"),
        ("--seed", "-1", "--seed must lie between 0 and 9223372036854775807 (64 bits), got -1"),
        ("--seed", str(2**63), "--seed must lie between 0 and 9223372036854775807"),
        ("--stride", str(2**31), f"--stride {2**31} is over 2147483647 px"),
    ],
)
def test_fitting_numbers_past_their_bounds_are_refused(tmp_path, photo, option, value, words):
    corpus = write_corpus(tmp_path / "photos", photo)
    assert_one_line_error(fit_prior(tmp_path, corpus, option, value), words)
    assert_nothing_made(tmp_path)


def test_device_cuda_n_is_accepted_when_it_exists_and_refused_naming_the_count(tmp_path, photo, monkeypatch):
    assert prior_job.check_device("CUDA:1") == "cuda:1" and prior_job.check_device("auto") == "auto"
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        prior_job.check_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    prior_job._check_local_device("cuda:1")  # exists: accepted
    corpus = write_corpus(tmp_path / "photos", photo)
    line = one_error_line(fit_prior(tmp_path, corpus, "--device", "cuda:3"))
    assert line == (
        "error: --device cuda:3: this machine has 2 CUDA device(s) (cuda:0 to cuda:1); use --device cuda, or cpu"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    line = one_error_line(fit_prior(tmp_path, corpus, "--device", "cuda:3"))
    assert line.startswith("error: --device cuda:3: this machine has no usable CUDA device")
    assert_nothing_made(tmp_path)


def test_a_corpus_with_nothing_to_fit_is_refused_without_a_store(tmp_path, photo):
    corpus = tmp_path / "photos"
    corpus.mkdir()
    (corpus / "notes.png").write_text("not an image")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(corpus / "tiny.png")
    line = one_error_line(fit_prior(tmp_path, corpus))
    assert line == (
        f"error: none of the 2 image file(s) can be fitted ({corpus / 'notes.png'}: not a recognised image file; "
        f"{corpus / 'tiny.png'}: image 20x20 is smaller than the 32 px crop); give readable images of at least "
        "32x32 px"
    )
    assert_nothing_made(tmp_path)


def test_a_changed_crop_plan_names_the_images(tmp_path, photo):
    corpus = write_corpus(tmp_path / "photos", photo)
    prepare_store(JobPlan([corpus], tmp_path / "s.zarr", crop=32, fit=FIT), batch=4)
    coffee = corpus / "coffee.png"
    Image.open(coffee).resize((96, 64)).save(coffee)  # resized: other crops
    (corpus / "astronaut.png").unlink()  # removed
    line = one_error_line(fit_prior(tmp_path, corpus, "--batch", "4"))
    assert line == (
        f"error: store {tmp_path / 's.zarr'} holds another crop plan ({corpus / 'astronaut.png'}: no longer among "
        f"the images given (removed, renamed or unreadable); {coffee}: cut into other crops than when the store "
        "was planned (resized or replaced)); rerun with the same images and crop options to resume it, or use a "
        "new --store"
    )


def test_plain_info_says_when_the_store_was_last_verified(tmp_path, photo):
    corpus = write_corpus(tmp_path / "photos", photo)
    store = tmp_path / "s.zarr"
    prepare_store(JobPlan([corpus], store, crop=32, fit=FIT), batch=4)
    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(store)])
    assert result.exit_code == 0, result.output
    assert f"integrity   never verified; `p2g info --verify {store}` reads every chunk and reports damage" in (
        result.output.splitlines()
    )
    assert runner.invoke(cli, ["info", "--verify", str(store)]).exit_code == 0
    line = [x for x in runner.invoke(cli, ["info", str(store)]).output.splitlines() if x.startswith("integrity")]
    assert line[0].startswith("integrity   no damage when last verified (")
    assert line[0].endswith(f"by p2g info --verify); `p2g info --verify {store}` checks again")
    last = json.loads(runner.invoke(cli, ["info", "--json", str(store)]).output)["last_verified"]
    assert (last["by"], last["damaged_keys"], last["keys_checked"], last["mended"]) == (
        "p2g info --verify",
        0,
        20,
        False,
    )

    (store / "crops/source/c/1").unlink()
    assert runner.invoke(cli, ["info", "--verify", str(store)]).exit_code == 1
    result = runner.invoke(cli, ["info", str(store)])
    assert "integrity   1 damaged storage key(s); rerun the p2g fit-prior command that made the store" in (
        result.output
    )


def test_prior_stats_numbers_past_their_bounds_are_refused_before_reading_the_store(tmp_path, monkeypatch):
    from dgp_fitting import prior_report

    monkeypatch.setattr(prior_report, "free_memory", lambda device=None: 2**30)
    base = ["prior-stats", "--store", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "out")]
    cases = [
        (["--size", str(10**12 + 1)], "--size 1000000000001: making 1000000000001 kernels needs about "),
        (["--size", str(2**22 + 1), "--method", "sample"], "but this machine has 1.00 GiB free; use --size 4194304"),
        (["--threads", "100"], "--threads 100: each thread holds about 256.0 MiB of the store at a time"),
        (["--min-psnr", "121"], "--min-psnr 121 is over 120 dB, the highest PSNR a fitted crop records"),
        (["--seed", "-5", "--method", "sample"], "--seed must lie between 0 and 9223372036854775807"),
    ]
    for extra, words in cases:
        assert_one_line_error(CliRunner().invoke(cli, [*base, *extra]), words)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
