"""The covariance dictionary the model mixes from, and where it came from.

A dictionary is K Cholesky triplets (l11, l21, l22) in HR pixels at a reference scale s_ref: the model
divides them by s_ref to get LR pixels (the official model's `para / 4`). The official one is the product
of three fixed value lists plus a zero row (730 entries; the upstream code comment says 344). Ours come
from the prior store's statistics stage, or from a `.npy` file. The provenance travels into checkpoints.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from prior_store.dictionary import InvalidDictionaryError, check_kernels, content_hash

#: Value lists of the official dictionary (ContinuousSR `models/gaussian.py`), slowest-varying first.
OFFICIAL_CHO1 = (0.0, 0.41, 0.62, 0.98, 1.13, 1.29, 1.64, 1.85, 2.36)
OFFICIAL_CHO2 = (-0.86, -0.36, -0.16, 0.19, 0.34, 0.49, 0.84, 1.04, 1.54)
OFFICIAL_CHO3 = (0.0, 0.33, 0.53, 0.88, 1.03, 1.18, 1.53, 1.73, 2.23)
#: The official model divides the mixed triplet by 4: the dictionary is in HR px at scale 4.
OFFICIAL_REFERENCE_SCALE = 4.0


class DictionaryError(ValueError):
    """A dictionary source that cannot be read or has the wrong shape."""


def official_kernels() -> torch.Tensor:
    """The official (730, 3) float32 dictionary: product(cho1, cho2, cho3) then one zero row."""
    rows = list(itertools.product(OFFICIAL_CHO1, OFFICIAL_CHO2, OFFICIAL_CHO3)) + [(0.0, 0.0, 0.0)]
    return torch.tensor(rows, dtype=torch.float32)


@dataclass(frozen=True)
class CovarianceDictionary:
    """K Cholesky triplets in HR px at `reference_scale`, with their provenance (plain values only)."""

    kernels: torch.Tensor
    reference_scale: float
    provenance: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.kernels.shape[0])


def usable_kernels(kernels: np.ndarray, what: str) -> torch.Tensor:
    """The checked (K, 3) float32 kernels with at least one non-degenerate entry, or a DictionaryError."""
    try:
        array = check_kernels(kernels, what)
    except InvalidDictionaryError as err:
        raise DictionaryError(str(err)) from None
    if not ((array[:, 0] > 0) & (array[:, 2] > 0)).any():
        raise DictionaryError(
            f"{what}: dictionary has no entry with a positive diagonal; every mix would be degenerate"
        )
    return torch.from_numpy(array)


def official_dictionary() -> CovarianceDictionary:
    kernels = official_kernels()
    return CovarianceDictionary(
        kernels,
        OFFICIAL_REFERENCE_SCALE,
        {
            "method": "official",
            "source": "official",
            "content_hash": content_hash(kernels, OFFICIAL_REFERENCE_SCALE),
            "reference_scale": OFFICIAL_REFERENCE_SCALE,
        },
    )


def load_dictionary(source: str | Path, reference_scale: float | None = None) -> CovarianceDictionary:
    """The dictionary named by `source`: "official", a `.npy` file of (K, 3) triplets, or a prior store path.

    A `.npy` file carries no reference scale; it is `reference_scale` (default 4, as the official one).
    A store carries its own, and a different `reference_scale` argument is refused.
    """
    if str(source) == "official":
        return official_dictionary()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"dictionary source not found: {path} (give a .npy file, a prior store or 'official')")
    if path.is_file():
        if path.suffix.lower() != ".npy":
            raise DictionaryError(f"{path}: a dictionary file must be a .npy array of shape (K, 3)")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DictionaryError(f"{path} is not a readable .npy dictionary: {err}") from None
        scale = float(OFFICIAL_REFERENCE_SCALE if reference_scale is None else reference_scale)
        kernels = usable_kernels(array, str(path))
        return CovarianceDictionary(
            kernels,
            _check_scale(scale, str(path)),
            {
                "method": "npy",
                "source": str(path),
                "content_hash": content_hash(kernels, scale),
                "reference_scale": scale,
            },
        )
    return _from_store(path, reference_scale)


def _from_store(path: Path, reference_scale: float | None) -> CovarianceDictionary:
    try:  # stage 2's reader, imported only when a store is named
        from prior_store.dictionary import read_dictionary
    except ImportError:
        raise DictionaryError(
            f"{path} is a folder, but this installation cannot read dictionaries from a prior "
            f"store (prior_store.dictionary is missing); export it to .npy"
        ) from None
    kernels, provenance = read_dictionary(path)
    kernels = usable_kernels(kernels, str(path))
    scale = _check_scale(float(provenance["reference_scale"]), str(path))
    if reference_scale is not None and float(reference_scale) != scale:
        raise DictionaryError(
            f"{path}: the store's dictionary is at reference scale {scale:g}, not "
            f"{float(reference_scale):g}; drop the reference scale argument"
        )
    record = {key: _plain(value) for key, value in dict(provenance).items()}
    record.update(source=str(path), reference_scale=scale)
    record.setdefault("method", "store")
    record.setdefault("content_hash", content_hash(kernels, scale))
    return CovarianceDictionary(kernels, scale, record)


def _check_scale(scale: float, what: str) -> float:
    if not np.isfinite(scale) or scale <= 0:
        raise DictionaryError(f"{what}: reference scale must be a positive number, got {scale!r}")
    return scale


def _plain(value):
    """Provenance values as plain containers (checkpoints load with weights_only=True)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
