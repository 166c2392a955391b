"""Training data: folders, broken files, shapes, one scale per batch, reproducibility across workers and resumes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gaussian_field.image_io import write_image
from sr_model.data.datasets import (
    NoImagesError,
    ScaleBatchSampler,
    SkippedImageWarning,
    SRTrainDataset,
    augment,
    find_images,
    make_train_loader,
    to_8bit_levels,
)
from sr_model.data.imresize import imresize

PHOTOS = (("astronaut", 0, 140), ("coffee", 100, 200), ("chelsea", 30, 120), ("rocket", 150, 250))


@pytest.fixture
def photo_dir(tmp_path, photo) -> Path:
    """Four 72x72 photo crops, two of them in a nested folder."""
    root = tmp_path / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    for i, (name, top, left) in enumerate(PHOTOS):
        folder = root if i < 2 else root / "nested" / "deeper"
        write_image(folder / f"{name}.png", photo(name, top, left, size=72))
    (root / "notes.txt").write_text("not an image")
    return root


def _dataset(folder, **kwargs) -> SRTrainDataset:
    kwargs = {"patch": 8, "scale_range": (4.0, 8.0), **kwargs}
    return SRTrainDataset([folder], **kwargs)


def test_find_images_is_recursive_and_sorted(photo_dir):
    found = find_images([photo_dir])
    assert [p.name for p in found] == ["astronaut.png", "coffee.png", "chelsea.png", "rocket.png"]
    assert find_images(photo_dir / "coffee.png") == [photo_dir / "coffee.png"]


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoImagesError, match="no images .* found in .*empty"):
        SRTrainDataset([tmp_path / "empty"])
    assert issubclass(NoImagesError, ValueError)  # the CLI turns it into `error: ...`, exit 2
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        find_images([tmp_path / "missing"])


def test_broken_image_is_skipped_with_a_warning(photo_dir):
    (photo_dir / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (photo_dir / "empty.jpg").write_bytes(b"")
    with pytest.warns(SkippedImageWarning) as caught:
        data = _dataset(photo_dir)
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.png" in messages and "empty.jpg" in messages
    assert len(data) == 4
    assert all(p.stem != "broken" for p in data.paths)
    sample = data[ScaleBatchSampler(data, 2).batch(0)[0]]
    assert sample["lr"].shape == (3, 8, 8)


def test_image_that_breaks_after_the_scan_is_replaced_with_a_warning(photo_dir):
    data = _dataset(photo_dir, augment=False)
    victim = data.paths.index(photo_dir / "coffee.png")
    data.paths[victim].write_bytes(data.paths[victim].read_bytes()[:100])  # truncated now
    key = ScaleBatchSampler(data, 1).batch(0)[0]
    key = type(key)(victim, key.hr_size, key.seed)
    with pytest.warns(SkippedImageWarning, match="coffee.png"):
        sample = data[key]
    replacement = data[type(key)((victim + 1) % len(data), key.hr_size, key.seed)]
    torch.testing.assert_close(sample["hr"], replacement["hr"])


def test_only_broken_or_small_images_is_an_error(tmp_path, photo):
    (tmp_path / "a.png").write_bytes(b"garbage")
    write_image(tmp_path / "small.png", photo("coffee", size=20))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedImageWarning)
        with pytest.raises(NoImagesError, match="1 unreadable, 1 smaller than 64 px"):
            _dataset(tmp_path)  # needs 8 * 8 = 64 px crops


def test_sample_shapes_and_lr_is_8bit_matlab_bicubic(photo_dir):
    data = _dataset(photo_dir)
    sampler = ScaleBatchSampler(data, batch_size=3, seed=7)
    for b in range(4):
        keys = sampler.batch(b)
        assert len({k.hr_size for k in keys}) == 1  # one scale per batch
        for key in keys:
            sample = data[key]
            size = key.hr_size
            assert 32 <= size <= 64
            assert sample["hr"].shape == (3, size, size) and sample["lr"].shape == (3, 8, 8)
            assert sample["hr"].dtype == sample["lr"].dtype == torch.float32
            torch.testing.assert_close(sample["scale"], torch.tensor([size / 8, size / 8]))
            expected = to_8bit_levels(imresize(sample["hr"], scale=8 / size, size=(8, 8)))
            torch.testing.assert_close(sample["lr"], expected, rtol=0, atol=0)
            levels = sample["lr"] * 255
            torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)


def test_scales_cover_the_range(photo_dir):
    for scale_range, low, high in (((4.0, 8.0), 32, 64), ((1.0, 4.0), 8, 32)):
        data = _dataset(photo_dir, scale_range=scale_range)
        sizes = [ScaleBatchSampler(data, 1, seed=1).batch(b)[0].hr_size for b in range(200)]
        assert low <= min(sizes) <= low + 3 and high - 3 <= max(sizes) <= high
        assert len(set(sizes)) > (high - low) // 2  # many distinct scales, not a few


def test_scale_one_keeps_the_patch(photo_dir):
    data = _dataset(photo_dir, scale_range=(1.0, 1.0), augment=False)
    sample = data[ScaleBatchSampler(data, 1).batch(0)[0]]
    torch.testing.assert_close(sample["lr"], to_8bit_levels(sample["hr"]), rtol=0, atol=1e-6)


def test_each_epoch_visits_every_image_once(photo_dir):
    data = _dataset(photo_dir)
    sampler = ScaleBatchSampler(data, batch_size=2, seed=3)
    indices = [k.index for b in range(6) for k in sampler.batch(b)]  # 3 epochs of 4 images
    for epoch in range(3):
        assert sorted(indices[4 * epoch : 4 * epoch + 4]) == [0, 1, 2, 3]
    assert indices[:4] != indices[4:8] or indices[4:8] != indices[8:12]  # reshuffled


def _batches(loader, count):
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == count:
            break
    return out


def test_loader_is_reproducible_across_workers_and_resume(photo_dir):
    data = _dataset(photo_dir)
    plain = _batches(make_train_loader(data, batch_size=3, seed=11, num_batches=5), 5)
    workers = _batches(make_train_loader(data, batch_size=3, seed=11, workers=2, num_batches=5), 5)
    resumed = _batches(make_train_loader(data, batch_size=3, seed=11, start_batch=3), 2)
    other_seed = _batches(make_train_loader(data, batch_size=3, seed=12, num_batches=1), 1)
    for a, b in zip(plain, workers):
        for name in ("lr", "hr", "scale"):
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    for a, b in zip(plain[3:], resumed):
        torch.testing.assert_close(a["hr"], b["hr"], rtol=0, atol=0)
    assert plain[0]["lr"].shape[0] == 3 and plain[0]["hr"].shape[-1] == plain[0]["hr"].shape[-2]
    assert not (plain[0]["hr"].shape == other_seed[0]["hr"].shape and torch.equal(plain[0]["hr"], other_seed[0]["hr"]))


def test_augment_gives_the_eight_symmetries(photo):
    image = torch.from_numpy(photo("astronaut", size=16)).permute(2, 0, 1)
    variants = {augment(image, h, v, t).numpy().tobytes() for h in (0, 1) for v in (0, 1) for t in (0, 1)}
    assert len(variants) == 8


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale_range": (0.5, 2.0)}, "scale range"),
        ({"scale_range": (4.0, 2.0)}, "scale range"),
        ({"patch": 0}, "patch"),
    ],
)
def test_bad_settings(photo_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _dataset(photo_dir, **kwargs)


# ---------------------------------------------------------------- `make data` (offline: apt-get is faked)
def _fake_package(root: Path, photo) -> Path:
    """An unpacked package: two photos, one excluded drawing, a Plasma-style folder of two sizes, a copyright."""
    backgrounds = root / "usr/share/backgrounds"
    backgrounds.mkdir(parents=True)
    write_image(backgrounds / "bridge.jpg", photo("rocket", size=40))
    write_image(backgrounds / "bird.jpg", photo("chelsea", size=40))
    write_image(backgrounds / "gradient.jpg", photo("coffee", size=40))
    images = root / "usr/share/wallpapers/Lake/contents/images"
    images.mkdir(parents=True)
    write_image(images / "40x20.png", photo("astronaut", size=40)[:20])
    write_image(images / "40x40.png", photo("astronaut", size=40))
    doc = root / "usr/share/doc/fake-wallpapers"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("CC-BY-SA")
    return root


def test_make_corpus_selects_photos_and_splits_stably(tmp_path, photo, monkeypatch):
    from workflows import make_corpus

    unpacked = _fake_package(tmp_path / "unpacked", photo)
    source = make_corpus.PhotoSource(
        "fake-wallpapers",
        ("usr/share/backgrounds/*.jpg", "usr/share/wallpapers/Lake/contents/images/*"),
        ("*/gradient.jpg",),
    )
    picked = make_corpus.select_photos(unpacked, source)
    assert [p.name for p in picked] == ["bird.jpg", "bridge.jpg", "40x40.png"]  # largest rendition only

    monkeypatch.setattr(make_corpus, "download", lambda package, debs: debs / f"{package}_1.0_all.deb")
    monkeypatch.setattr(make_corpus, "unpack", lambda deb, into: unpacked)
    out = tmp_path / "data"
    rows = make_corpus.build_corpus(out, sources=(source,), val_fraction=0.5)
    files = sorted(r["file"].split("/", 1)[1] for r in rows)
    assert files == ["fake-wallpapers__Lake.png", "fake-wallpapers__bird.jpg", "fake-wallpapers__bridge.jpg"]
    for row in rows:
        assert (out / "wallpapers" / row["file"]).is_file()
        assert row["file"].split("/")[0] == make_corpus.split_of(row["file"].split("/", 1)[1], 0.5)
    assert (out / "wallpapers/licenses/fake-wallpapers.copyright").read_text() == "CC-BY-SA"
    assert len((out / "wallpapers/manifest.tsv").read_text().splitlines()) == 4
    data = SRTrainDataset([out / "wallpapers"], patch=4, scale_range=(2.0, 4.0))  # the corpus is usable
    assert len(data) == 3


def test_make_corpus_without_packages_is_a_clear_error(tmp_path, monkeypatch):
    from workflows import make_corpus

    def unavailable(package, debs):
        raise make_corpus.CorpusError(f"apt-get download {package} failed; run `apt-get update` and retry")

    monkeypatch.setattr(make_corpus, "download", unavailable)
    assert make_corpus.main(["--out", str(tmp_path / "data")]) == 2
    assert not (tmp_path / "data" / "wallpapers").exists()


def test_split_is_a_stable_fraction():
    from workflows.make_corpus import split_of

    names = [f"pkg__photo{i}.jpg" for i in range(2000)]
    val = [n for n in names if split_of(n, 0.15) == "val"]
    assert 0.12 < len(val) / len(names) < 0.18
    assert val == [n for n in names if split_of(n, 0.15) == "val"]


def test_cache_gives_identical_samples(photo_dir):
    plain, cached = _dataset(photo_dir), _dataset(photo_dir, cache=True)
    sampler = ScaleBatchSampler(plain, batch_size=4, seed=5)
    for b in range(3):  # the second and third pass read from the cache
        for key in sampler.batch(b):
            a, c = plain[key], cached[key]
            torch.testing.assert_close(a["hr"], c["hr"], rtol=0, atol=0)
            torch.testing.assert_close(a["lr"], c["lr"], rtol=0, atol=0)
    assert len(cached._cached) == 4 and all(v.dtype == np.uint8 for v in cached._cached.values())
