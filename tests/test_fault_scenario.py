"""Fault injection through the `p2g` command line, as a user meets it: fit, corrupt three chunks of different
arrays, verify, refit, and the final statistics equal those of an undamaged run byte for byte; one Ctrl-C on
fit-prior stops it with one line. Slow (minutes on a busy machine): `make test-slow`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from prior_store import open_store
from prior_store.schema import ARRAYS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PHOTOS = (("astronaut", 10, 180), ("coffee", 100, 250), ("chelsea", 40, 120))


def p2g(*args, code: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "workflows.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == code, f"p2g {' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


def write_corpus(folder: Path, photo) -> Path:
    folder.mkdir(parents=True)
    for name, top, left in PHOTOS:
        Image.fromarray((photo(name, top, left, 64) * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    return folder


def test_corrupt_verify_refit_gives_the_undamaged_statistics(tmp_path, photo):
    corpus = write_corpus(tmp_path / "photos", photo)
    store, reference = tmp_path / "prior.zarr", tmp_path / "reference.zarr"
    fit = (
        "fit-prior",
        corpus,
        "--store",
        store,
        "--crop",
        32,
        "--steps",
        30,
        "--batch",
        3,
        "--workers",
        1,
        "--no-progress",
    )
    p2g(*fit)
    shutil.copytree(store, reference)
    stats = ("prior-stats", "--out")
    p2g(*stats, tmp_path / "reference_stats", "--store", reference, "--size", 126)

    (store / "field/chol/c/1/0/0").unlink()  # crops 3-5: missing
    colours = store / "field/colors/c/2/0/0"  # crops 6-8: random bytes
    colours.write_bytes(np.random.default_rng(1).integers(0, 256, colours.stat().st_size, np.uint8).tobytes())
    status = store / "crops/status/c/3"  # crops 9-11: truncated
    status.write_bytes(status.read_bytes()[:5])

    verify = p2g("info", store, "--verify", code=1).stdout.splitlines()
    assert verify[0] == f"damaged {store}: 3 of 40 storage keys, 9 crops"
    assert verify[1].startswith("  field/chol/c/1/0/0 (crops 3-5): missing")
    assert verify[2].startswith("  field/colors/c/2/0/0 (crops 6-8): undecodable")
    assert verify[3].startswith("  crops/status/c/3 (crops 9-11): undecodable")
    refused = p2g(*stats, tmp_path / "stats", "--store", store, "--size", 126, code=2)
    assert refused.stderr.startswith(f"error: store {store} has 3 damaged storage key(s)")
    assert not (store / "stats").exists() and not (tmp_path / "stats").exists()

    mended = p2g(*fit).stdout
    assert "mending: 3 damaged storage key(s)" in mended and "9 crops marked pending to refit" in mended
    assert "12 crops: 12 done, 0 failed, 0 pending; 3 skipped" in mended
    assert p2g("info", store, "--verify").stdout.startswith(f"verified {store}: 40 storage keys")
    p2g(*stats, tmp_path / "stats", "--store", store, "--size", 126)

    for spec in ARRAYS:
        a, b = open_store(store).read(spec.path), open_store(reference).read(spec.path)
        assert (a == b) if isinstance(a, list) else a.tobytes() == b.tobytes(), spec.path
    for name in ("summary.json", "summary.md", "dictionary.npy", "dictionary.json"):
        assert (tmp_path / "stats" / name).read_bytes() == (tmp_path / "reference_stats" / name).read_bytes(), name


def test_one_ctrl_c_stops_fit_prior_with_one_line(tmp_path, photo):
    corpus = write_corpus(tmp_path / "photos", photo)
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workflows.cli",
            "fit-prior",
            str(corpus),
            "--store",
            str(tmp_path / "s.zarr"),
            "--crop",
            "32",
            "--steps",
            "5000",
            "--batch",
            "2",
            "--workers",
            "2",
            "--no-progress",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert job.stdout.readline().startswith("dashboard:")  # workers are up, tasks submitted
        os.killpg(job.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        _out, err = job.communicate(timeout=300)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == (
        "interrupted: finished chunks are in the store; rerun the same command to fit only the rest"
    )
