"""The store's ``stats/`` group: stage 2's statistics (a JSON summary plus a few small arrays).

Layout (written whole by `write_statistics`, the summary attribute last so a half-written group reads as
missing):

- ``stats`` attrs ``summary``: the JSON summary stage 2 computed (crop count, config, per-element moments,
  quantiles, fitted normals, correlation, per-content groups); see ``dgp_fitting.prior_stats``.
- ``stats/<name>`` arrays: histograms and per-crop values, each with its own attrs (ranges, columns, units).
- ``stats/dictionary``: the covariance dictionary derived from these statistics (``prior_store.dictionary``).
  Rewriting the statistics drops it, since it was derived from the old ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr

from prior_store.schema import STATS_GROUP
from prior_store.store import StoreError, group_at, json_object, open_store

#: Rows per chunk of the stats arrays along their first axis (per-crop arrays grow with the crop count).
ROWS_PER_CHUNK = 65536
#: Dimension names of the arrays stage 2 writes (others get "<name>_dim<i>"), so xarray reads the group.
DIMENSION_NAMES = {
    "histograms": ("element", "bin"),
    "joint_histograms": ("pair", "x_bin", "y_bin"),
    "quantile_histograms": ("element", "fine_bin"),
    "per_crop": ("selected_crop", "column"),
}


def dimension_names(name: str, ndim: int) -> tuple[str, ...]:
    """The dimension names of stats array `name` (known ones from DIMENSION_NAMES)."""
    known = DIMENSION_NAMES.get(name)
    if known is not None and len(known) == ndim:
        return known
    return tuple(f"{name}_dim{i}" for i in range(ndim))


class StatisticsMissingError(StoreError):
    """The store has no (complete) statistics yet."""


def write_statistics(
    path: str | Path,
    summary: dict,
    arrays: Mapping[str, np.ndarray],
    array_attrs: Mapping[str, dict] | None = None,
) -> None:
    """Replace the store's ``stats/`` group with `summary` (JSON-ready) and `arrays` (name -> ndarray)."""
    store = open_store(path, mode="r+")
    root = store.group
    if STATS_GROUP in root:
        del root[STATS_GROUP]
    group = root.create_group(STATS_GROUP)
    for name, value in arrays.items():
        value = np.ascontiguousarray(value)
        chunks = (min(max(value.shape[0], 1), ROWS_PER_CHUNK),) + value.shape[1:] if value.ndim else ()
        attrs = {"units": "1", "long_name": name.replace("_", " "), **dict((array_attrs or {}).get(name, {}))}
        array = group.create_array(
            name,
            shape=value.shape,
            chunks=chunks,
            dtype=value.dtype,
            dimension_names=dimension_names(name, value.ndim),
            attributes=attrs,
        )
        array[...] = value
    group.attrs["summary"] = summary  # last: marks the group complete


def has_statistics(path: str | Path) -> bool:
    """Whether the store holds a complete statistics group."""
    group = open_store(path).group
    return STATS_GROUP in group and "summary" in group[STATS_GROUP].attrs


def read_statistics(path: str | Path) -> tuple[dict, dict[str, np.ndarray], dict[str, dict]]:
    """(summary, arrays, array attrs) of the store's statistics, or StatisticsMissingError."""
    group = open_store(path).group
    if STATS_GROUP not in group or "summary" not in group[STATS_GROUP].attrs:
        raise StatisticsMissingError(
            f"prior store {path} has no statistics yet; run `p2g prior-stats --store {path} --out DIR` first"
        )
    stats = group_at(group, STATS_GROUP)
    arrays, attrs = {}, {}
    for name, member in stats.members():
        if isinstance(member, zarr.Array):
            arrays[name] = np.asarray(member[...])
            attrs[name] = dict(member.attrs)
    return json_object(stats.attrs["summary"], "the statistics summary"), arrays, attrs


__all__ = ["StatisticsMissingError", "has_statistics", "read_statistics", "write_statistics"]
