"""Copy a schema-1 prior store (one file per chunk per array) into the current sharded layout.

Schema 1 and 2 hold the same arrays with the same meaning; version 2 adds sharding, ``shard_size``,
dimension names and units. Migration writes a new store and leaves the old one untouched: it copies the
crop plan, every per-crop array shard by shard (status last, as a chunk write does), then stage 2's
statistics and dictionary if the old store has them. Readers of this version refuse schema 1 with the
command that runs this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from prior_store.dictionary import DICTIONARY_GROUP, write_dictionary
from prior_store.schema import ARRAYS, LEGACY_SCHEMA_VERSION, RESULT_ARRAYS, STATS_GROUP, STRING, StoreConfig
from prior_store.statistics import write_statistics
from prior_store.store import PriorStore, StoreError, array_at, create_store, group_at, json_object, store_exists


def migrate_store(source: str | Path, target: str | Path, shard_size: int | None = None) -> PriorStore:
    """Copy the schema-1 store `source` into a new store `target` in the current layout; returns it."""
    if not store_exists(source):
        raise FileNotFoundError(f"prior store not found: {source}")
    if store_exists(target):
        raise FileExistsError(f"{target} already exists; give a new path for the migrated store")
    try:
        old = zarr.open_group(str(source), mode="r")
    except Exception as err:  # zarr raises several types for foreign folders
        raise StoreError(f"{source} is not a Zarr v3 prior store ({type(err).__name__}: {err})") from None
    attrs = dict(old.attrs)
    version = attrs.get("schema_version")
    if version != LEGACY_SCHEMA_VERSION:
        raise StoreError(
            f"{source} has schema {version}, not {LEGACY_SCHEMA_VERSION}; only schema "
            f"{LEGACY_SCHEMA_VERSION} stores need migrating"
        )
    missing = [spec.path for spec in ARRAYS if spec.path not in old]
    if missing:
        raise StoreError(f"{source} is not a complete schema 1 store: {missing[0]} is missing")
    config = StoreConfig.from_attrs({**attrs, "shard_size": shard_size})

    def read(path: str, start: int = 0, stop: int | None = None):
        values = np.asarray(array_at(old, path)[start:stop])
        return [str(v) for v in values] if _is_string(path) else values

    sources, boxes = read("crops/source"), read("crops/box")
    store = create_store(target, config, sources, boxes)  # all pending until each shard's status is copied
    for index in range(store.num_shards):
        start, stop = store.shard_bounds(index)
        store.write_shard(index, {path: read(path, start, stop) for path in RESULT_ARRAYS})
    # creation stamped this version's attributes; keep the original creation record beside them
    store.group.attrs.update(
        {
            "migrated_from": {
                "schema_version": version,
                "created": attrs.get("created"),
                "package_version": attrs.get("package_version"),
            }
        }
    )
    _copy_stage2(old, target)
    return PriorStore(target, zarr.open_group(str(target), mode="r"))


def _is_string(path: str) -> bool:
    return next(spec for spec in ARRAYS if spec.path == path).dtype is STRING


def _copy_stage2(old: zarr.Group, target: str | Path) -> None:
    if STATS_GROUP not in old:
        return
    stats = group_at(old, STATS_GROUP)
    if "summary" in stats.attrs:
        arrays, array_attrs = {}, {}
        for name, member in stats.members():
            if isinstance(member, zarr.Array):
                arrays[name] = np.asarray(member[...])
                array_attrs[name] = dict(member.attrs)
        write_statistics(target, json_object(stats.attrs["summary"], "the statistics summary"), arrays, array_attrs)
    if DICTIONARY_GROUP in old and "provenance" in old[DICTIONARY_GROUP].attrs:
        kernels = np.asarray(array_at(old, f"{DICTIONARY_GROUP}/kernels")[...])
        provenance = json_object(old[DICTIONARY_GROUP].attrs["provenance"], "the dictionary provenance")
        write_dictionary(target, kernels, provenance)


__all__ = ["migrate_store"]
