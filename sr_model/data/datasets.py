"""Training data: HR photo folders -> (LR, HR) patch pairs at a random scale per batch, reproducibly.

Each batch draws one scale s ~ U(s_min, s_max) (4..8 as the paper, or 1..4 as LIIF); every sample in it is a
random HR crop of round(patch * s) pixels, randomly flipped/transposed, and its LR is the MATLAB bicubic
downscale to patch x patch (`sr_model.data.imresize`), clipped and rounded to 8 bits as a saved LR file would be.

Reproducibility: what batch b holds (images, scale, crop positions, flips) depends only on (seed, b), never on
the number of DataLoader workers or on what ran before, so a run resumed at batch b sees exactly the batches an
uninterrupted run would (`start_batch`). Images are visited epoch by epoch in a seeded permutation.

Broken or too-small files are skipped with a `SkippedImageWarning` when the folder is scanned (and, if a file
breaks later, when it is loaded); a folder without usable images is an error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from gaussian_field.image_io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    ImageTooLargeError,
    find_image_files,
    probe_image,
    read_image,
)
from sr_model.data.imresize import imresize


class SkippedImageWarning(UserWarning):
    """An image of a training/evaluation folder was left out (unreadable, or too small)."""


class NoImagesError(ValueError):
    """A folder (or list of folders) holds no usable image."""


def find_images(sources: Sequence[str | os.PathLike]) -> list[Path]:
    """Image files under the given folders (recursive, sorted) or given directly; raises if none."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise NoImagesError("no image folder given")
    found: list[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            found += find_image_files(source)
        elif source.is_file():
            found.append(source)
        else:
            raise FileNotFoundError(f"image folder not found: {source}")
    if not found:
        names = ", ".join(str(s) for s in sources)
        raise NoImagesError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {names}; point --images at folders of photos"
        )
    return found


def by_stem(paths: Sequence[Path], clash: str) -> dict[str, Path]:
    """Paths by file name less suffix, for files named or paired after their inputs; two paths of one name raise
    ValueError(clash) with {first}, {second} and {stem} filled in."""
    found: dict[str, Path] = {}
    for path in paths:
        if path.stem in found:
            raise ValueError(clash.format(first=found[path.stem], second=path, stem=path.stem))
        found[path.stem] = path
    return found


def usable_images(paths: Sequence[Path], min_side: int = 1) -> list[tuple[Path, tuple[int, int]]]:
    """(path, (H, W)) of the readable images at least min_side on both sides; the rest warned about, skipped."""
    usable, broken, small = [], [], []
    for path in paths:
        try:
            size = probe_image(path, verify=True).size  # a cut PNG is found by this scan, not mid-run
        except ImageTooLargeError:
            raise  # not broken: the user decides (raise the limit, or leave the file out), before any training
        except (ImageReadError, OSError) as err:
            broken.append(path)
            warnings.warn(f"skipping unreadable image {path}: {err}", SkippedImageWarning, stacklevel=2)
            continue
        if min(size) < min_side:
            small.append(path)
            continue
        usable.append((path, size))
    if small:
        warnings.warn(
            f"skipping {len(small)} image(s) smaller than {min_side} px, e.g. {small[0]}",
            SkippedImageWarning,
            stacklevel=2,
        )
    if not usable:
        why = f"{len(broken)} unreadable, {len(small)} smaller than {min_side} px"
        raise NoImagesError(f"none of the {len(paths)} image(s) is usable for training ({why})")
    return usable


def to_8bit_levels(image: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and round to the 256 levels of an 8-bit file (what a saved LR image holds)."""
    return torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0


def augment(image: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    """Flip (..., H, W) horizontally/vertically and swap H and W: the 8 symmetries of the square."""
    if hflip:
        image = image.flip(-1)
    if vflip:
        image = image.flip(-2)
    if transpose:
        image = image.transpose(-1, -2)
    return image.contiguous()


@dataclass(frozen=True)
class SampleKey:
    """What one sample is: which image, at which HR crop size, with which random stream."""

    index: int
    hr_size: int
    seed: tuple[int, ...]


def _to_cache(image: np.ndarray) -> np.ndarray:
    """8-bit images are cached as uint8 (a quarter of the memory), exactly: read_image made them as u8 / 255."""
    levels = np.round(image * 255.0).astype(np.uint8)
    return levels if np.array_equal(levels.astype(np.float32) / 255.0, image) else image


def _from_cache(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image


class SRTrainDataset(Dataset):
    """(LR, HR) pairs from HR photos; indexed by `SampleKey`s that `ScaleBatchSampler` draws.

    `cache=True` keeps every decoded image in memory (in each DataLoader worker; 8-bit images as uint8, 3 bytes
    per pixel): worth it when decoding dominates, e.g. a few large photos and small patches.
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike],
        patch: int = 48,
        scale_range: tuple[float, float] = (4.0, 8.0),
        augment: bool = True,
        quantize_lr: bool = True,
        cache: bool = False,
    ) -> None:
        s_min, s_max = (float(s) for s in scale_range)
        if not (1.0 <= s_min <= s_max) or not np.isfinite(s_max):
            raise ValueError(f"scale range must satisfy 1 <= s_min <= s_max, got {scale_range!r}")
        if int(patch) != patch or patch < 1:
            raise ValueError(f"patch (LR size) must be a positive integer, got {patch!r}")
        self.patch = int(patch)
        self.scale_range = (s_min, s_max)
        self.augment = augment
        self.quantize_lr = quantize_lr
        self.cache = cache
        self._cached: dict[int, np.ndarray] = {}
        entries = usable_images(find_images(sources), min_side=self.hr_size(s_max))
        self.paths = [path for path, _ in entries]
        self.sizes = [size for _, size in entries]

    def hr_size(self, scale: float) -> int:
        """Side of the HR crop for a scale: round(patch * scale)."""
        return max(self.patch, round(self.patch * scale))

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, index: int) -> tuple[int, np.ndarray]:
        """Decode image `index`, or the next readable one if it broke since the scan (warned); cached images
        may be uint8 (see `_to_cache`)."""
        for step in range(len(self.paths)):
            i = (index + step) % len(self.paths)
            if i in self._cached:
                return i, self._cached[i]
            try:
                image = read_image(self.paths[i])
            except (ImageReadError, OSError) as err:
                warnings.warn(f"skipping unreadable image {self.paths[i]}: {err}", SkippedImageWarning, stacklevel=2)
                continue
            if self.cache:
                image = self._cached[i] = _to_cache(image)
            return i, image
        raise NoImagesError("every training image failed to decode")

    def __getitem__(self, key: SampleKey) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(list(key.seed))
        _, image = self._load(key.index)
        size = key.hr_size
        height, width = image.shape[:2]
        if min(height, width) < size:
            raise ValueError(f"image {self.paths[key.index]} ({height}x{width}) is smaller than the crop {size}")
        top = int(rng.integers(0, height - size + 1))
        left = int(rng.integers(0, width - size + 1))
        crop = _from_cache(np.ascontiguousarray(image[top : top + size, left : left + size]))
        hr = torch.from_numpy(crop).permute(2, 0, 1)
        if self.augment:
            hr = augment(hr, *(bool(b) for b in rng.integers(0, 2, size=3)))
        hr = hr.contiguous().float()
        lr = imresize(hr, scale=self.patch / size, size=(self.patch, self.patch))
        lr = to_8bit_levels(lr) if self.quantize_lr else lr
        scale = torch.tensor([size / self.patch, size / self.patch], dtype=torch.float32)
        return {"lr": lr, "hr": hr, "scale": scale}


class ScaleBatchSampler(Sampler):
    """Batches of `SampleKey`s sharing one scale drawn from U(s_min, s_max); batch b depends on (seed, b) only.

    Runs forever unless `num_batches` is given; starts at `start_batch` (for resuming).
    """

    def __init__(
        self,
        dataset: SRTrainDataset,
        batch_size: int,
        seed: int = 0,
        start_batch: int = 0,
        num_batches: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.num_images = len(dataset)
        self.batch_size = batch_size
        self.scale_range = dataset.scale_range
        self.hr_size = dataset.hr_size
        self.seed = int(seed)
        self.start_batch = int(start_batch)
        self.num_batches = num_batches
        self._epoch_order: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            self._epoch_order = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(self.num_images))
        return self._epoch_order[1]

    def batch(self, b: int) -> list[SampleKey]:
        """The keys of batch number b."""
        s_min, s_max = self.scale_range
        hr_size = self.hr_size(np.random.default_rng([self.seed, 1, b]).uniform(s_min, s_max))
        keys = []
        for j in range(self.batch_size):
            position = b * self.batch_size + j
            epoch, offset = divmod(position, self.num_images)
            index = int(self._permutation(epoch)[offset])
            keys.append(SampleKey(index, hr_size, (self.seed, 2, b, j)))
        return keys

    def __iter__(self) -> Iterator[list[SampleKey]]:
        b = self.start_batch
        while self.num_batches is None or b < self.start_batch + self.num_batches:
            yield self.batch(b)
            b += 1

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("an endless ScaleBatchSampler has no length; give num_batches")
        return self.num_batches


def _one_thread_per_worker(_: int) -> None:
    torch.set_num_threads(1)  # workers share the cores: no nested thread pools


def make_train_loader(
    dataset: SRTrainDataset,
    batch_size: int,
    seed: int = 0,
    workers: int = 0,
    start_batch: int = 0,
    num_batches: int | None = None,
) -> DataLoader:
    """A DataLoader over `dataset` with one scale per batch; same batches for any number of workers."""
    sampler = ScaleBatchSampler(dataset, batch_size, seed, start_batch, num_batches)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        worker_init_fn=_one_thread_per_worker if workers else None,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
