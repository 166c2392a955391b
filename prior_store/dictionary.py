"""The covariance dictionary in the prior store (``stats/dictionary``), with its provenance, and `.npy` export.

A dictionary is K Cholesky triplets (l11, l21, l22), float32, in HR pixels at the store's reference scale
(LR px times ``reference_scale``), like the official 730-entry one (HR px at x4). Layout:

- ``stats/dictionary/kernels``: (K, 3) float32.
- ``stats/dictionary`` attrs ``provenance``: at least ``reference_scale``, ``method``, ``size``,
  ``content_hash``, ``crop_count``, ``quantiles`` (fractions, e.g. [0.005, 0.995]) and ``seed`` (None for a
  grid); written last, so a half-written dictionary reads as missing.

``content_hash`` is sha256 over the float32 little-endian kernels and the float64 reference scale, the one
definition the model's loader and checkpoints use too, so a checkpoint, a store and an exported file that hold
the same dictionary carry the same hash.

Export (`export_npy`) writes a plain ``.npy`` of shape (K, 3) float32 in HR px at reference scale 4, the
scale the model's loader assumes for ``.npy`` files (kernels of a store at another scale are converted:
LR px x 4), plus a sidecar ``.json`` with the provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from prior_store.schema import STATS_GROUP
from prior_store.store import StoreError, array_at, json_object, open_store

DICTIONARY_GROUP = f"{STATS_GROUP}/dictionary"
KERNELS = f"{DICTIONARY_GROUP}/kernels"
#: Provenance keys every stored dictionary has (the model's loader relies on them).
REQUIRED_PROVENANCE = ("reference_scale", "method", "size", "content_hash", "crop_count", "quantiles", "seed")
#: Reference scale of exported `.npy` files (what the model's `load_dictionary` assumes for them:
#: sr_model/networks/covariance_dictionary.py).
NPY_REFERENCE_SCALE = 4


class DictionaryMissingError(StoreError):
    """The store has no dictionary yet."""


class InvalidDictionaryError(StoreError):
    """Kernels that are not a usable (K, 3) dictionary."""


def content_hash(kernels: np.ndarray, reference_scale: float) -> str:
    """sha256 of the float32 little-endian kernels and the float64 reference scale ("sha256:<hex>").

    Takes a torch tensor too (any device), so that the model's dictionary hashes with this one definition.
    """
    if hasattr(kernels, "detach"):
        kernels = kernels.detach().cpu().numpy()
    data = np.ascontiguousarray(np.asarray(kernels, dtype="<f4"))
    digest = hashlib.sha256(data.tobytes())
    digest.update(np.float64(reference_scale).astype("<f8").tobytes())
    return "sha256:" + digest.hexdigest()


def check_kernels(kernels: np.ndarray, what: str = "") -> np.ndarray:
    """(K, 3) finite float32 with l11, l22 >= 0 (so every Sigma = L L^T is positive semi-definite).

    `what` (a file or store name) leads the error message when given.
    """
    lead = f"{what}: " if what else ""
    array = np.asarray(kernels)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] < 1:
        raise InvalidDictionaryError(f"{lead}a dictionary must have shape (K, 3) = (l11, l21, l22), got {array.shape}")
    if array.dtype.kind != "f":
        raise InvalidDictionaryError(f"{lead}a dictionary must hold floats, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InvalidDictionaryError(f"{lead}the dictionary contains NaN or inf")
    if (array[:, 0] < 0).any() or (array[:, 2] < 0).any():
        raise InvalidDictionaryError(f"{lead}dictionary diagonals l11 and l22 must be >= 0")
    return array


def write_dictionary(store_path: str | Path, kernels: np.ndarray, provenance: dict) -> dict:
    """Store `kernels` (K, 3) in HR px at the store's reference scale with `provenance`; returns the record.

    ``reference_scale``, ``size`` and ``content_hash`` are filled in here from the store and the kernels;
    the other required keys (method, crop_count, quantiles, seed) must be given.
    """
    store = open_store(store_path, mode="r+")
    kernels = check_kernels(kernels)
    missing = [key for key in ("method", "crop_count", "quantiles", "seed") if key not in provenance]
    if missing:
        raise ValueError(f"dictionary provenance lacks {missing}")
    scale = store.config.reference_scale
    if "reference_scale" in provenance and float(provenance["reference_scale"]) != float(scale):
        raise ValueError(
            f"dictionary is at reference scale {provenance['reference_scale']}, but store "
            f"{store_path} is at x{scale}; convert it (LR px x {scale}) first"
        )
    record = dict(provenance)
    record.update(
        reference_scale=scale,
        size=int(kernels.shape[0]),
        content_hash=content_hash(kernels, scale),
        units=f"HR px at reference scale x{scale} (LR px x {scale})",
    )
    record = json.loads(json.dumps(record, allow_nan=False))  # JSON-ready, or a clear error here
    root = store.group
    if STATS_GROUP not in root:
        root.create_group(STATS_GROUP)
    if DICTIONARY_GROUP in root:
        del root[DICTIONARY_GROUP]
    group = root.create_group(DICTIONARY_GROUP)
    array = group.create_array(
        "kernels",
        shape=kernels.shape,
        chunks=kernels.shape,
        dtype=np.float32,
        dimension_names=("kernel", "cholesky"),
        attributes={
            "units": "HR px",
            "long_name": "Cholesky factor (l11, l21, l22) of "
            "each dictionary covariance, at the store's reference scale",
        },
    )
    array[...] = kernels
    group.attrs["provenance"] = record  # last: marks the dictionary complete
    return record


def has_dictionary(store_path: str | Path) -> bool:
    group = open_store(store_path).group
    return DICTIONARY_GROUP in group and "provenance" in group[DICTIONARY_GROUP].attrs


def read_dictionary(store_path: str | Path) -> tuple[np.ndarray, dict]:
    """(kernels float32 (K, 3) in HR px at the store's reference scale, provenance dict) of the store."""
    group = open_store(store_path).group
    if DICTIONARY_GROUP not in group or "provenance" not in group[DICTIONARY_GROUP].attrs:
        raise DictionaryMissingError(
            f"prior store {store_path} has no covariance dictionary yet; run "
            f"`p2g prior-stats --store {store_path} --out DIR` first"
        )
    kernels = np.asarray(array_at(group, KERNELS)[...], dtype=np.float32)
    provenance = json_object(group[DICTIONARY_GROUP].attrs["provenance"], "the dictionary provenance")
    if provenance.get("content_hash") != content_hash(kernels, provenance["reference_scale"]):
        raise StoreError(
            f"the dictionary of {store_path} does not match its content hash (damaged or edited); "
            "rerun `p2g prior-stats` to rewrite it"
        )
    return kernels, provenance


def export_npy(store_path: str | Path, out_path: str | Path) -> tuple[Path, Path]:
    """Write the store's dictionary as `out_path` (.npy, HR px at x4) and a sidecar .json; returns both paths."""
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".npy":
        raise ValueError(f"dictionary export needs a .npy file name, got {out_path}")
    kernels, provenance = read_dictionary(store_path)
    scale = float(provenance["reference_scale"])
    if scale != NPY_REFERENCE_SCALE:
        kernels = (kernels.astype(np.float64) * (NPY_REFERENCE_SCALE / scale)).astype(np.float32)
    record = dict(provenance)
    record.update(
        reference_scale=NPY_REFERENCE_SCALE,
        store_reference_scale=provenance["reference_scale"],
        content_hash=content_hash(kernels, NPY_REFERENCE_SCALE),
        units=f"HR px at reference scale x{NPY_REFERENCE_SCALE} (LR px x {NPY_REFERENCE_SCALE})",
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(out_path, kernels, allow_pickle=False)
    sidecar = out_path.with_suffix(".json")
    sidecar.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return out_path, sidecar


def dictionary_summary(store_path: str | Path) -> dict | None:
    """The stored dictionary's provenance plus element ranges (HR px), or None when there is none."""
    if not has_dictionary(store_path):
        return None
    try:
        kernels, provenance = read_dictionary(store_path)
    except StoreError as err:  # describe a damaged dictionary rather than fail to describe the store
        return {"problem": str(err)}
    out = dict(provenance)
    out["ranges"] = {
        name: [float(kernels[:, i].min()), float(kernels[:, i].max())] for i, name in enumerate(("l11", "l21", "l22"))
    }
    return out


def dictionary_line(summary: dict | None) -> str:
    """One line describing a dictionary summary (what `p2g info` prints)."""
    if summary is None:
        return "not computed yet"
    if "problem" in summary:
        return f"unreadable: {summary['problem']}"
    quantiles = summary.get("quantiles")
    span = f", quantiles {100 * quantiles[0]:g}-{100 * quantiles[1]:g} %" if quantiles else ""
    seed = f", seed {summary['seed']}" if summary.get("seed") is not None else ""
    ranges = ", ".join(f"{k} {lo:.2f}..{hi:.2f}" for k, (lo, hi) in summary["ranges"].items())
    return (
        f"{summary['method']}, {summary['size']} kernels (HR px at x{summary['reference_scale']}: {ranges})"
        f"{span}{seed}, from {summary['crop_count']} crops, {summary['content_hash'][:19]}"
    )


__all__ = [
    "DICTIONARY_GROUP",
    "NPY_REFERENCE_SCALE",
    "REQUIRED_PROVENANCE",
    "DictionaryMissingError",
    "InvalidDictionaryError",
    "check_kernels",
    "content_hash",
    "dictionary_line",
    "dictionary_summary",
    "export_npy",
    "has_dictionary",
    "read_dictionary",
    "write_dictionary",
]
