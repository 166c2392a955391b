"""Deep Gaussian Prior statistics: how the fitted covariances of a prior store are distributed.

Reads ``field/chol`` (and ``field/colors`` for a content measure) of the selected crops lazily with
``dask.array.from_zarr`` and reduces them block by block (``dask.array.reduction`` with mergeable partial
results), so memory stays at a few store chunks whatever the store's size. Two passes: the first gives
counts, mean, covariance (Chan's pairwise update), min/max, fixed-range histograms, joint histograms and
the fractions inside the paper's ranges; the second a fine histogram between each element's min and max,
from which quantiles are read, linearly within a bin: exact up to one fine bin ((max - min) / 16384) or,
in sparse tails, the gap between the two values around the quantile's rank.

Elements, per Gaussian, in LR px (Cholesky) and LR px^2 (covariance), and in HR px / HR px^2 at the store's
reference scale s (times s, s^2): the Cholesky triplet (l11, l21, l22) and Sigma = L L^T's entries
sxx = l11^2, sxy = l11 l21 (= rho sigma_x sigma_y), syy = l21^2 + l22^2.

Per crop: the mean of each element, the mean sqrt(det Sigma) = l11 l22, the fitted PSNR and a content
measure, the gradient energy of the field's LR image approximated by each LR cell's colour mass
(sum over its k x k Gaussians of colour x 2 pi l11 l22, i.e. their integral): the mean squared difference
of neighbouring cells (summed over RGB) down plus across, in (intensity per LR px)^2. Crops are grouped in terciles of PSNR and of that energy.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import dask
import dask.array as da
import numpy as np
from scipy import stats as scipy_stats

from prior_store import STATUS_DONE, open_store
from prior_store.statistics import read_statistics, write_statistics

ELEMENTS = ("l11", "l21", "l22", "sxx", "sxy", "syy")
CHOLESKY = ELEMENTS[:3]
#: LR -> HR at reference scale s: multiply by s ** power.
UNIT_POWER = {"l11": 1, "l21": 1, "l22": 1, "sxx": 2, "sxy": 2, "syy": 2}
LABELS = {"l11": "l11", "l21": "l21", "l22": "l22", "sxx": "sigma_x^2", "sxy": "rho sigma_x sigma_y",
          "syy": "sigma_y^2"}
#: The paper's ranges (about 99 % of fitted Gaussians), HR px at x4.
PAPER_RANGES_HR_X4 = {"l11": (0.0, 2.4), "l21": (-0.9, 1.5), "l22": (0.0, 2.2)}
PAPER_SCALE = 4
QUANTILES = (0.005, 0.01, 0.05, 0.5, 0.95, 0.99, 0.995)
#: Fixed histogram ranges in LR units (the fitter bounds |l| by 1 LR px by default); outside counts are kept.
HISTOGRAM_RANGES_LR = {"l11": (0.0, 1.0), "l21": (-1.0, 1.0), "l22": (0.0, 1.0), "sxx": (0.0, 1.0),
                       "sxy": (-0.5, 0.5), "syy": (0.0, 1.0)}
HISTOGRAM_BINS = 200
JOINT_PAIRS = (("l11", "l21"), ("l11", "l22"), ("l21", "l22"))
JOINT_BINS = 100
QUANTILE_BINS = 16384
PER_CROP_COLUMNS = ("crop", "psnr", "gradient_energy", "l11", "l21", "l22", "sxx", "sxy", "syy", "sqrt_det")
#: Gaussians per slice inside one block: bounds the temporaries whatever the store's chunk size.
_SLICE = 1 << 19
_INDEX = {name: i for i, name in enumerate(ELEMENTS)}


class NoDoneCropsError(ValueError):
    """Nothing to compute statistics from: no done crops, or none above the PSNR floor."""


class NonFiniteFieldError(ValueError):
    """Fitted parameters that are NaN or infinite in crops marked done."""


def quantile_key(q: float) -> str:
    """The summary's key of quantile q (a fraction): its percentage, e.g. 0.005 -> "0.5"."""
    return f"{100 * q:g}"


# ---------------------------------------------------------------------------------------------- per block
def elements_lr(chol: np.ndarray) -> np.ndarray:
    """(N, 6) float64 per Gaussian: l11, l21, l22, sxx, sxy, syy in LR units, from (..., 3) Cholesky."""
    c = np.asarray(chol, dtype=np.float64).reshape(-1, 3)
    l11, l21, l22 = c[:, 0], c[:, 1], c[:, 2]
    return np.stack([l11, l21, l22, l11 * l11, l11 * l21, l21 * l21 + l22 * l22], axis=1)


def bin_index(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin of each value over [lo, hi] in `bins` equal bins (hi in the last); -1 below, `bins` above."""
    idx = np.floor((x - lo) * (bins / (hi - lo)))
    idx = np.where(x == hi, bins - 1, idx)
    return np.clip(idx, -1, bins).astype(np.int64)


def _slices(chol: np.ndarray):
    flat = chol.reshape(-1, 3)
    for start in range(0, flat.shape[0], _SLICE):
        yield elements_lr(flat[start : start + _SLICE])


def _merge_moments(a: dict, b: dict) -> dict:
    """Chan et al.'s pairwise update of (n, mean, M2) plus min/max and summed counts."""
    if a["n"] == 0:
        return b
    if b["n"] == 0:
        return a
    n = a["n"] + b["n"]
    delta = b["mean"] - a["mean"]
    out = {
        "n": n,
        "mean": a["mean"] + delta * (b["n"] / n),
        "m2": a["m2"] + b["m2"] + np.outer(delta, delta) * (a["n"] * b["n"] / n),
        "min": np.minimum(a["min"], b["min"]),
        "max": np.maximum(a["max"], b["max"]),
    }
    for key in ("hist", "joint", "inside"):
        out[key] = a[key] + b[key]
    return out


def _moments_of(e: np.ndarray, paper_lr: np.ndarray) -> dict:
    if not np.isfinite(e).all():
        raise NonFiniteFieldError("field/chol of the selected crops holds NaN or inf; the store is damaged: refit "
                                  "those crops (rerun `p2g fit-prior`) or raise --min-psnr to leave them out")
    n = e.shape[0]
    mean = e.mean(axis=0)
    d = e - mean
    hist = np.zeros((len(ELEMENTS), HISTOGRAM_BINS + 2), np.int64)
    idx = {}
    for i, name in enumerate(ELEMENTS):
        lo, hi = HISTOGRAM_RANGES_LR[name]
        idx[name] = bin_index(e[:, i], lo, hi, HISTOGRAM_BINS)
        hist[i] = np.bincount(idx[name] + 1, minlength=HISTOGRAM_BINS + 2)
    joint = np.zeros((len(JOINT_PAIRS), JOINT_BINS, JOINT_BINS), np.int64)
    for p, (x, y) in enumerate(JOINT_PAIRS):
        ix = bin_index(e[:, _INDEX[x]], *HISTOGRAM_RANGES_LR[x], JOINT_BINS)
        iy = bin_index(e[:, _INDEX[y]], *HISTOGRAM_RANGES_LR[y], JOINT_BINS)
        ok = (ix >= 0) & (ix < JOINT_BINS) & (iy >= 0) & (iy < JOINT_BINS)
        joint[p] = np.bincount(ix[ok] * JOINT_BINS + iy[ok], minlength=JOINT_BINS**2).reshape(JOINT_BINS, JOINT_BINS)
    within = (e[:, :3] >= paper_lr[:, 0]) & (e[:, :3] <= paper_lr[:, 1])
    inside = np.append(within.sum(axis=0), within.all(axis=1).sum()).astype(np.int64)
    return {"n": n, "mean": mean, "m2": np.einsum("ni,nj->ij", d, d), "min": e.min(axis=0), "max": e.max(axis=0),
            "hist": hist, "joint": joint, "inside": inside}


def _flatten(parts) -> list[dict]:
    if isinstance(parts, dict):
        return [parts]
    return [p for part in parts for p in _flatten(part)]


def _moments_chunk(block, axis=None, keepdims=None, paper_lr=None, computing_meta=False):
    if computing_meta:
        return block
    out = {"n": 0}
    for e in _slices(block):
        out = _merge_moments(out, _moments_of(e, paper_lr))
    return out


def _moments_combine(parts, axis=None, keepdims=None, computing_meta=False):
    if computing_meta:
        return parts
    out = {"n": 0}
    for part in _flatten(parts):
        out = _merge_moments(out, part)
    return out


def _fine_chunk(block, axis=None, keepdims=None, lo=None, hi=None, computing_meta=False):
    if computing_meta:
        return block
    counts = np.zeros((len(ELEMENTS), QUANTILE_BINS), np.int64)
    for e in _slices(block):
        for i in range(len(ELEMENTS)):
            counts[i] += np.bincount(bin_index(e[:, i], lo[i], hi[i], QUANTILE_BINS), minlength=QUANTILE_BINS)
    return counts


def _fine_combine(parts, axis=None, keepdims=None, computing_meta=False):
    if computing_meta:
        return parts
    flat = _flatten_arrays(parts)
    return np.sum(flat, axis=0)


def _flatten_arrays(parts) -> list[np.ndarray]:
    if isinstance(parts, np.ndarray):
        return [parts]
    return [p for part in parts for p in _flatten_arrays(part)]


def _reduce(x: da.Array, chunk, combine, **kwargs) -> da.Array:
    from functools import partial

    return da.reduction(x, partial(chunk, **kwargs), combine, combine=combine, axis=tuple(range(x.ndim)),
                        concatenate=False, dtype=object, meta=np.empty((), dtype=object), split_every=8)


def _per_crop_block(chol: np.ndarray, colors: np.ndarray, lattice: tuple[int, int, int]) -> np.ndarray:
    """(c, 8): mean of the six elements (LR), mean l11*l22 (LR px^2), gradient energy, per crop."""
    h, w, k = lattice
    out = np.empty((chol.shape[0], 8), np.float64)
    for i in range(chol.shape[0]):
        e = elements_lr(chol[i])
        out[i, :6] = e.mean(axis=0)
        area = e[:, 0] * e[:, 2]
        out[i, 6] = area.mean()
        mass = (colors[i].astype(np.float64) * (2 * math.pi * area)[:, None]).reshape(h, k, w, k, 3).sum(axis=(1, 3))
        energy = 0.0
        for axis, size in ((0, h), (1, w)):
            if size > 1:
                energy += float(np.mean(np.sum(np.diff(mass, axis=axis) ** 2, axis=-1)))
        out[i, 7] = energy
    return out


# ---------------------------------------------------------------------------------------------- histograms
def histogram_quantiles(counts: np.ndarray, lo: float, hi: float, qs: Sequence[float]) -> list[float]:
    """Quantiles of values histogrammed in equal bins over [lo, hi], linear within a bin."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no values to take quantiles of")
    if hi <= lo:
        return [float(lo)] * len(qs)
    width = (hi - lo) / counts.size
    cum = np.cumsum(counts)
    filled = np.flatnonzero(counts)
    out = []
    for q in qs:
        target = float(q) * total
        k = int(np.searchsorted(cum, target, side="left"))
        k = int(filled[min(np.searchsorted(filled, k), filled.size - 1)])  # first non-empty bin from k on
        before = int(cum[k - 1]) if k else 0
        frac = min(max((target - before) / counts[k], 0.0), 1.0)
        out.append(float(min(max(lo + (k + frac) * width, lo), hi)))
    return out


def _fine_range(lo: float, hi: float) -> tuple[float, float]:
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


# ---------------------------------------------------------------------------------------------- result
@dataclass
class PriorStatistics:
    """The statistics of one store selection: a JSON-ready summary plus histograms and per-crop values."""

    summary: dict
    arrays: dict
    array_attrs: dict

    @property
    def reference_scale(self) -> int:
        return int(self.summary["reference_scale"])

    def to_hr(self, element: str, value):
        return value * self.reference_scale ** UNIT_POWER[element]

    def quantiles(self, element: str, qs: Sequence[float], units: str = "hr") -> list[float]:
        """Quantiles (fractions) of one element from the stored fine histogram, in "hr" or "lr" units."""
        i = _INDEX[element]
        lo, hi = self.summary["elements"][element]["lr"]["min"], self.summary["elements"][element]["lr"]["max"]
        values = histogram_quantiles(self.arrays["quantile_histograms"][i], lo, hi, qs)
        return [self.to_hr(element, v) for v in values] if units == "hr" else values

    def cholesky_normal_hr(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean (3,) and covariance (3, 3) of the Cholesky triplet in HR px (the fitted 3D normal)."""
        mean = np.array([self.summary["elements"][e]["hr"]["mean"] for e in CHOLESKY])
        std = np.array([self.summary["elements"][e]["hr"]["std"] for e in CHOLESKY])
        corr = np.array([[0.0 if v is None else v for v in row[:3]]
                         for row in self.summary["correlation"]["matrix"][:3]])
        np.fill_diagonal(corr, 1.0)
        return mean, corr * np.outer(std, std)

    def write(self, store_path: str | Path) -> None:
        """Store these statistics in the store's stats/ group (replacing it, dictionary included)."""
        write_statistics(store_path, self.summary, self.arrays, self.array_attrs)


def load_statistics(store_path: str | Path) -> PriorStatistics:
    """The statistics stored in a store's stats/ group (StatisticsMissingError if there are none)."""
    summary, arrays, attrs = read_statistics(store_path)
    return PriorStatistics(summary, arrays, attrs)


# ---------------------------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Selection:
    """Which crops the statistics use: done crops, optionally with fitted PSNR >= min_psnr."""

    indices: np.ndarray
    psnr: np.ndarray  # of the selected crops
    done_psnr: np.ndarray  # of every done crop
    crops: int
    min_psnr: float | None

    @property
    def digest(self) -> str:
        digest = hashlib.sha256(np.asarray(self.indices, dtype="<i8").tobytes())
        digest.update(repr(self.min_psnr).encode())
        return "sha256:" + digest.hexdigest()


def select_crops(store_path: str | Path, min_psnr: float | None = None) -> Selection:
    """The done crops of a store (those with PSNR >= min_psnr if given), or NoDoneCropsError."""
    store = open_store(store_path)
    status = store.status()
    psnr = np.asarray(store.read("crops/psnr"), dtype=np.float64)
    done = status == STATUS_DONE
    if not done.any():
        counts = store.status_counts()
        raise NoDoneCropsError(
            f"prior store {store_path} has no done crops ({counts['pending']} pending, {counts['failed']} failed "
            f"of {store.num_crops}); run or resume `p2g fit-prior` first"
        )
    keep = done.copy()
    if min_psnr is not None:
        if not math.isfinite(min_psnr):
            raise ValueError(f"--min-psnr must be a finite number of dB, got {min_psnr}")
        keep &= psnr >= min_psnr
        if not keep.any():
            raise NoDoneCropsError(
                f"none of the {int(done.sum())} done crops of {store_path} reaches --min-psnr {min_psnr:g} dB "
                f"(best {np.nanmax(psnr[done]):.2f} dB); lower the floor"
            )
    return Selection(np.flatnonzero(keep), psnr[keep], psnr[done], store.num_crops, min_psnr)


# ---------------------------------------------------------------------------------------------- compute
def compute_statistics(store_path: str | Path, min_psnr: float | None = None) -> PriorStatistics:
    """Statistics of the done crops (PSNR >= min_psnr if given), computed lazily block by block."""
    store = open_store(store_path)
    selection = select_crops(store_path, min_psnr)
    scale = store.config.reference_scale
    chol = da.from_zarr(store.group["field/chol"])
    colors = da.from_zarr(store.group["field/colors"])
    if selection.indices.size != store.num_crops:
        chol, colors = chol[selection.indices], colors[selection.indices]
    paper_lr = np.array([[lo / PAPER_SCALE, hi / PAPER_SCALE] for lo, hi in PAPER_RANGES_HR_X4.values()])

    moments = _reduce(chol, _moments_chunk, _moments_combine, paper_lr=paper_lr)
    per_crop = da.map_blocks(_per_crop_block, chol, colors, lattice=store.config.lattice, drop_axis=2,
                             chunks=(chol.chunks[0], (8,)), dtype=np.float64)
    moments, per_crop = dask.compute(moments, per_crop, scheduler="threads")
    lo = moments["min"]
    hi = np.array([_fine_range(a, b)[1] for a, b in zip(moments["min"], moments["max"])])
    fine = _reduce(chol, _fine_chunk, _fine_combine, lo=lo, hi=hi).compute(scheduler="threads")
    return _assemble(store, selection, moments, fine, per_crop, scale)


def _none_if_nan(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _describe(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "mean": float(values.mean()), "median": float(np.median(values)),
            "p5": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95)),
            "min": float(values.min()), "max": float(values.max())}


def _assemble(store, selection: Selection, moments: dict, fine: np.ndarray, per_crop: np.ndarray,
              scale: int) -> PriorStatistics:
    n = int(moments["n"])
    std_lr = np.sqrt(np.maximum(np.diag(moments["m2"]) / n, 0.0))
    elements = {}
    for i, name in enumerate(ELEMENTS):
        lo, hi = float(moments["min"][i]), float(moments["max"][i])
        q_lr = histogram_quantiles(fine[i], lo, hi, QUANTILES)
        edges = np.linspace(*_fine_range(lo, hi), QUANTILE_BINS + 1)
        cdf = np.concatenate([[0.0], np.cumsum(fine[i]) / n])
        ks = None
        normal_lr = None
        if std_lr[i] > 0:
            fitted = scipy_stats.norm(loc=moments["mean"][i], scale=std_lr[i])
            ks = float(np.max(np.abs(cdf - fitted.cdf(edges))))
            normal_lr = [float(v) for v in fitted.ppf([0.005, 0.995])]
        factor = float(scale ** UNIT_POWER[name])
        hist = moments["hist"][i]
        units = {}
        for unit, f in (("lr", 1.0), ("hr", factor)):
            units[unit] = {
                "mean": float(moments["mean"][i] * f),
                "std": float(std_lr[i] * f),
                "min": lo * f,
                "max": hi * f,
                "quantiles": {quantile_key(q): v * f for q, v in zip(QUANTILES, q_lr)},
                "normal": {"mean": float(moments["mean"][i] * f), "std": float(std_lr[i] * f),
                           "interval_99": None if normal_lr is None else [v * f for v in normal_lr]},
            }
        elements[name] = {**units, "normal_ks_distance": ks,
                          "outside_histogram_range": {"below": int(hist[0]), "above": int(hist[-1])}}

    cov = moments["m2"] / n
    denom = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)
    inside = moments["inside"] / n
    paper_hr = {k: [lo * scale / PAPER_SCALE, hi * scale / PAPER_SCALE] for k, (lo, hi) in PAPER_RANGES_HR_X4.items()}

    per_crop_hr = _per_crop_table(selection, per_crop, scale)
    summary = {
        "kind": "pixel2gauss prior statistics",
        "reference_scale": scale,
        "crop_size": store.config.crop_size,
        "lattice": list(store.config.lattice),
        "units": {"lr": "LR px (covariance entries LR px^2)",
                  "hr": f"HR px at reference scale x{scale} (covariance entries HR px^2)"},
        "config": {
            "min_psnr": selection.min_psnr,
            "quantiles": list(QUANTILES),
            "histogram_bins": HISTOGRAM_BINS,
            "histogram_ranges_lr": {k: list(v) for k, v in HISTOGRAM_RANGES_LR.items()},
            "joint_bins": JOINT_BINS,
            "quantile_bins": QUANTILE_BINS,
        },
        "selection": {
            "crops": selection.crops,
            "done": int(selection.done_psnr.size),
            "crop_count": int(selection.indices.size),
            "below_min_psnr": int(selection.done_psnr.size - selection.indices.size),
            "gaussians": n,
            "digest": selection.digest,
            "plan_digest": store.attrs.get("plan_digest"),
        },
        "elements": elements,
        "paper_ranges": {
            "hr_x4": {k: list(v) for k, v in PAPER_RANGES_HR_X4.items()},
            "hr": paper_hr,
            "inside": {**{k: float(inside[i]) for i, k in enumerate(CHOLESKY)}, "all": float(inside[3])},
        },
        "correlation": {"elements": list(ELEMENTS),
                        "matrix": [[_none_if_nan(v) for v in row] for row in corr]},
        "psnr": {"done": _describe(selection.done_psnr), "used": _describe(selection.psnr)},
        "by_content": _by_content(per_crop_hr),
    }
    arrays = {
        "histograms": moments["hist"][:, 1:-1],
        "joint_histograms": moments["joint"],
        "quantile_histograms": fine,
        "per_crop": per_crop_hr,
    }
    attrs = {
        "histograms": {"elements": list(ELEMENTS), "ranges_lr": [list(HISTOGRAM_RANGES_LR[e]) for e in ELEMENTS],
                       "note": "counts in equal bins over ranges_lr (x s or s^2 for HR); outside counts in the summary"},
        "joint_histograms": {"pairs": [list(p) for p in JOINT_PAIRS], "note": "counts [x bin, y bin] over the "
                             "histogram ranges of each pair's elements"},
        "quantile_histograms": {"elements": list(ELEMENTS), "note": "counts in equal bins between each element's "
                                "min and max (LR units, summary elements.*.lr)"},
        "per_crop": {"columns": list(PER_CROP_COLUMNS), "units": "crop index, dB, (intensity/LR px)^2, then means "
                     f"in HR px / HR px^2 at x{scale}"},
    }
    return PriorStatistics(summary, arrays, attrs)


def _per_crop_table(selection: Selection, per_crop: np.ndarray, scale: int) -> np.ndarray:
    table = np.empty((per_crop.shape[0], len(PER_CROP_COLUMNS)), np.float64)
    table[:, 0] = selection.indices
    table[:, 1] = selection.psnr
    table[:, 2] = per_crop[:, 7]
    for i, name in enumerate(ELEMENTS):
        table[:, 3 + i] = per_crop[:, i] * scale ** UNIT_POWER[name]
    table[:, 9] = per_crop[:, 6] * scale**2
    return table


def _by_content(table: np.ndarray) -> dict:
    """Per-crop means grouped in terciles of fitted PSNR and of gradient energy, plus rank correlations."""
    col = {name: i for i, name in enumerate(PER_CROP_COLUMNS)}
    out = {"groups": {}, "spearman_sqrt_det": {}}
    for feature in ("psnr", "gradient_energy"):
        values = table[:, col[feature]]
        order = np.argsort(values, kind="stable")
        groups = []
        for part in np.array_split(order, min(3, order.size)):
            rows = table[part]
            groups.append({
                "crops": int(part.size),
                feature: [float(rows[:, col[feature]].min()), float(rows[:, col[feature]].max())],
                **{f"mean_{name}": float(rows[:, col[name]].mean()) for name in ("l11", "l21", "l22", "sqrt_det")},
            })
        out["groups"][feature] = groups
        rho = None
        if table.shape[0] >= 3 and np.ptp(values) > 0 and np.ptp(table[:, col["sqrt_det"]]) > 0:
            rho = _none_if_nan(scipy_stats.spearmanr(values, table[:, col["sqrt_det"]]).statistic)
        out["spearman_sqrt_det"][feature] = rho
    return out


def is_current(stats: PriorStatistics, store_path: str | Path, min_psnr: float | None) -> str | None:
    """None if `stats` still describe the store's selection for `min_psnr`, else why not (one line)."""
    stored = stats.summary["config"]["min_psnr"]
    if stored != min_psnr:
        return f"they were computed with --min-psnr {stored}, not {min_psnr}"
    selection = select_crops(store_path, min_psnr)
    if selection.digest != stats.summary["selection"]["digest"]:
        return (f"they were computed from {stats.summary['selection']['crop_count']} crops, the store now has "
                f"{selection.indices.size} usable ones")
    return None


__all__ = [
    "CHOLESKY",
    "ELEMENTS",
    "LABELS",
    "NoDoneCropsError",
    "NonFiniteFieldError",
    "PAPER_RANGES_HR_X4",
    "PER_CROP_COLUMNS",
    "PriorStatistics",
    "QUANTILES",
    "compute_statistics",
    "elements_lr",
    "histogram_quantiles",
    "is_current",
    "load_statistics",
    "quantile_key",
    "select_crops",
]
