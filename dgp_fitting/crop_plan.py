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

from gaussian_field.image_io import (
    IMAGE_SUFFIXES,
    ORIENTATION_TAG,
    ImageReadError,
    bomb_error,
    configure_pillow,
    find_image_files,
    read_image,
)
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


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the header when Pillow knows the format, else by decoding the whole file."""
    from PIL import UnidentifiedImageError

    Image = configure_pillow()
    try:
        with Image.open(path) as img:
            width, height = img.size
            if _orientation(img) in (5, 6, 7, 8):  # read_image turns it upright: sides swap
                width, height = height, width
            return int(height), int(width)
    except UnidentifiedImageError:
        pass  # maybe a format only OpenCV reads: let read_image decide, with its reason
    except Image.DecompressionBombError as err:
        raise bomb_error(path, err) from None
    except OSError as err:
        raise ImageReadError(f"{path}: unreadable image ({err})") from None
    return tuple(read_image(path).shape[:2])  # type: ignore[return-value]


def _orientation(img) -> int:
    """The EXIF orientation, or 1 when it cannot be read from the header (read_image decides about the rest)."""
    try:
        return int(img.getexif().get(ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError):  # e.g. EXIF after pixel data the header-only read did not reach
        return 1


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


def plan_crops(
    paths: Sequence[str | os.PathLike],
    crop: int,
    stride: int | None = None,
    crops_per_image: int | None = None,
    seed: int = 0,
) -> CropPlan:
    """The deterministic crop list for a corpus: same inputs, same plan (order, boxes), on any machine."""
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
            height, width = image_size(source)
        except (ImageReadError, OSError) as err:
            add(source, (0, 0, 0, 0), STATUS_FAILED, _short(err))
            continue
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
