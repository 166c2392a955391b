"""Create a store in a hidden sibling folder and rename it into place, so creation is all or nothing.

An interrupted or failed creation then leaves no half-made store at the path (which every later run would
refuse); the caller holds the store's lock (`prior_store.lock`), so leftovers of earlier attempts are removed.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prior_store.integrity import mark_every_chunk_stored
from prior_store.schema import StoreConfig
from prior_store.store import PriorStore, create_store, open_store, store_exists


def create_store_atomically(
    path: str | os.PathLike,
    config: StoreConfig,
    sources: Sequence[str],
    boxes: np.ndarray,
    status: np.ndarray | None = None,
    reasons: Sequence[str] | None = None,
) -> PriorStore:
    """`create_store`, but the store appears at `path` only once it is complete (local paths)."""
    if "://" in str(path):
        store = create_store(str(path), config, sources, boxes, status, reasons)
        mark_every_chunk_stored(store)
        return store
    path = Path(path)
    if store_exists(path):
        raise FileExistsError(f"{path} already exists; open it to resume, or choose a new --store path")
    pattern = glob.escape(str(path.with_name(f".{path.name}.creating-"))) + "*"
    for leftover in glob.glob(pattern):
        shutil.rmtree(leftover, ignore_errors=True)
    scratch = path.with_name(f".{path.name}.creating-{os.getpid()}")
    try:
        mark_every_chunk_stored(create_store(scratch, config, sources, boxes, status, reasons))
        os.rename(scratch, path)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return open_store(path, mode="r+")


__all__ = ["create_store_atomically"]
