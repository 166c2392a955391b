"""What a fit-prior job fits and into what: the corpus, how it is cropped and fitted, and the store's layout.

One value shared by the job (`prior_job.run_prior_job`) and the creation or reopening of its store
(`prior_job.prepare_store`), so that the two cannot drift apart. The batch is not part of it: a job resolves it
once (`batch_size.resolve_batch`: from the store, the request or a worker's device) and passes the number on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from dgp_fitting.fitting import FitConfig
from prior_store import StoreConfig


@dataclass(frozen=True)
class JobPlan:
    """The images (files or folders), the store, the crop grid (or random crops per image), the fitting settings
    (their seed also draws the random crops), and the store's shard size (None: picked from the crop count) and
    lattice (reference scale, k)."""

    images: Sequence[str | os.PathLike]
    store_path: str | os.PathLike
    crop: int = 256
    stride: int | None = None
    crops_per_image: int | None = None
    fit: FitConfig = field(default_factory=FitConfig)
    shard_size: int | None = None
    reference_scale: int = 4
    k: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))  # frozen all the way: a caller's list may change

    def store_config(self, batch: int) -> StoreConfig:
        """The config a store of this plan is created with, or must match when it is reopened."""
        return StoreConfig(
            crop_size=self.crop,
            chunk_size=batch,
            reference_scale=self.reference_scale,
            k=self.k,
            fitting=self.fit.as_dict(),
            shard_size=self.shard_size,
        )
