"""The crop plan: recursive scan, every image format, deterministic grid and random crops, failed entries."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from dgp_fitting.crop_plan import crop_boxes, plan_crops, scan_images
from gaussian_field.image_io import probe_image
from prior_store import STATUS_FAILED, STATUS_PENDING


def _u8(photo, name, size):
    return (photo(name, 10, 20, size) * 255).round().astype(np.uint8)


@pytest.fixture
def corpus(tmp_path, photo):
    """A folder tree with each supported format and pixel layout, plus things that are not images."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(_u8(photo, "astronaut", 80)).save(tmp_path / "a" / "astro.png")
    Image.fromarray(_u8(photo, "coffee", 64)).save(tmp_path / "a" / "b" / "coffee.jpg", quality=90)
    Image.fromarray(_u8(photo, "chelsea", 48)).save(tmp_path / "a" / "b" / "chelsea.webp")
    Image.fromarray(_u8(photo, "rocket", 40)).save(tmp_path / "rocket.bmp")
    Image.fromarray(_u8(photo, "astronaut", 40)).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(_u8(photo, "coffee", 40)).convert("RGBA").save(tmp_path / "rgba.png")
    gray16 = (photo("astronaut", 0, 0, 40).mean(-1) * 65535).astype(np.uint16)
    import cv2

    cv2.imwrite(str(tmp_path / "gray16.png"), gray16)
    cv2.imwrite(str(tmp_path / "a" / "colour16.tif"), (photo("chelsea", 0, 0, 40) * 65535).astype(np.uint16))
    (tmp_path / "a" / "notes.txt").write_text("not an image, and not scanned")
    (tmp_path / "fake.png").write_text("a text file renamed .png")
    Image.fromarray(_u8(photo, "coffee", 16)).save(tmp_path / "tiny.png")
    return tmp_path


def test_scan_is_recursive_sorted_and_takes_image_suffixes(corpus):
    files = scan_images([corpus])
    names = [f.split("/")[-1] for f in files]
    assert "notes.txt" not in names
    assert set(names) == {
        "astro.png",
        "coffee.jpg",
        "chelsea.webp",
        "colour16.tif",
        "rocket.bmp",
        "palette.png",
        "rgba.png",
        "gray16.png",
        "fake.png",
        "tiny.png",
    }
    assert files == sorted(files)
    # a file named explicitly is taken whatever its suffix; duplicates collapse
    assert scan_images([corpus / "a" / "notes.txt", corpus / "a" / "notes.txt"]) == [str(corpus / "a" / "notes.txt")]
    with pytest.raises(FileNotFoundError, match="not found"):
        scan_images([corpus / "missing"])


def test_image_size_reads_every_format(corpus):
    assert probe_image(corpus / "a" / "astro.png").size == (80, 80)
    assert probe_image(corpus / "a" / "b" / "chelsea.webp").size == (48, 48)
    assert probe_image(corpus / "a" / "colour16.tif").size == (40, 40)
    assert probe_image(corpus / "gray16.png").size == (40, 40)


def test_grid_plan_counts_and_failed_entries(corpus):
    plan = plan_crops([corpus], crop=32, stride=16)
    by_source = {}
    for source, box, code, reason in zip(plan.sources, plan.boxes, plan.status, plan.reasons):
        by_source.setdefault(source.split("/")[-1], []).append((tuple(box), code, reason))
    # 80 px with crop 32 stride 16: tops 0, 16, 32, 48 -> 4 x 4 crops
    assert len(by_source["astro.png"]) == 16
    assert {b for b, _, _ in by_source["astro.png"]} == {
        (t, l, 32, 32) for t in (0, 16, 32, 48) for l in (0, 16, 32, 48)
    }
    assert len(by_source["coffee.jpg"]) == 9 and len(by_source["rgba.png"]) == 1
    assert all(
        code == STATUS_PENDING
        for name in ("colour16.tif", "gray16.png", "palette.png")
        for _, code, _ in by_source[name]
    )
    ((box, code, reason),) = by_source["tiny.png"]
    assert code == STATUS_FAILED and box == (0, 0, 16, 16) and "16x16 is smaller than the 32 px crop" in reason
    ((box, code, reason),) = by_source["fake.png"]
    assert code == STATUS_FAILED and box == (0, 0, 0, 0) and "not a recognised image" in reason
    assert plan.num_failed == 2 and len(plan) == plan.boxes.shape[0]


def test_default_stride_is_the_crop_and_plans_are_deterministic(corpus):
    plan = plan_crops([corpus / "a"], crop=32)
    astro = [tuple(b) for s, b in zip(plan.sources, plan.boxes) if s.endswith("astro.png")]
    assert astro == [(0, 0, 32, 32), (0, 32, 32, 32), (32, 0, 32, 32), (32, 32, 32, 32)]
    again = plan_crops([corpus / "a"], crop=32)
    assert again.sources == plan.sources and np.array_equal(again.boxes, plan.boxes)


def test_random_crops_are_seeded_per_image_and_inside(corpus, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("moved")
    first = plan_crops([corpus], crop=24, crops_per_image=3, seed=5)
    second = plan_crops([corpus], crop=24, crops_per_image=3, seed=5)
    other = plan_crops([corpus], crop=24, crops_per_image=3, seed=6)
    assert np.array_equal(first.boxes, second.boxes) and first.sources == second.sources
    assert not np.array_equal(first.boxes, other.boxes)
    ok = first.status == STATUS_PENDING
    assert ok.sum() == 3 * 8  # 8 usable images
    sizes = {s: probe_image(s).size for s in set(first.sources) if not s.endswith(("fake.png", "tiny.png"))}
    for source, (top, left, h, w) in zip(np.array(first.sources)[ok], first.boxes[ok]):
        height, width = sizes[source]
        assert (h, w) == (24, 24) and 0 <= top <= height - 24 and 0 <= left <= width - 24
    # an image's crops do not depend on which other images are in the corpus, nor on where the corpus lives
    # (an image is named by its path inside the folder given, or by its name when given as a file)
    alone = plan_crops([corpus / "a" / "astro.png"], crop=24, crops_per_image=3, seed=5)
    folder = plan_crops([corpus / "a"], crop=24, crops_per_image=3, seed=5)
    assert np.array_equal(alone.boxes, folder.boxes[np.array(folder.sources) == str(corpus / "a" / "astro.png")])
    moved = tmp_path / "elsewhere"
    shutil.copytree(corpus, moved)
    there = plan_crops([moved], crop=24, crops_per_image=3, seed=5)
    assert np.array_equal(there.boxes, first.boxes)


def test_bad_requests_are_refused(corpus, tmp_path):
    with pytest.raises(ValueError, match="not both"):
        plan_crops([corpus], crop=32, stride=8, crops_per_image=2)
    with pytest.raises(ValueError, match="positive"):
        plan_crops([corpus], crop=32, stride=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files found"):
        plan_crops([tmp_path / "empty"], crop=32)
    assert crop_boxes(10, 100, 32) == []
