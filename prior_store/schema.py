"""Layout of the prior store (Zarr v3): the one place that says what lives where, in which units.

A store holds C crops of one size, each fitted to a Gaussian field on the same lattice. Every array has a
leading crop axis chunked by ``chunk_size`` crops (the job's batch), so one task owns whole chunks: writers
never share a chunk file and a rerun of a chunk overwrites the same bytes. Plain ``zarr.open_group`` and
``dask.array.from_zarr(path, component="field/chol")`` read it; nothing here needs pixel2gauss to decode.

Root attributes (``zarr.open_group(path).attrs``):

- ``schema_version`` (int): this layout's version, ``SCHEMA_VERSION``; a newer one is refused on open.
- ``crop_size`` (int): HR crop side in pixels (crops are square).
- ``reference_scale`` (int, default 4): HR pixels per LR lattice cell side, so one LR px = 4 HR px.
- ``k`` (int, default 2): Gaussians per cell side (k x k per LR pixel).
- ``lattice`` ([h_lr, w_lr, k]): the field's lattice, h_lr = w_lr = crop_size / reference_scale.
- ``chunk_size`` (int): crops per chunk along the crop axis (the job's batch), because readers
  and the job need it without opening an array.
- ``fitting`` (dict): the fitting configuration (steps, lr, loss, seed, bounds, ...) as the fitter wrote it.
- ``plan_digest`` (str): sha256 over the crop plan (sources and boxes), so a rerun with another corpus or
  crop layout is refused instead of mixing two plans in one store.
- ``package_version`` (str), ``created`` (ISO 8601 UTC str).

Arrays (C crops, G = h_lr * w_lr * k * k Gaussians, in the lattice's row-major order, see
``gaussian_field.lattice``):

========================  ===========  ==============  ===================================================
path                      shape        dtype           meaning
========================  ===========  ==============  ===================================================
``crops/source``          (C,)         variable str    image path as given to the job
``crops/box``             (C, 4)       int32           [top, left, height, width] in HR pixels of the image
``crops/content_hash``    (C,)         variable str    sha256 (hex) of the image file's bytes, "" if unread
``crops/status``          (C,)         int8            0 pending, 1 done, 2 failed
``crops/reason``          (C,)         variable str    why a crop failed ("" otherwise)
``crops/psnr``            (C,)         float32         PSNR (dB) of the fitted field rendered at
                                                       ``reference_scale`` against the crop; NaN unless done
``crops/iterations``      (C,)         int32           optimisation steps run
``field/means``           (C, G, 2)    float32         Gaussian centres in LR px of the crop's lattice, x
                                                       then y (base + tanh-bounded offset)
``field/chol``            (C, G, 3)    float32         Cholesky (l11, l21, l22) in LR px; Sigma = L L^T
``field/colors``          (C, G, 3)    float32         RGB weight of each Gaussian (unbounded)
``stats/``                group        --              reserved for stage 2 (statistics, dictionary)
========================  ===========  ==============  ===================================================

A crop's status is written last in a chunk write, so ``status == 1`` implies its field and PSNR are stored.
Failed crops whose reason was known at planning time (image smaller than a crop, unreadable, not an image)
carry box [0, 0, height, width] of the whole image, or zeros when even its size is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Version of this layout. Bump it on any incompatible change; readers refuse stores newer than they know.
SCHEMA_VERSION = 1

STATUS_PENDING = 0
STATUS_DONE = 1
STATUS_FAILED = 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_DONE: "done", STATUS_FAILED: "failed"}

#: Variable-length UTF-8 strings (zarr v3 "string" data type).
STRING = str


@dataclass(frozen=True)
class ArraySpec:
    """One per-crop array: its dtype, the shape after the crop axis, and its fill value."""

    path: str
    dtype: Any
    tail: tuple[int, ...] | str  # fixed trailing shape, or "gaussians:D" for (G, D)
    fill: Any


#: Every per-crop array of the store, in write order (status last: it marks the chunk's other arrays valid).
ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("crops/source", STRING, (), ""),
    ArraySpec("crops/box", np.int32, (4,), 0),
    ArraySpec("field/means", np.float32, "gaussians:2", 0.0),
    ArraySpec("field/chol", np.float32, "gaussians:3", 0.0),
    ArraySpec("field/colors", np.float32, "gaussians:3", 0.0),
    ArraySpec("crops/content_hash", STRING, (), ""),
    ArraySpec("crops/reason", STRING, (), ""),
    ArraySpec("crops/psnr", np.float32, (), float("nan")),
    ArraySpec("crops/iterations", np.int32, (), 0),
    ArraySpec("crops/status", np.int8, (), STATUS_PENDING),
)

#: Arrays fixed by the crop plan at creation; chunk writes never touch them.
PLAN_ARRAYS = ("crops/source", "crops/box")
#: Arrays a chunk write must provide (everything the fitting produces).
RESULT_ARRAYS = tuple(spec.path for spec in ARRAYS if spec.path not in PLAN_ARRAYS)

STATS_GROUP = "stats"


@dataclass(frozen=True)
class StoreConfig:
    """What makes two runs write compatible crops: reopening with another config is refused."""

    crop_size: int
    chunk_size: int
    reference_scale: int = 4
    k: int = 2
    fitting: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("crop_size", "chunk_size", "reference_scale", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.crop_size % self.reference_scale:
            raise ValueError(
                f"crop size {self.crop_size} is not a multiple of the reference scale {self.reference_scale}; "
                f"pick a crop size divisible by {self.reference_scale}"
            )

    @property
    def lattice(self) -> tuple[int, int, int]:
        """(h_lr, w_lr, k) of every crop's field."""
        side = self.crop_size // self.reference_scale
        return side, side, self.k

    @property
    def num_gaussians(self) -> int:
        h, w, k = self.lattice
        return h * w * k * k

    def tail_shape(self, spec: ArraySpec) -> tuple[int, ...]:
        if isinstance(spec.tail, str):
            return (self.num_gaussians, int(spec.tail.split(":")[1]))
        return spec.tail

    def attrs(self) -> dict:
        """The root attributes this config fixes (JSON-ready)."""
        return {
            "crop_size": int(self.crop_size),
            "reference_scale": int(self.reference_scale),
            "k": int(self.k),
            "lattice": [int(v) for v in self.lattice],
            "chunk_size": int(self.chunk_size),
            "fitting": dict(self.fitting),
        }

    @classmethod
    def from_attrs(cls, attrs: dict) -> "StoreConfig":
        return cls(
            crop_size=int(attrs["crop_size"]),
            chunk_size=int(attrs["chunk_size"]),
            reference_scale=int(attrs["reference_scale"]),
            k=int(attrs["k"]),
            fitting=dict(attrs.get("fitting", {})),
        )
