"""Find and mend damaged storage keys of a prior store: missing, undecodable, or holding non-finite results.

Works over storage keys, whatever they are: a chunk file, or a shard file when arrays are sharded (the
array's metadata chunk grid is the grid of stored objects either way), each mapped to the crops it covers
along the leading crop axis. Zarr reads a missing key as the fill value, so absence is judged from what the
crops should hold: every array but ``crops/reason`` holds non-fill values for a done crop, and
``crops/source`` for every crop; a missing status key is damage when other arrays hold results for its crops.
Every key is read once (Dask, threads) to prove it decodes; stores made with `prior_store.checksums` also
catch bytes changed inside a compressed frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import zarr
from zarr.core.chunk_grids import RegularChunkGrid

from prior_store.schema import ARRAYS, STATUS_DONE, STATUS_PENDING, STRING
from prior_store.store import PriorStore, StoreError, array_at, open_store

_SPECS = {spec.path: spec for spec in ARRAYS}
#: Arrays whose values for a done crop never equal the fill value (Cholesky diagonals >= chol_min, a finite
#: PSNR, status 1, a crop-sized box), so zarr always stored their key: missing with done crops is damage.
#: Other arrays (zero colours of a black crop, zero iterations, empty hashes of synthetic stores) may hold
#: only fill values, which zarr does not store, unless the store says it stores every chunk (below).
NEVER_FILL_WHEN_DONE = ("crops/source", "crops/box", "field/chol", "crops/psnr", "crops/status")
#: Arrays written for every crop when the store is created.
ALWAYS_STORED = ("crops/source",)
#: Group whose attrs hold the flag `every_chunk_stored` (stores created by `create_store_atomically`, whose
#: chunk writes keep fill-only keys) and `prior_store.file_record`'s file record.
INTEGRITY_GROUP = "integrity"


class StoreDamagedError(StoreError):
    """A store with missing or unreadable chunks: results computed from it would be wrong."""


@dataclass(frozen=True)
class Damage:
    """One damaged storage key and the crops [start, stop) it covers."""

    key: str
    array: str
    start: int
    stop: int
    problem: str

    def line(self) -> str:
        return f"{self.key} (crops {self.start}-{self.stop - 1}): {self.problem}"


@dataclass
class IntegrityReport:
    """What `verify_store` found: keys checked and every damaged one."""

    store: str
    crops: int
    keys_checked: int
    damage: list[Damage] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damage

    def crop_ranges(self) -> list[tuple[int, int]]:
        """Damaged crop ranges, merged and sorted."""
        return merge_ranges((d.start, d.stop) for d in self.damage)

    def lines(self) -> list[str]:
        if self.ok:
            return [f"verified {self.store}: {self.keys_checked} storage keys, {self.crops} crops, no damage"]
        crops = sum(stop - start for start, stop in self.crop_ranges())
        out = [f"damaged {self.store}: {len(self.damage)} of {self.keys_checked} storage keys, {crops} crops"]
        out += [f"  {d.line()}" for d in self.damage]
        out.append(
            "  mend: rerun the p2g fit-prior command that made the store (same images and options); "
            "it refits these crops"
        )
        return out

    def one_line(self) -> str:
        """The damage in one line (for a refusal)."""
        shown = "; ".join(d.line() for d in self.damage[:3])
        more = f"; and {len(self.damage) - 3} more" if len(self.damage) > 3 else ""
        return (
            f"store {self.store} has {len(self.damage)} damaged storage key(s): {shown}{more}; rerun the "
            "p2g fit-prior command that made it (same images and options) to refit those crops, "
            f"`p2g info --verify {self.store}` lists them all"
        )

    def as_dict(self) -> dict:
        return {
            "store": self.store,
            "crops": self.crops,
            "keys_checked": self.keys_checked,
            "ok": self.ok,
            "damage": [d.__dict__ for d in self.damage],
            "damaged_crop_ranges": self.crop_ranges(),
        }


def merge_ranges(ranges) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, stop in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


@dataclass(frozen=True)
class _Unit:
    array: str
    key: str  # relative to the store's root group, for messages
    store_key: str  # as listed by the underlying zarr store
    region: tuple[slice, ...]

    @property
    def start(self) -> int:
        return self.region[0].start

    @property
    def stop(self) -> int:
        return self.region[0].stop


def _key_shape(arr: zarr.Array) -> tuple[int, ...]:
    """Shape of the region one storage key of `arr` holds (a shard when sharded, else a chunk)."""
    grid = arr.metadata.chunk_grid
    if not isinstance(grid, RegularChunkGrid):
        raise StoreError(f"{arr.path} has a {type(grid).__name__}; prior store arrays have regular chunk grids")
    return tuple(grid.chunk_shape)


def storage_units(arr: zarr.Array, name: str) -> list[_Unit]:
    """Every stored object of `arr` (chunk, or shard when sharded) with the region it holds."""
    meta = arr.metadata
    outer = _key_shape(arr)
    units = []
    for coords in meta.chunk_grid.all_chunk_coords(arr.shape):
        encoded = meta.encode_chunk_key(tuple(coords))
        region = tuple(slice(c * s, min(n, (c + 1) * s)) for c, s, n in zip(coords, outer, arr.shape))
        units.append(_Unit(name, f"{name}/{encoded}", f"{arr.store_path.path}/{encoded}".lstrip("/"), region))
    return units


def _stored_keys(arr: zarr.Array) -> set[str]:
    from zarr.core.sync import sync

    store, prefix = arr.store_path.store, arr.store_path.path.rstrip("/") + "/"

    async def listing():
        return [key async for key in store.list_prefix(prefix.lstrip("/"))]

    return set(sync(listing()))


def _read_unit(arr: zarr.Array, unit: _Unit) -> dict:
    try:
        values = arr[unit.region]
    except Exception as err:  # zarr and its codecs raise many types for bad bytes
        text = (str(err).strip() or type(err).__name__).splitlines()[0]
        if "checksum" in text.lower():
            text = "checksum mismatch"
        return {"error": f"undecodable ({type(err).__name__}: {text[:100]})"}
    if unit.array == "crops/status":
        return {"status": np.asarray(values, dtype=np.int64)}
    if _SPECS[unit.array].dtype is not STRING and np.dtype(_SPECS[unit.array].dtype).kind == "f":
        flat = np.asarray(values).reshape(unit.stop - unit.start, -1)
        return {"finite": np.isfinite(flat).all(axis=1)}
    return {}


def verify_store(store: str | PriorStore, workers: int | None = None) -> IntegrityReport:
    """Read every storage key of every per-crop array (in parallel) and report the damaged ones."""
    import dask

    opened = store if isinstance(store, PriorStore) else open_store(store)
    strict = every_chunk_stored(opened)
    count = opened.num_crops
    arrays = {spec.path: array_at(opened.group, spec.path) for spec in ARRAYS}
    units = {name: storage_units(arr, name) for name, arr in arrays.items()}
    stored = set()
    for arr in arrays.values():
        stored |= _stored_keys(arr)
    tasks = [dask.delayed(_read_unit, pure=False)(arrays[name], unit) for name in units for unit in units[name]]
    results = iter(dask.compute(*tasks, scheduler="threads", num_workers=workers))
    read = {name: [(unit, next(results)) for unit in units[name]] for name in units}

    damage: list[Damage] = []

    def hurt(unit: _Unit, problem: str) -> None:
        damage.append(Damage(unit.key, unit.array, unit.start, unit.stop, problem))

    status = np.zeros(count, dtype=np.int64)
    for unit, result in read["crops/status"]:
        if "error" in result:
            hurt(unit, result["error"])
        else:
            status[unit.region[0]] = result["status"]
    done = status == STATUS_DONE
    holds_results = np.zeros(count, dtype=bool)  # another result array has a stored key over the crop
    for name, pairs in read.items():
        if name in ("crops/status", "crops/source", "crops/box"):
            continue
        for unit, _ in pairs:
            if unit.store_key in stored:
                holds_results[unit.region[0]] = True
    for name, pairs in read.items():
        for unit, result in pairs:
            crops = unit.region[0]
            present = unit.store_key in stored
            if name == "crops/status":
                if not present and holds_results[crops].any():
                    hurt(unit, "missing (other arrays hold fitted results for these crops)")
                continue
            if "error" in result:
                hurt(unit, result["error"])
            elif not present and (
                name in ALWAYS_STORED or (done[crops].any() and (strict or name in NEVER_FILL_WHEN_DONE))
            ):
                held = "every crop" if name in ALWAYS_STORED else f"{int(done[crops].sum())} done crop(s)"
                hurt(unit, f"missing (should hold values of {held})")
            elif present and "finite" in result and not result["finite"][done[crops]].all():
                bad = np.flatnonzero(done[crops] & ~result["finite"]) + unit.start
                hurt(
                    unit,
                    f"non-finite values for done crop(s) {', '.join(str(int(i)) for i in bad[:5])}"
                    + (" ..." if bad.size > 5 else ""),
                )
    damage.sort(key=lambda d: (d.start, d.array))
    checked = sum(len(u) for u in units.values())
    return IntegrityReport(str(opened.path), count, checked, damage)


def every_chunk_stored(store: PriorStore) -> bool:
    """Whether every chunk write of this store kept its keys (so any missing key of a done crop is damage)."""
    if INTEGRITY_GROUP not in store.group:
        return False
    return bool(dict(store.group[INTEGRITY_GROUP].attrs).get("every_chunk_stored", False))


def mark_every_chunk_stored(store: PriorStore) -> None:
    store.group.require_group(INTEGRITY_GROUP).attrs.update({"every_chunk_stored": True})


#: Child group of INTEGRITY_GROUP whose attrs record the last full verification (its own zarr.json, so recording
#: it never rewrites the file record beside it).
VERIFIED_GROUP = f"{INTEGRITY_GROUP}/last_verified"


def record_verification(store: PriorStore, report: IntegrityReport, by: str, mended: bool = False) -> None:
    """Remember when the store was last read whole, what was found and whether it was mended (`p2g info` shows
    it). The caller holds the store's lock and opened it for writing."""
    import datetime as _dt

    store.group.require_group(VERIFIED_GROUP).attrs.update(
        {
            "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "by": by,
            "keys_checked": report.keys_checked,
            "damaged_keys": len(report.damage),
            "mended": bool(mended and report.damage),
        }
    )


def last_verification(store: PriorStore) -> dict | None:
    """What `record_verification` last stored, or None for a store never verified whole."""
    if VERIFIED_GROUP not in store.group:
        return None
    attrs = dict(store.group[VERIFIED_GROUP].attrs)
    return attrs if "at" in attrs else None


def require_intact(store: str | PriorStore, workers: int | None = None) -> IntegrityReport:
    """Refuse (StoreDamagedError, one line naming the keys and the mending command) a damaged store."""
    report = verify_store(store, workers)
    if not report.ok:
        raise StoreDamagedError(report.one_line())
    return report


def replace_region(array: zarr.Array, start: int, stop: int, value: np.ndarray) -> None:
    """Write crops [start, stop) (whole storage keys) of `array` without reading or deleting what is stored.

    The keys are encoded in memory by an array of the same metadata, then each replaces its file whole
    (`prior_store.atomic_store`): a damaged key is never read to be merged, and a write that fails (a full
    disk) leaves the previous version in place. Fill-only keys are stored too, so a key is never absent.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync
    from zarr.storage import MemoryStore

    prototype = default_buffer_prototype()
    scratch = MemoryStore()
    for key, buffer in array.metadata.to_buffer_dict(prototype).items():
        sync(scratch.set(key, buffer))
    staged = zarr.open_array(scratch, mode="r+").with_config({"write_empty_chunks": True})
    staged[start:stop] = value
    step = _key_shape(array)[0]
    if start % step or (stop % step and stop != array.shape[0]):
        raise ValueError(f"crops {start}-{stop} of {array.path} do not cover whole storage keys of {step} crops")
    tail = (0,) * (len(array.shape) - 1)
    for index in range(start // step, -(-stop // step)):
        encoded = array.metadata.encode_chunk_key((index, *tail))
        data = sync(scratch.get(encoded, prototype))
        if data is None:
            raise StoreError(f"{array.path}/{encoded} was not encoded")
        sync(array.store_path.store.set(f"{array.store_path.path}/{encoded}".lstrip("/"), data))


def reset_crops(
    store: PriorStore,
    ranges: Sequence[tuple[int, int]],
    sources: Sequence[str],
    boxes: np.ndarray,
    status: np.ndarray,
    reasons: Sequence[str],
) -> list[tuple[int, int]]:
    """Rewrite crops [start, stop) of every array as freshly planned (pending unless planning failed them).

    Ranges are widened to whole storage keys of every array, so each damaged key is replaced without being
    read (`replace_region`: never deleted first, so a failed write keeps the previous version). The crops are
    marked pending first and given their planned status last: a reset cut short (a full disk, a kill) leaves
    them pending, to be refitted, never done over reset values. Returns the ranges reset.
    """
    arrays = {spec.path: array_at(store.group, spec.path) for spec in ARRAYS}
    widened = []
    for start, stop in ranges:
        for _ in range(2):  # arrays may store different numbers of crops per key
            for array in arrays.values():
                step = _key_shape(array)[0]
                start, stop = start - start % step, min(store.num_crops, -(-stop // step) * step)
        widened.append((start, stop))
    widened = merge_ranges(widened)
    tail = {spec.path: store.config.tail_shape(spec) for spec in ARRAYS}
    for start, stop in widened:
        planned = {
            "crops/source": np.asarray([str(s) for s in sources[start:stop]], dtype=np.dtypes.StringDType()),
            "crops/box": np.asarray(boxes[start:stop], dtype=np.int32),
            "crops/reason": np.asarray([str(r) for r in reasons[start:stop]], dtype=np.dtypes.StringDType()),
            "crops/status": np.asarray(status[start:stop], dtype=np.int8),
        }
        pending = np.full(stop - start, STATUS_PENDING, dtype=np.int8)
        replace_region(arrays["crops/status"], start, stop, pending)  # invalidate first
        for spec in ARRAYS:  # schema order: status last
            value = planned.get(spec.path)
            if value is None:
                shape = (stop - start,) + tail[spec.path]
                value = (
                    np.full(shape, spec.fill, dtype=np.dtypes.StringDType())
                    if spec.dtype is STRING
                    else np.full(shape, spec.fill, dtype=spec.dtype)
                )
            replace_region(arrays[spec.path], start, stop, value)
    return widened


__all__ = [
    "INTEGRITY_GROUP",
    "VERIFIED_GROUP",
    "Damage",
    "IntegrityReport",
    "StoreDamagedError",
    "every_chunk_stored",
    "last_verification",
    "mark_every_chunk_stored",
    "merge_ranges",
    "record_verification",
    "replace_region",
    "require_intact",
    "reset_crops",
    "storage_units",
    "verify_store",
]
