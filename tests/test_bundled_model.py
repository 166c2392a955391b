"""workflows/bundled_model.py: the corpus preparation behind the bundled weights (halved photos, cropped val)."""

from __future__ import annotations

import numpy as np
import pytest

from gaussian_field.image_io import read_image, write_image
from workflows import bundled_model


def test_prepare_halves_train_and_crops_val(tmp_path, photo):
    corpus = tmp_path / "wallpapers"
    for split in ("train", "val"):
        (corpus / split).mkdir(parents=True)
    write_image(corpus / "train" / "a.png", photo("astronaut", 0, 0, 96)[:, :80])
    write_image(corpus / "val" / "b.png", photo("coffee", 0, 0, 120))
    bundled_model.main(["prepare", "--corpus", str(corpus), "--out", str(tmp_path / "run")])
    train = read_image(tmp_path / "run" / "photos" / "train" / "a.png")
    val = read_image(tmp_path / "run" / "photos" / "val" / "b.png")
    assert train.shape == (48, 40, 3) and val.shape == (60, 60, 3)  # val: min(480, side) square
    source = read_image(corpus / "train" / "a.png")
    box = source.reshape(48, 2, 40, 2, 3).mean(axis=(1, 3))  # 2x2 box average
    assert np.abs(train - box).max() <= 1 / 255 + 1e-9


def test_prepare_refuses_an_empty_corpus(tmp_path):
    (tmp_path / "wallpapers" / "train").mkdir(parents=True)
    with pytest.raises(SystemExit, match="make data"):
        bundled_model.main(["prepare", "--corpus", str(tmp_path / "wallpapers"), "--out", str(tmp_path / "run")])
