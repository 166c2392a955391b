"""The crop plan: which square crops of which images the prior job fits, decided once, deterministically.

Files and folders are scanned recursively (folders contribute files with an image suffix; a file named
explicitly is always taken, whatever its suffix). Only image headers are read here, so planning a large
corpus is cheap; decoding happens in the workers. A file that cannot be planned (not an image, unreadable
header, smaller than a crop) becomes one failed entry with the reason instead of stopping the job.
Random crops (`crops_per_image`) are seeded by the job seed and the image's path inside the folder given
(its name for a file given), so they do not change when the corpus is moved or other images are added.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gaussian_field.image_io import IMAGE_SUFFIXES, ImageReadError, find_image_files, probe_image
from prior_store import STATUS_FAILED, STATUS_PENDING


@dataclass
class CropPlan:
    """Crops in store order: source path, box [top, left, height, width], and a status/reason for files
    already known to be unusable (status failed), else pending."""

    sources: list[str]
    boxes: np.ndarray
    status: np.ndarray
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def num_images(self) -> int:
        return len(set(self.sources))

    @property
    def num_failed(self) -> int:
        return int((self.status == STATUS_FAILED).sum())


def _scan(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """{file: key}: the key names a file independently of where the corpus lives (its path inside the folder
    given, or its name for a file given), so random crops do not change when the corpus moves."""
    found: dict[str, str] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for file in find_image_files(path):
                found.setdefault(str(file), file.relative_to(path).as_posix())
        elif path.exists():
            found.setdefault(str(path), path.name)
        else:
            raise FileNotFoundError(f"image path not found: {path}")
    return found


def scan_images(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Image files under `paths` (files as given, folders recursively by suffix), sorted, no duplicates."""
    return sorted(_scan(paths))


def _image_seed(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def crop_boxes(
    height: int,
    width: int,
    crop: int,
    stride: int | None = None,
    count: int | None = None,
    rng: np.random.Generator | None = None,
) -> list[tuple[int, int, int, int]]:
    """Boxes of one image: a grid with `stride` (default: the crop, non-overlapping), or `count` random ones."""
    if height < crop or width < crop:
        return []
    if count is not None:
        rng = rng if rng is not None else np.random.default_rng(0)
        tops = rng.integers(0, height - crop + 1, size=count)
        lefts = rng.integers(0, width - crop + 1, size=count)
        return [(int(t), int(l), crop, crop) for t, l in zip(tops, lefts)]
    step = stride or crop
    return [(t, l, crop, crop) for t in range(0, height - crop + 1, step) for l in range(0, width - crop + 1, step)]


def count_boxes(height: int, width: int, crop: int, stride: int | None = None, count: int | None = None) -> int:
    """How many boxes `crop_boxes` gives, without making them."""
    if height < crop or width < crop:
        return 0
    if count is not None:
        return count
    step = stride or crop
    return ((height - crop) // step + 1) * ((width - crop) // step + 1)


class PlanTooLargeError(ValueError):
    """A crop plan larger than this machine's memory or the store's disk holds."""


def _too_many(count: int, limit: int, reason: str) -> PlanTooLargeError:
    return PlanTooLargeError(
        f"the crop plan would hold {count} or more crops, over the {limit} that {reason}; fit fewer crops "
        "(a larger --stride, fewer --crops-per-image or fewer images)"
    )


def plan_crops(
    paths: Sequence[str | os.PathLike],
    crop: int,
    stride: int | None = None,
    crops_per_image: int | None = None,
    seed: int = 0,
    max_crops: int | None = None,
    max_crops_reason: str = "this machine's memory holds",
) -> CropPlan:
    """The deterministic crop list for a corpus: same inputs, same plan (order, boxes), on any machine.

    `max_crops` bounds the plan (what the machine's memory and the store's disk hold, as `max_crops_reason` says):
    a corpus that would give more is refused (PlanTooLargeError) before its boxes are made."""
    if crop <= 0:
        raise ValueError(f"crop size must be positive, got {crop}")
    if stride is not None and crops_per_image is not None:
        raise ValueError("give either --stride or --crops-per-image, not both")
    if stride is not None and stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    if crops_per_image is not None and crops_per_image <= 0:
        raise ValueError(f"crops per image must be positive, got {crops_per_image}")
    keys = _scan(paths)
    files = sorted(keys)
    if not files:
        raise ValueError(
            f"no image files found in {', '.join(str(p) for p in paths)} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    if max_crops is not None and crops_per_image is not None and crops_per_image * len(files) > max_crops:
        raise _too_many(crops_per_image * len(files), max_crops, max_crops_reason)
    sources: list[str] = []
    boxes: list[tuple[int, int, int, int]] = []
    status: list[int] = []
    reasons: list[str] = []

    def add(source: str, box, code: int, reason: str = "") -> None:
        sources.append(source)
        boxes.append(box)
        status.append(code)
        reasons.append(reason)

    for source in files:
        try:
            height, width = probe_image(source).size
        except (ImageReadError, OSError) as err:
            add(source, (0, 0, 0, 0), STATUS_FAILED, _short(err))
            continue
        if max_crops is not None:
            count = len(sources) + max(1, count_boxes(height, width, crop, stride, crops_per_image))
            if count > max_crops:
                raise _too_many(count, max_crops, max_crops_reason)
        rng = _image_seed(seed, keys[source]) if crops_per_image is not None else None
        found = crop_boxes(height, width, crop, stride, crops_per_image, rng)
        if not found:
            add(
                source,
                (0, 0, height, width),
                STATUS_FAILED,
                f"image {width}x{height} is smaller than the {crop} px crop",
            )
        for box in found:
            add(source, box, STATUS_PENDING)
    return CropPlan(sources, np.asarray(boxes, dtype=np.int32).reshape(-1, 4), np.asarray(status, np.int8), reasons)


def _short(err: BaseException) -> str:
    return (str(err).strip() or type(err).__name__).splitlines()[0]
