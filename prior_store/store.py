"""Create, open, validate and write the prior store (layout in `prior_store.schema`).

The client creates the store once from the crop plan; tasks then write whole chunks straight into it
(`PriorStore.write_chunk`), each task owning whole shards. Opening checks the schema version and the layout;
`open_or_create` also checks that an existing store was made with the same configuration and crop plan, so
reruns resume instead of mixing incompatible crops. The store object answers geometry questions (which
chunks a shard holds, which crops a storage key covers) so that callers never recompute the layout.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from prior_store.atomic_store import zarr_store
from prior_store.checksums import chunk_compressors
from prior_store.schema import (
    ARRAYS,
    LEGACY_SCHEMA_VERSION,
    PLAN_ARRAYS,
    RESULT_ARRAYS,
    SCHEMA_VERSION,
    STATS_GROUP,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_NAMES,
    STATUS_PENDING,
    STRING,
    ArraySpec,
    StoreConfig,
    auto_shard_size,
)

_SPECS = {spec.path: spec for spec in ARRAYS}


class StoreError(ValueError):
    """A store that cannot be used as asked (missing, foreign, damaged, newer schema)."""


class StoreMismatchError(StoreError):
    """An existing store made with another configuration or crop plan than the one asked for."""


class LegacyStoreError(StoreError):
    """A store in an older layout that this version reads only after migrating it."""


def array_at(group: zarr.Group, path: str) -> zarr.Array:
    """The array at `path` under `group` (zarr types a member as array or group; the layout fixes which)."""
    node = group[path]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{path} is a group where the prior store layout has an array; the store is damaged")
    return node


def group_at(group: zarr.Group, path: str) -> zarr.Group:
    """The group at `path` under `group` (zarr types a member as array or group; the layout fixes which)."""
    node = group[path]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"{path} is an array where the prior store layout has a group; the store is damaged")
    return node


def json_object(value: object, what: str) -> dict[str, Any]:
    """An attribute that the layout says holds a JSON object, as a dict (zarr types attributes as any JSON)."""
    if not isinstance(value, Mapping):
        raise StoreError(f"{what} is not a JSON object (got {type(value).__name__}); the store is damaged")
    return dict(value)


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixel2gauss")
    except PackageNotFoundError:
        return "unknown"


def plan_digest(sources: Sequence[str], boxes: np.ndarray) -> str:
    """sha256 over the crop plan (sources and boxes, in order): two runs share a store only if these match."""
    digest = hashlib.sha256()
    boxes = np.ascontiguousarray(np.asarray(boxes, dtype=np.int32).reshape(-1, 4))
    digest.update(str(len(sources)).encode())
    for source in sources:
        digest.update(b"\0" + str(source).encode("utf-8"))
    digest.update(boxes.astype("<i4").tobytes())
    return digest.hexdigest()


def _is_local(path: str | Path) -> bool:
    return "://" not in str(path)


def store_exists(path: str | Path) -> bool:
    """Whether `path` already holds something (a store, or anything else that must not be overwritten)."""
    if _is_local(path):
        return Path(path).exists()
    try:
        zarr.open_group(zarr_store(path, read_only=True), mode="r")
        return True
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return False


class PriorStore:
    """An open prior store: its config, its chunks, and whole-chunk reads and writes."""

    def __init__(self, path: str | Path, group: zarr.Group) -> None:
        self.path = str(path)
        self.group = group
        self.attrs = dict(group.attrs)
        self.config = StoreConfig.from_attrs(self.attrs)
        self.num_crops = int(array_at(group, "crops/status").shape[0])

    # ------------------------------------------------------------------ geometry
    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def num_chunks(self) -> int:
        return -(-self.num_crops // self.chunk_size)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """[start, stop) of chunk `index` along the crop axis (the last chunk may be short)."""
        return self._bounds("chunk", index, self.chunk_size, self.num_chunks)

    @property
    def shard_size(self) -> int:
        """Crops per shard (one file per array per shard; one task writes it)."""
        if self.config.shard_size is None:  # creation always records it; validation refuses a store without it
            raise StoreError(f"store {self.path} records no shard_size")
        return self.config.shard_size

    @property
    def num_shards(self) -> int:
        return -(-self.num_crops // self.shard_size)

    def shard_bounds(self, index: int) -> tuple[int, int]:
        """[start, stop) of shard `index` along the crop axis (the last shard may be short)."""
        return self._bounds("shard", index, self.shard_size, self.num_shards)

    def _bounds(self, unit: str, index: int, size: int, count: int) -> tuple[int, int]:
        """[start, stop) of the `index`-th of `count` runs of `size` crops (chunks or shards)."""
        if not 0 <= index < count:
            raise IndexError(f"{unit} {index} out of range: the store has {count} {unit}s")
        start = index * size
        return start, min(self.num_crops, start + size)

    def shard_chunks(self, index: int) -> range:
        """Indices of the chunks inside shard `index`."""
        start, stop = self.shard_bounds(index)
        return range(start // self.chunk_size, -(-stop // self.chunk_size))

    def shard_of_chunk(self, chunk: int) -> int:
        """The shard that holds chunk `chunk` (its writer owns the whole shard)."""
        return self.chunk_bounds(chunk)[0] // self.shard_size

    def shard_keys(self, index: int) -> list[str]:
        """Storage keys (relative to the store root) of shard `index` in every per-crop array."""
        self.shard_bounds(index)
        return [f"{spec.path}/c/{index}" + "/0" * len(self.config.tail_shape(spec)) for spec in ARRAYS]

    def key_crop_range(self, key: str) -> tuple[int, int]:
        """[start, stop) of the crops a storage key of a per-crop array covers, e.g. "field/chol/c/3/0/0"."""
        for spec in ARRAYS:
            prefix = f"{spec.path}/c/"
            if key.startswith(prefix):
                parts = key[len(prefix) :].split("/")
                tail = self.config.tail_shape(spec)
                if len(parts) == len(tail) + 1 and all(p.isdigit() for p in parts) and set(parts[1:]) <= {"0"}:
                    return self.shard_bounds(int(parts[0]))
        raise ValueError(
            f"{key!r} is not a storage key of a per-crop array of this store "
            "(expected <array>/c/<shard>[/0/0], e.g. field/chol/c/0/0/0)"
        )

    # ------------------------------------------------------------------ reads
    def read(self, path: str, start: int = 0, stop: int | None = None) -> np.ndarray | list[str]:
        """Crops [start, stop) of one array; string arrays come back as a list of str."""
        values = np.asarray(array_at(self.group, path)[start : self.num_crops if stop is None else stop])
        if _SPECS[path].dtype is STRING:
            return [str(v) for v in values]
        return values

    def read_chunk(self, index: int, paths: Iterable[str] | None = None) -> dict:
        start, stop = self.chunk_bounds(index)
        return {p: self.read(p, start, stop) for p in (paths or _SPECS)}

    def status(self) -> np.ndarray:
        return np.asarray(self.read("crops/status"), dtype=np.int8)

    def status_counts(self, status: np.ndarray | None = None) -> dict[str, int]:
        """Crops per status name: {"pending": n, "done": n, "failed": n} (of `status` if already read)."""
        status = self.status() if status is None else status
        counts = np.bincount(status.astype(np.int64), minlength=len(STATUS_NAMES))
        return {name: int(counts[code]) for code, name in STATUS_NAMES.items()}

    def chunk_status_counts(self, status: np.ndarray | None = None) -> np.ndarray:
        """(num_chunks, 3) crops per status (pending, done, failed) in each chunk."""
        status = (self.status() if status is None else status).astype(np.int64)
        chunk_of = np.arange(self.num_crops) // self.chunk_size
        width = len(STATUS_NAMES)
        counts = np.bincount(chunk_of * width + status, minlength=self.num_chunks * width)
        return counts.reshape(self.num_chunks, width)

    def psnr_summary(self, status: np.ndarray | None = None) -> dict[str, float | int]:
        """PSNR statistics (dB) over the done crops: count, median, p5, p95, mean, min, max."""
        status = self.status() if status is None else status
        psnr = np.asarray(self.read("crops/psnr"), dtype=np.float64)[status == STATUS_DONE]
        psnr = psnr[np.isfinite(psnr)]
        if psnr.size == 0:
            return {"count": 0}
        return {
            "count": int(psnr.size),
            "median": float(np.median(psnr)),
            "p5": float(np.percentile(psnr, 5)),
            "p95": float(np.percentile(psnr, 95)),
            "mean": float(psnr.mean()),
            "min": float(psnr.min()),
            "max": float(psnr.max()),
        }

    def failure_reasons(self, status: np.ndarray | None = None) -> dict[str, int]:
        """How many crops failed for each reason."""
        failed = np.flatnonzero((self.status() if status is None else status) == STATUS_FAILED)
        counts: dict[str, int] = {}
        if failed.size == 0:
            return counts
        reasons = array_at(self.group, "crops/reason")
        for start, stop in _runs(failed):  # read only the chunks that hold failed crops
            for reason in np.asarray(reasons[start:stop])[np.isin(np.arange(start, stop), failed)]:
                counts[str(reason)] = counts.get(str(reason), 0) + 1
        return counts

    def stats_members(self) -> list[str]:
        """Paths of the arrays stage 2 wrote under stats/ (empty before it ran)."""
        if STATS_GROUP not in self.group:
            return []
        stats = group_at(self.group, STATS_GROUP)
        return sorted(
            f"{STATS_GROUP}/{name}" for name, member in stats.members(max_depth=None) if isinstance(member, zarr.Array)
        )

    # ------------------------------------------------------------------ writes
    def write_chunk(self, index: int, values: Mapping[str, np.ndarray | Sequence[str]]) -> None:
        """Write chunk `index` of every result array (RESULT_ARRAYS), status last.

        One call owns the whole chunk: all result arrays must be given, each with exactly the chunk's crop
        count, and a retried task rewrites it whole. The caller must own the chunk's shard (one writer per
        shard: `shard_of_chunk`), since writing a chunk replaces its shard's file in every array.
        """
        self._write_range(*self.chunk_bounds(index), values, "chunk")

    def write_shard(self, index: int, values: Mapping[str, np.ndarray | Sequence[str]]) -> None:
        """Write shard `index` of every result array at once (each file once), status last: for copies and
        synthetic stores; the job writes chunk by chunk so that a kill loses only the chunk in flight."""
        self._write_range(*self.shard_bounds(index), values, "shard")

    def _write_range(self, start: int, stop: int, values: Mapping[str, np.ndarray | Sequence[str]], what: str) -> None:
        missing = [p for p in RESULT_ARRAYS if p not in values]
        extra = [p for p in values if p not in RESULT_ARRAYS]
        if missing or extra:
            raise ValueError(f"{what} write needs exactly {list(RESULT_ARRAYS)}; missing {missing}, unexpected {extra}")
        prepared = {}
        for path in RESULT_ARRAYS:
            spec = _SPECS[path]
            prepared[path] = _as_array(values[path], spec, (stop - start,) + self.config.tail_shape(spec), path, what)
        for path in RESULT_ARRAYS:  # spec order: status last; every key stored, so a missing one is damage
            array_at(self.group, path).with_config({"write_empty_chunks": True})[start:stop] = prepared[path]

    # ------------------------------------------------------------------ checks
    def check_matches(
        self,
        config: StoreConfig,
        digest: str | None = None,
        sources: Sequence[str] | None = None,
        boxes: np.ndarray | None = None,
    ) -> None:
        """Refuse (StoreMismatchError) when this store was made with another config or crop plan (with the
        plan's `sources` and `boxes`, the refusal names the images that differ)."""
        mine, theirs = self.config.attrs(), config.attrs()
        for key, hint in (
            ("crop_size", "--crop"),
            ("reference_scale", "the reference scale"),
            ("lattice", "lattice (h_lr, w_lr, k)"),
            ("chunk_size", "--batch"),
        ):
            if mine[key] != theirs[key]:
                raise StoreMismatchError(
                    f"store {self.path} was made with {key} {_fmt(mine[key])}, not {_fmt(theirs[key])}; "
                    f"use the same {hint} to resume it, or a new --store"
                )
        if mine["fitting"] != theirs["fitting"]:
            keys = sorted(set(mine["fitting"]) | set(theirs["fitting"]))
            diff = [
                f"{k} {_fmt(mine['fitting'].get(k))} (asked {_fmt(theirs['fitting'].get(k))})"
                for k in keys
                if mine["fitting"].get(k) != theirs["fitting"].get(k)
            ]
            raise StoreMismatchError(
                f"store {self.path} was fitted with other settings: {', '.join(diff)}; "
                "use the same settings to resume it, or a new --store"
            )
        if digest is not None and self.attrs.get("plan_digest") != digest:
            what = "different images, crop layout or seed"
            if sources is not None and boxes is not None:
                stored = [str(v) for v in self.read("crops/source")]
                what = plan_difference(stored, np.asarray(self.read("crops/box")), sources, boxes) or what
            raise StoreMismatchError(
                f"store {self.path} holds another crop plan ({what}); "
                "rerun with the same images and crop options to resume it, or use a new --store"
            )


def plan_difference(
    stored_sources: Sequence[str], stored_boxes: np.ndarray, sources: Sequence[str], boxes: np.ndarray
) -> str:
    """Which images make two crop plans differ, in words: gone, new, or giving other crops (resized or
    replaced); '' when only the order or the seed differs."""

    def by_source(names: Sequence[str], rows: np.ndarray) -> dict[str, list[tuple[int, ...]]]:
        out: dict[str, list[tuple[int, ...]]] = {}
        for name, row in zip(names, np.asarray(rows, dtype=np.int64).reshape(-1, 4).tolist()):
            out.setdefault(str(name), []).append(tuple(row))
        return out

    before, now = by_source(stored_sources, stored_boxes), by_source(sources, boxes)
    parts = []
    for names, text in (
        (sorted(set(before) - set(now)), "no longer among the images given (removed, renamed or unreadable)"),
        (
            sorted(name for name in set(before) & set(now) if before[name] != now[name]),
            "cut into other crops than when the store was planned (resized or replaced)",
        ),
        (sorted(set(now) - set(before)), "new since the store was planned"),
    ):
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            parts.append(f"{shown}: {text}")
    return "; ".join(parts)


def _runs(indices: np.ndarray, gap: int = 4096) -> list[tuple[int, int]]:
    """[start, stop) ranges covering sorted `indices`, merging ranges closer than `gap`."""
    out: list[tuple[int, int]] = []
    for i in indices.tolist():
        if out and i - out[-1][1] < gap:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _fmt(value) -> str:
    return json.dumps(value, sort_keys=True)


def _as_array(value, spec: ArraySpec, shape: tuple[int, ...], path: str, what: str = "chunk") -> np.ndarray:
    if spec.dtype is STRING:
        arr = np.asarray([str(v) for v in value], dtype=np.dtypes.StringDType())
    else:
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and np.dtype(spec.dtype).kind in "iu":
            raise ValueError(f"{path} needs integers, got {arr.dtype}")
        arr = arr.astype(spec.dtype)
    if arr.shape != shape:
        raise ValueError(f"{path} for this {what} must have shape {shape}, got {arr.shape}")
    return arr


def create_store(
    path: str | Path,
    config: StoreConfig,
    sources: Sequence[str],
    boxes: np.ndarray,
    status: np.ndarray | None = None,
    reasons: Sequence[str] | None = None,
) -> PriorStore:
    """Make a new store for a crop plan (sources and [top, left, height, width] boxes), all crops pending
    unless `status`/`reasons` mark some failed already (files that could not be planned)."""
    if store_exists(path):
        raise FileExistsError(f"{path} already exists; open it to resume, or choose a new --store path")
    count = len(sources)
    if count == 0:
        raise ValueError("a prior store needs at least one crop; the crop plan is empty")
    boxes = np.asarray(boxes, dtype=np.int32).reshape(count, 4)
    status = np.full(count, STATUS_PENDING, np.int8) if status is None else np.asarray(status, np.int8)
    reasons = [""] * count if reasons is None else [str(r) for r in reasons]
    if status.shape != (count,) or len(reasons) != count:
        raise ValueError(f"status and reasons must hold one entry per crop ({count})")
    if config.shard_size is None:
        config = dataclasses.replace(config, shard_size=auto_shard_size(count, config.chunk_size))
    group = zarr.open_group(zarr_store(path), mode="w-")
    arrays = {spec.path: create_per_crop_array(group, spec, config, count) for spec in ARRAYS}
    arrays["crops/source"][:] = np.asarray(list(sources), dtype=np.dtypes.StringDType())
    arrays["crops/box"][:] = boxes
    arrays["crops/reason"][:] = np.asarray(reasons, dtype=np.dtypes.StringDType())
    # every status key stored, pending-only ones too: a chunk write that fails after the other arrays (a full
    # disk) then leaves its shard's previous status, never a missing key that verification calls damage
    arrays["crops/status"].with_config({"write_empty_chunks": True})[:] = status
    # attrs last: a store without schema_version is an interrupted creation and is refused on open
    group.attrs.update(
        {
            "schema_version": SCHEMA_VERSION,
            **config.attrs(),
            "plan_digest": plan_digest(list(sources), boxes),
            "package_version": package_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )
    return PriorStore(path, group)


def create_per_crop_array(group: zarr.Group, spec: ArraySpec, config: StoreConfig, count: int) -> zarr.Array:
    """One per-crop array of the layout: sharded by shard_size crops (inner chunks of chunk_size crops) for the
    per-Gaussian arrays, chunked by shard_size crops otherwise; dimension names and units attached."""
    if config.shard_size is None:
        raise ValueError("a per-crop array needs a config whose shard_size is chosen (see auto_shard_size)")
    tail = config.tail_shape(spec)
    shard = (config.shard_size,) + tail
    chunks = (config.chunk_size,) + tail if spec.sharded else shard
    return group.create_array(
        spec.path,
        shape=(count,) + tail,
        chunks=chunks,
        shards=shard if spec.sharded else None,
        dtype=spec.dtype,
        fill_value=spec.fill,
        dimension_names=spec.dimension_names,
        attributes=spec.attributes(),
        compressors=chunk_compressors(),
    )


def open_store(path: str | Path, mode: Literal["r", "r+"] = "r") -> PriorStore:
    """Open and validate a store (mode "r" or "r+"); clear errors for missing, foreign or newer stores."""
    if mode not in ("r", "r+"):
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    if not store_exists(path):
        raise FileNotFoundError(f"prior store not found: {path}")
    try:
        group = zarr.open_group(zarr_store(path, read_only=mode == "r"), mode=mode)
    except Exception as err:  # zarr raises several types for foreign folders
        raise StoreError(f"{path} is not a Zarr v3 prior store ({type(err).__name__}: {err})") from None
    if group.attrs.get("schema_version") == LEGACY_SCHEMA_VERSION:
        raise LegacyStoreError(
            f"{path} is a schema {LEGACY_SCHEMA_VERSION} prior store (one file per chunk, no dimension names); "
            f"this pixel2gauss reads schema {SCHEMA_VERSION}: copy it with `p2g migrate-store {path} NEW_STORE` "
            "and use NEW_STORE"
        )
    problems = validate_group(group)
    if problems:
        raise StoreError(f"{path} is not a valid prior store: {problems[0]}")
    return PriorStore(path, group)


def open_or_create(
    path: str | Path,
    config: StoreConfig,
    sources: Sequence[str],
    boxes: np.ndarray,
    status: np.ndarray | None = None,
    reasons: Sequence[str] | None = None,
) -> tuple[PriorStore, bool]:
    """(store, created): open an existing store made with the same config and plan, or create it."""
    if store_exists(path):
        store = open_store(path, mode="r+")
        store.check_matches(config, plan_digest(list(sources), np.asarray(boxes, dtype=np.int32)), sources, boxes)
        return store, False
    return create_store(path, config, sources, boxes, status, reasons), True


def validate_group(group: zarr.Group) -> list[str]:
    """Everything wrong with a group as a prior store, most fundamental first (empty when valid)."""
    attrs = dict(group.attrs)
    version = attrs.get("schema_version")
    if version is None:
        return ["no schema_version attribute (not a pixel2gauss prior store, or its creation was interrupted)"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        return [
            f"it was written by a newer pixel2gauss (schema {version}; this version reads up to "
            f"{SCHEMA_VERSION}); upgrade pixel2gauss to read it"
        ]
    problems = []
    if version != SCHEMA_VERSION:
        return [f"schema {version} is not this version's layout (schema {SCHEMA_VERSION})"]
    for key in ("crop_size", "reference_scale", "k", "lattice", "chunk_size", "shard_size", "fitting"):
        if key not in attrs:
            problems.append(f"root attribute {key!r} is missing")
    if problems:
        return problems
    try:
        config = StoreConfig.from_attrs(attrs)
    except (ValueError, TypeError, KeyError) as err:
        return [f"root attributes are inconsistent: {err}"]
    lattice = attrs["lattice"]
    if not isinstance(lattice, Sequence) or list(lattice) != list(config.lattice):
        problems.append(
            f"lattice {attrs['lattice']} does not match crop_size/reference_scale/k ({list(config.lattice)})"
        )
    count = None
    for spec in ARRAYS:
        if spec.path not in group:
            problems.append(f"array {spec.path} is missing")
            continue
        arr = group[spec.path]
        if not isinstance(arr, zarr.Array):
            problems.append(f"{spec.path} is not an array")
            continue
        count = arr.shape[0] if count is None else count
        want = (count,) + config.tail_shape(spec)
        shards = arr.shards[0] if arr.shards else arr.chunks[0]
        inner = arr.chunks[0] if spec.sharded else config.chunk_size
        if arr.shape != want:
            problems.append(f"{spec.path} has shape {arr.shape}, expected {want}")
        elif shards != config.shard_size or inner != config.chunk_size:
            problems.append(
                f"{spec.path} has shards of {shards} crops in chunks of {inner}, expected "
                f"{config.shard_size} in chunks of {config.chunk_size}"
            )
    return problems


__all__ = [
    "PLAN_ARRAYS",
    "RESULT_ARRAYS",
    "LegacyStoreError",
    "PriorStore",
    "StoreError",
    "StoreMismatchError",
    "array_at",
    "create_per_crop_array",
    "create_store",
    "group_at",
    "json_object",
    "open_or_create",
    "open_store",
    "plan_difference",
    "plan_digest",
    "store_exists",
    "validate_group",
]
