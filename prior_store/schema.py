"""Layout of the prior store (Zarr v3): the one place that says what lives where, in which units.

A store holds C crops of one size, each fitted to a Gaussian field on the same lattice. Every array has a
leading crop axis. Two sizes split it:

- a *chunk* of ``chunk_size`` crops (the job's batch) is the unit of fitting and of resuming: a chunk is
  written whole, status last, so a finished chunk is never refitted;
- a *shard* of ``shard_size`` crops (a whole number of chunks) is the unit of storage and of one task: one file
  per array per shard, written only by the task that owns the shard, so writers never share a file and a
  rerun overwrites the same bytes. The field arrays use Zarr v3 sharding (inner chunks of ``chunk_size``
  crops inside each shard file); the small per-crop arrays are plainly chunked by ``shard_size``. Each write is
  a whole-file replace (zarr writes a temporary file and renames it), so a killed writer leaves the previous
  file intact and only the chunk in flight is lost.

``shard_size`` defaults to the fewest chunks per shard that keep the store at ``MAX_SHARDS`` shards or fewer:
a million crops are then ~10^4 files (10 arrays x 1000 shards), and small stores keep one shard per chunk.

Every array carries ``dimension_names`` (``crop`` first) and ``units`` / ``long_name`` attributes, so
``xarray.open_zarr(path, group="field")`` (or ``group="crops"``), plain ``zarr.open_group`` and
``dask.array.from_zarr(path, component="field/chol")`` read it; nothing here needs pixel2gauss to decode.

Root attributes (``zarr.open_group(path).attrs``):

- ``schema_version`` (int): this layout's version, ``SCHEMA_VERSION``. Version 1 (no sharding, no dimension
  names) is refused with the command that migrates it; a newer one is refused on open.
- ``crop_size`` (int): HR crop side in pixels (crops are square).
- ``reference_scale`` (int, default 4): HR pixels per LR lattice cell side, so one LR px = 4 HR px.
- ``k`` (int, default 2): Gaussians per cell side (k x k per LR pixel).
- ``lattice`` ([h_lr, w_lr, k]): the field's lattice, h_lr = w_lr = crop_size / reference_scale.
- ``chunk_size`` (int): crops per chunk along the crop axis (the job's batch).
- ``shard_size`` (int): crops per shard (a multiple of ``chunk_size``); shard i covers crops
  [i * shard_size, (i + 1) * shard_size), stored under the key ``<array>/c/<i>[/0/0]`` of every array.
- ``fitting`` (dict): the fitting configuration (steps, lr, loss, seed, bounds, ...) as the fitter wrote it.
- ``plan_digest`` (str): sha256 over the crop plan (sources and boxes), so a rerun with another corpus or
  crop layout is refused instead of mixing two plans in one store.
- ``package_version`` (str), ``created`` (ISO 8601 UTC str).

Arrays (C crops, G = h_lr * w_lr * k * k Gaussians, in the lattice's row-major order, see
``gaussian_field.lattice``); dimension names in brackets:

========================  ================================  ==============  ===========================================
path                      shape                             dtype, units    meaning
========================  ================================  ==============  ===========================================
``crops/source``          (C,) [crop]                       str             image path as given to the job
``crops/box``             (C, 4) [crop, box]                int32, HR px    [top, left, height, width] in the image
``crops/content_hash``    (C,) [crop]                       str             sha256 (hex) of the image file, "" if unread
``crops/status``          (C,) [crop]                       int8            0 pending, 1 done, 2 failed (CF flags)
``crops/reason``          (C,) [crop]                       str             why a crop failed ("" otherwise)
``crops/psnr``            (C,) [crop]                       float32, dB     PSNR of the fitted field rendered at
                                                                            ``reference_scale`` against the crop;
                                                                            NaN unless done
``crops/iterations``      (C,) [crop]                       int32           optimisation steps run
``field/means``           (C, G, 2) [crop, gaussian, xy]    float32, LR px  Gaussian centres in the crop's lattice, x
                                                                            then y (base + tanh-bounded offset)
``field/chol``            (C, G, 3) [crop, gaussian,        float32, LR px  Cholesky (l11, l21, l22); Sigma = L L^T
                          cholesky]
``field/colors``          (C, G, 3) [crop, gaussian, rgb]   float32         RGB weight of each Gaussian (unbounded)
``stats/``                group                             --              stage 2 (statistics, dictionary)
========================  ================================  ==============  ===========================================

A crop's status is written last in a chunk write, so ``status == 1`` implies its field and PSNR are stored.
Failed crops whose reason was known at planning time (image smaller than a crop, unreadable, not an image)
carry box [0, 0, height, width] of the whole image, or zeros when even its size is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Version of this layout. Bump it on any incompatible change; readers refuse stores newer than they know.
SCHEMA_VERSION = 2
#: The unsharded layout without dimension names; `prior_store.migrate` copies such a store into this one.
LEGACY_SCHEMA_VERSION = 1
#: Default upper bound on shards per store (files per array): see `auto_shard_size`.
MAX_SHARDS = 1000

STATUS_PENDING = 0
STATUS_DONE = 1
STATUS_FAILED = 2
STATUS_NAMES = {STATUS_PENDING: "pending", STATUS_DONE: "done", STATUS_FAILED: "failed"}

#: Variable-length UTF-8 strings (zarr v3 "string" data type).
STRING = str


@dataclass(frozen=True)
class ArraySpec:
    """One per-crop array: dtype, shape after the crop axis, fill value, and what xarray users see."""

    path: str
    dtype: Any
    tail: tuple[int, ...] | str  # fixed trailing shape, or "gaussians:D" for (G, D)
    fill: Any
    dims: tuple[str, ...]  # dimension names after "crop"
    units: str
    long_name: str
    extra_attrs: tuple[tuple[str, Any], ...] = ()

    @property
    def sharded(self) -> bool:
        """Per-Gaussian arrays are sharded (inner chunks of chunk_size crops); per-crop ones chunked by shard."""
        return isinstance(self.tail, str)

    @property
    def dimension_names(self) -> tuple[str, ...]:
        return ("crop",) + self.dims

    def attributes(self) -> dict:
        return {"units": self.units, "long_name": self.long_name, **dict(self.extra_attrs)}


#: Every per-crop array of the store, in write order (status last: it marks the chunk's other arrays valid).
ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("crops/source", STRING, (), "", (), "", "image path as given to the job"),
    ArraySpec(
        "crops/box",
        np.int32,
        (4,),
        0,
        ("box",),
        "HR px",
        "crop box in the image",
        (("columns", ["top", "left", "height", "width"]),),
    ),
    ArraySpec(
        "field/means",
        np.float32,
        "gaussians:2",
        0.0,
        ("gaussian", "xy"),
        "LR px",
        "Gaussian centre in the crop's LR lattice (x, y)",
    ),
    ArraySpec(
        "field/chol",
        np.float32,
        "gaussians:3",
        0.0,
        ("gaussian", "cholesky"),
        "LR px",
        "Cholesky factor (l11, l21, l22) of the Gaussian's covariance, Sigma = L L^T",
        (("columns", ["l11", "l21", "l22"]),),
    ),
    ArraySpec(
        "field/colors",
        np.float32,
        "gaussians:3",
        0.0,
        ("gaussian", "rgb"),
        "1",
        "RGB weight of the Gaussian (intensity in [0, 1] units at its centre)",
    ),
    ArraySpec("crops/content_hash", STRING, (), "", (), "", "sha256 (hex) of the image file's bytes"),
    ArraySpec("crops/reason", STRING, (), "", (), "", "why the crop failed (empty unless failed)"),
    ArraySpec(
        "crops/psnr",
        np.float32,
        (),
        float("nan"),
        (),
        "dB",
        "PSNR of the fitted field rendered at the reference scale against the crop (NaN unless done)",
    ),
    ArraySpec("crops/iterations", np.int32, (), 0, (), "1", "optimisation steps run"),
    ArraySpec(
        "crops/status",
        np.int8,
        (),
        STATUS_PENDING,
        (),
        "1",
        "fitting status of the crop",
        (("flag_values", [STATUS_PENDING, STATUS_DONE, STATUS_FAILED]), ("flag_meanings", "pending done failed")),
    ),
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
    #: Crops per shard (a multiple of chunk_size); None: chosen from the crop count at creation
    #: (`auto_shard_size`). Storage layout only: two stores that differ only here hold compatible crops.
    shard_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("crop_size", "chunk_size", "reference_scale", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.shard_size is not None:
            value = self.shard_size
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"shard_size must be a positive integer, got {value!r}")
            if value % self.chunk_size:
                raise ValueError(
                    f"shard size {value} is not a multiple of the chunk size {self.chunk_size}; "
                    f"pick a whole number of chunks per shard"
                )
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
        """The root attributes this config fixes (JSON-ready; shard_size only once it is known)."""
        out = {
            "crop_size": int(self.crop_size),
            "reference_scale": int(self.reference_scale),
            "k": int(self.k),
            "lattice": [int(v) for v in self.lattice],
            "chunk_size": int(self.chunk_size),
            "fitting": dict(self.fitting),
        }
        if self.shard_size is not None:
            out["shard_size"] = int(self.shard_size)
        return out

    @classmethod
    def from_attrs(cls, attrs: dict) -> StoreConfig:
        shard = attrs.get("shard_size")
        return cls(
            crop_size=int(attrs["crop_size"]),
            chunk_size=int(attrs["chunk_size"]),
            reference_scale=int(attrs["reference_scale"]),
            k=int(attrs["k"]),
            fitting=dict(attrs.get("fitting", {})),
            shard_size=None if shard is None else int(shard),
        )


def auto_shard_size(num_crops: int, chunk_size: int, max_shards: int = MAX_SHARDS) -> int:
    """Crops per shard: the fewest whole chunks per shard that keep the store at `max_shards` shards or fewer.

    Small stores get one chunk per shard (as many tasks as chunks); a million crops in chunks of 8 get
    125 chunks (1000 crops) per shard, i.e. 1000 files per array.
    """
    chunks = max(1, -(-int(num_crops) // int(chunk_size)))
    return int(chunk_size) * max(1, -(-chunks // int(max_shards)))
