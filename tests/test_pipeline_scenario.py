"""The whole pipeline as a user runs it, through the `p2g` command line on bundled photos: fit the prior, derive
the dictionary, train (and resume), upscale once and render many, evaluate. Slow (about a minute): `make test-slow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussian_field.image_io import read_image

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def p2g(*args) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "workflows.cli", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"p2g {' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_fit_stats_train_upscale_eval(tmp_path):
    subprocess.run([sys.executable, "-m", "workflows.demo_assets", "--out", tmp_path], cwd=REPO, check=True)
    photos, store = tmp_path / "photos", tmp_path / "prior.zarr"

    fit = (
        "fit-prior",
        photos,
        "--store",
        store,
        "--crop",
        64,
        "--crops-per-image",
        2,
        "--preset",
        "demo",
        "--batch",
        3,
        "--workers",
        2,
        "--no-progress",
    )
    p2g(*fit)
    info = json.loads(p2g("info", store, "--json"))
    assert info["status"] == {"done": 12, "failed": 0, "pending": 0}, info
    assert "12 skipped (already done)" in p2g(*fit)  # a rerun fits nothing

    p2g("prior-stats", "--store", store, "--out", tmp_path / "stats")
    dictionary = np.load(tmp_path / "stats" / "dictionary.npy")
    assert dictionary.shape == (730, 3)
    stored = json.loads(p2g("info", store, "--json"))["dictionary_summary"]
    assert stored["size"] == 730

    run = tmp_path / "train"
    train = (
        "train",
        "--prior",
        store,
        "--out",
        run,
        "--device",
        "cpu",
        "--images",
        photos / "astronaut.png",
        photos / "coffee.png",
        "--val-images",
        photos / "chelsea.png",
        "--batch",
        2,
        "--patch",
        16,
        "--scales",
        "2-4",
        "--lr",
        "2e-3",
        "--val-every",
        20,
        "--val-crop",
        96,
    )
    p2g(*train, "--steps", 20)
    p2g(*train, "--steps", 30, "--resume")
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["step"] == 30 and (run / "best.pt").exists()
    assert last["dictionary"]["kernels_hash"] == stored["content_hash"]  # trained on the store's dictionary

    lr_path = tmp_path / "astronaut_lr.png"
    h, w = read_image(lr_path).shape[:2]
    out = tmp_path / "up"
    p2g(
        "upscale",
        lr_path,
        "--checkpoint",
        run / "best.pt",
        "--out",
        out,
        "--scale",
        2,
        "--scale",
        3.7,
        "--size",
        "50x30",
        "--save-field",
    )
    assert read_image(out / "astronaut_lr_x2.png").shape[:2] == (2 * h, 2 * w)
    assert read_image(out / "astronaut_lr_x3.7.png").shape[:2] == (round(3.7 * h), round(3.7 * w))
    assert read_image(out / "astronaut_lr_50x30.png").shape[:2] == (30, 50)
    # construct once, render many: the saved field renders to the same image later
    p2g("render", out / "astronaut_lr_field.npz", "--scale", 3.7, "--out", tmp_path / "again")
    again = read_image(tmp_path / "again" / "astronaut_lr_field_x3.7.png")
    assert np.array_equal(again, read_image(out / "astronaut_lr_x3.7.png"))

    p2g(
        "eval",
        "--checkpoint",
        run / "best.pt",
        "--images",
        photos / "chelsea.png",
        "--scales",
        "2,4",
        "--out",
        tmp_path / "eval",
    )
    summary = (tmp_path / "eval" / "summary.md").read_text()
    assert "| x2 |" in summary and "| x4 |" in summary
    rows = (tmp_path / "eval" / "per_image.csv").read_text().strip().splitlines()
    assert len(rows) >= 3  # a header and one row per scale at least
