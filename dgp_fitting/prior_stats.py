"""Deep Gaussian Prior statistics: how the fitted covariances of a prior store are distributed.

Reads ``field/chol`` and ``field/colors`` of the selected crops block by block, one Dask task per block of
whole store chunks (a shard, or part of one when a shard is large), each task reading straight from the store,
and merges mergeable partial results in a tree. Memory therefore stays at a few blocks per thread whatever the
store's size, time grows linearly with the crop count, and the same graph runs on local threads or on an
existing Dask scheduler whose workers see the store. Two passes: the first gives counts, mean, covariance
(Chan's pairwise update), min/max, fixed-range histograms, joint histograms, the fractions inside the paper's
ranges and the per-crop values; the second a fine histogram between each element's min and max, from which
quantiles are read, linearly within a bin: exact up to one fine bin ((max - min) / 16384) or, in sparse tails,
the gap between the two values around the quantile's rank.

Elements, per Gaussian, in LR px (Cholesky) and LR px^2 (covariance), and in HR px / HR px^2 at the store's
reference scale s (times s, s^2): the Cholesky triplet (l11, l21, l22) and Sigma = L L^T's entries
sxx = l11^2, sxy = l11 l21 (= rho sigma_x sigma_y), syy = l21^2 + l22^2.

Per crop: the mean of each element, the mean sqrt(det Sigma) = l11 l22, the fitted PSNR and a content
measure, the gradient energy of the field's LR image approximated by each LR cell's colour mass
(sum over its k x k Gaussians of colour x 2 pi l11 l22, i.e. their integral): the mean squared difference
of neighbouring cells (summed over RGB) down plus across, in (intensity per LR px)^2. Crops are grouped in
terciles of PSNR and of that energy.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import zarr
from scipy import stats as scipy_stats

from dgp_fitting import prior_stats_kernels as kernels
from prior_store import STATUS_DONE, open_store
from prior_store.statistics import read_statistics, write_statistics

ELEMENTS = ("l11", "l21", "l22", "sxx", "sxy", "syy")
CHOLESKY = ELEMENTS[:3]
#: LR -> HR at reference scale s: multiply by s ** power.
UNIT_POWER = {"l11": 1, "l21": 1, "l22": 1, "sxx": 2, "sxy": 2, "syy": 2}
LABELS = {
    "l11": "l11",
    "l21": "l21",
    "l22": "l22",
    "sxx": "sigma_x^2",
    "sxy": "rho sigma_x sigma_y",
    "syy": "sigma_y^2",
}
#: The paper's ranges (about 99 % of fitted Gaussians), HR px at x4.
PAPER_RANGES_HR_X4 = {"l11": (0.0, 2.4), "l21": (-0.9, 1.5), "l22": (0.0, 2.2)}
PAPER_SCALE = 4
QUANTILES = (0.005, 0.01, 0.05, 0.5, 0.95, 0.99, 0.995)
#: Fixed histogram ranges in LR units (the fitter bounds |l| by 1 LR px by default); outside counts are kept.
HISTOGRAM_RANGES_LR = {
    "l11": (0.0, 1.0),
    "l21": (-1.0, 1.0),
    "l22": (0.0, 1.0),
    "sxx": (0.0, 1.0),
    "sxy": (-0.5, 0.5),
    "syy": (0.0, 1.0),
}
HISTOGRAM_BINS = 200
JOINT_PAIRS = (("l11", "l21"), ("l11", "l22"), ("l21", "l22"))
JOINT_BINS = 100
QUANTILE_BINS = 16384
PER_CROP_COLUMNS = ("crop", "psnr", "gradient_energy", "l11", "l21", "l22", "sxx", "sxy", "syy", "sqrt_det")
#: Gaussians per slice inside one block: bounds the temporaries whatever the store's chunk size.
_SLICE = 1 << 19
#: Bytes of field/chol + field/colors (float32) one task reads at most: a whole shard when it fits.
BLOCK_BYTES = 64 << 20
#: How long --scheduler waits for the scheduler to answer.
CONNECT_TIMEOUT = "20s"
#: Partial results merged per node of the reduction tree.
SPLIT_EVERY = 8
_INDEX = {name: i for i, name in enumerate(ELEMENTS)}


class NoDoneCropsError(ValueError):
    """Nothing to compute statistics from: no done crops, or none above the PSNR floor."""


class NonFiniteFieldError(ValueError):
    """Fitted parameters that are NaN or infinite in crops marked done."""


NON_FINITE_MESSAGE = (
    "field/chol of the selected crops holds NaN or inf; the store is damaged: refit those crops "
    "(rerun `p2g fit-prior`) or raise --min-psnr to leave them out"
)


class SchedulerUnreachableError(ValueError):
    """--scheduler names a Dask scheduler that does not answer."""


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
    """The first pass's partial result over elements (N, 6), in numpy: the definition `block_moments` compiles."""
    if not np.isfinite(e).all():
        raise NonFiniteFieldError(NON_FINITE_MESSAGE)
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
    return {
        "n": n,
        "mean": mean,
        "m2": np.einsum("ni,nj->ij", d, d),
        "min": e.min(axis=0),
        "max": e.max(axis=0),
        "hist": hist,
        "joint": joint,
        "inside": inside,
    }


def _moments_combine(parts: Sequence[dict]) -> dict:
    out = {"n": 0}
    for part in parts:
        out = _merge_moments(out, part)
    return out


def _fine_combine(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0)


def _per_crop_rows(chol: np.ndarray, colors: np.ndarray, lattice: tuple[int, int, int]) -> np.ndarray:
    """(c, 8): mean of the six elements (LR), mean l11*l22 (LR px^2), gradient energy, per crop; in numpy, the
    definition `prior_stats_kernels.per_crop_rows` compiles."""
    h, w, k = lattice
    out = np.empty((chol.shape[0], 8), np.float64)
    g = max(chol.shape[1], 1)
    step = max(1, _SLICE // g)
    for a in range(0, chol.shape[0], step):  # groups of crops: bounded temporaries, each crop's row on its own
        c = np.asarray(chol[a : a + step], dtype=np.float64)
        l11, l21, l22 = c[..., 0], c[..., 1], c[..., 2]
        area = l11 * l22
        rows = out[a : a + step]
        for i, value in enumerate((l11, l21, l22, l11 * l11, l11 * l21, l21 * l21 + l22 * l22, area)):
            rows[:, i] = value.mean(axis=1)
        mass = np.asarray(colors[a : a + step], dtype=np.float64) * (2 * math.pi * area)[..., None]
        mass = mass.reshape(-1, h, k, w, k, 3).sum(axis=(2, 4))
        energy = np.zeros(rows.shape[0])
        for axis, size in ((1, h), (2, w)):
            if size > 1:
                energy += np.sum(np.diff(mass, axis=axis) ** 2, axis=-1).reshape(rows.shape[0], -1).mean(axis=1)
        rows[:, 7] = energy
    return out


def _read_block(
    store: tuple[str, str], start: int, stop: int, keep: np.ndarray, names: Sequence[str]
) -> list[np.ndarray]:
    """Crops [start, stop) of the named field arrays, only those with `keep` (a task's only read); `store` is
    (path, stamp)."""
    out = []
    for name in names:
        values = np.asarray(_open_array(store[0], name, store[1])[start:stop])
        out.append(values if keep.all() else values[keep])
    return out


@functools.lru_cache(maxsize=16)
def _open_array(store_path: str, name: str, stamp: str = "") -> zarr.Array:
    """One open per process and array (each open reads metadata; a million-crop store has ~2000 blocks).
    `stamp` (the store's creation time and plan digest) keeps a store recreated at the same path apart."""
    return zarr.open_array(store_path, path=name, mode="r")


def _first_pass_block(
    store: tuple[str, str], start: int, stop: int, keep: np.ndarray, paper_lr: np.ndarray, lattice: tuple[int, int, int]
) -> tuple[dict, np.ndarray]:
    chol, colors = _read_block(store, start, stop, keep, ("field/chol", "field/colors"))
    rows = np.empty((chol.shape[0], 8), np.float64)
    kernels.per_crop_rows(chol, colors, *lattice, rows)
    return block_moments(chol, paper_lr), rows


def block_moments(chol: np.ndarray, paper_lr: np.ndarray) -> dict:
    """The first pass's partial result over Cholesky rows (..., 3), by the compiled kernel (`_moments_of`
    is its numpy definition)."""
    flat = np.ascontiguousarray(chol, dtype=np.float32).reshape(-1, 3)
    lo = np.array([HISTOGRAM_RANGES_LR[name][0] for name in ELEMENTS], np.float64)
    hi = np.array([HISTOGRAM_RANGES_LR[name][1] for name in ELEMENTS], np.float64)
    scale = np.array([HISTOGRAM_BINS / (b - a) for a, b in zip(lo, hi)])
    pairs = np.array([[_INDEX[x], _INDEX[y]] for x, y in JOINT_PAIRS], np.int64)
    out = {
        "mean": np.zeros(len(ELEMENTS)),
        "min": np.full(len(ELEMENTS), np.inf),
        "max": np.full(len(ELEMENTS), -np.inf),
        "m2": np.zeros((len(ELEMENTS),) * 2),
        "hist": np.zeros((len(ELEMENTS), HISTOGRAM_BINS + 2), np.int64),
        "joint": np.zeros((len(JOINT_PAIRS), JOINT_BINS, JOINT_BINS), np.int64),
        "inside": np.zeros(4, np.int64),
    }
    n = kernels.block_moments(
        flat,
        np.ascontiguousarray(paper_lr, np.float64),
        lo,
        hi,
        scale,
        HISTOGRAM_BINS,
        pairs,
        JOINT_BINS,
        out["mean"],
        out["min"],
        out["max"],
        out["m2"],
        out["hist"],
        out["joint"],
        out["inside"],
    )
    if n < 0:
        raise NonFiniteFieldError(NON_FINITE_MESSAGE)
    if n == 0:
        return {"n": 0}
    out["mean"] /= n  # the kernel left the sums there
    return {"n": int(n), **out}


def _fine_block(
    store: tuple[str, str], start: int, stop: int, keep: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    (chol,) = _read_block(store, start, stop, keep, ("field/chol",))
    return fine_histogram(chol, lo, hi)


def fine_histogram(chol: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(6, QUANTILE_BINS) counts of each element over [lo, hi], by the compiled kernel (`bin_index` defines
    the bins)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    counts = np.zeros((len(ELEMENTS), QUANTILE_BINS), np.int64)
    scale = np.array([QUANTILE_BINS / (b - a) for a, b in zip(lo, hi)])
    kernels.block_fine_histogram(
        np.ascontiguousarray(chol, dtype=np.float32).reshape(-1, 3), lo, hi, scale, QUANTILE_BINS, counts
    )
    return counts


def _tree(parts: list, combine):
    """Merge delayed partial results SPLIT_EVERY at a time, so no node holds more than a few of them."""
    while len(parts) > 1:
        parts = [dask.delayed(combine)(parts[i : i + SPLIT_EVERY]) for i in range(0, len(parts), SPLIT_EVERY)]
    return parts[0]


def store_blocks(store, keep: np.ndarray) -> list[tuple[int, int]]:
    """Crop ranges read by one task each: whole shards, split into whole chunks when a shard's field/chol and
    field/colors exceed BLOCK_BYTES; ranges without a selected crop are left out."""
    per_chunk = store.chunk_size * store.config.num_gaussians * 6 * 4
    block = store.chunk_size * max(1, min(store.shard_size // store.chunk_size, BLOCK_BYTES // per_chunk))
    out = []
    for shard in range(store.num_shards):
        first, last = store.shard_bounds(shard)
        for start in range(first, last, block):
            stop = min(last, start + block)
            if keep[start:stop].any():
                out.append((start, stop))
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
        corr = np.array(
            [[0.0 if v is None else v for v in row[:3]] for row in self.summary["correlation"]["matrix"][:3]]
        )
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
def compute_statistics(
    store_path: str | Path, min_psnr: float | None = None, scheduler: str | None = None, threads: int | None = None
) -> PriorStatistics:
    """Statistics of the done crops (PSNR >= min_psnr if given), computed block by block.

    `scheduler`: address of an existing Dask scheduler (tcp://host:8786) whose workers can read the store's
    path; None runs on `threads` local threads (default: one per core).
    """
    store = open_store(store_path)
    selection = select_crops(store_path, min_psnr)
    keep = np.zeros(store.num_crops, bool)
    keep[selection.indices] = True
    blocks = store_blocks(store, keep)
    path = str(Path(store_path).resolve()) if "://" not in str(store_path) else str(store_path)
    path = (path, f"{store.attrs.get('created')} {store.attrs.get('plan_digest')}")
    paper_lr = np.array([[lo / PAPER_SCALE, hi / PAPER_SCALE] for lo, hi in PAPER_RANGES_HR_X4.values()])
    with _scheduler(scheduler, threads) as compute:
        first = [
            dask.delayed(_first_pass_block, pure=True, nout=2)(path, a, b, keep[a:b], paper_lr, store.config.lattice)
            for a, b in blocks
        ]
        moments = _tree([part[0] for part in first], _moments_combine)
        per_crop = dask.delayed(np.concatenate)([part[1] for part in first])
        moments, per_crop = compute(moments, per_crop)
        lo = moments["min"]
        hi = np.array([_fine_range(a, b)[1] for a, b in zip(moments["min"], moments["max"])])
        fine = _tree(
            [dask.delayed(_fine_block, pure=True)(path, a, b, keep[a:b], lo, hi) for a, b in blocks], _fine_combine
        )
        (fine,) = compute(fine)
    return _assemble(store, selection, moments, fine, per_crop, store.config.reference_scale)


@contextlib.contextmanager
def _scheduler(address: str | None, threads: int | None):
    """A compute(*graphs) function: local threads, or the Dask cluster at `address`."""
    if address is None:
        yield lambda *graphs: dask.compute(*graphs, scheduler="threads", num_workers=threads)
        return
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as err:
        raise SchedulerUnreachableError(
            f"cannot reach the Dask scheduler at {address} ({type(err).__name__}); check the address, or leave "
            "out --scheduler to compute on this machine"
        ) from None
    with client:
        yield lambda *graphs: client.compute(list(graphs), sync=True)


def _none_if_nan(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _describe(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {"count": 0}
    return {
        "count": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "p5": float(np.percentile(values, 5)),
        "p95": float(np.percentile(values, 95)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _assemble(
    store, selection: Selection, moments: dict, fine: np.ndarray, per_crop: np.ndarray, scale: int
) -> PriorStatistics:
    n = int(moments["n"])
    std_lr = np.sqrt(np.maximum(np.diag(moments["m2"]) / n, 0.0))
    elements = {name: _element_summary(i, name, moments, fine, std_lr, scale) for i, name in enumerate(ELEMENTS)}
    corr = _correlation(moments["m2"] / n)
    inside = moments["inside"] / n
    paper_hr = {k: [lo * scale / PAPER_SCALE, hi * scale / PAPER_SCALE] for k, (lo, hi) in PAPER_RANGES_HR_X4.items()}

    per_crop_hr = _per_crop_table(selection, per_crop, scale)
    summary = {
        "kind": "pixel2gauss prior statistics",
        "reference_scale": scale,
        "crop_size": store.config.crop_size,
        "lattice": list(store.config.lattice),
        "units": {
            "lr": "LR px (covariance entries LR px^2)",
            "hr": f"HR px at reference scale x{scale} (covariance entries HR px^2)",
        },
        "config": {
            "min_psnr": selection.min_psnr,
            "quantiles": list(QUANTILES),
            "histogram_bins": HISTOGRAM_BINS,
            "histogram_ranges_lr": {k: list(v) for k, v in HISTOGRAM_RANGES_LR.items()},
            "joint_bins": JOINT_BINS,
            "quantile_bins": QUANTILE_BINS,
        },
        "selection": _selection_summary(selection, n, store.attrs.get("plan_digest")),
        "elements": elements,
        "paper_ranges": {
            "hr_x4": {k: list(v) for k, v in PAPER_RANGES_HR_X4.items()},
            "hr": paper_hr,
            "inside": {**{k: float(inside[i]) for i, k in enumerate(CHOLESKY)}, "all": float(inside[3])},
        },
        "correlation": {"elements": list(ELEMENTS), "matrix": [[_none_if_nan(v) for v in row] for row in corr]},
        "psnr": {"done": _describe(selection.done_psnr), "used": _describe(selection.psnr)},
        "by_content": _by_content(per_crop_hr),
    }
    arrays = {
        "histograms": moments["hist"][:, 1:-1],
        "joint_histograms": moments["joint"],
        "quantile_histograms": fine,
        "per_crop": per_crop_hr,
    }
    return PriorStatistics(summary, arrays, _array_attrs(scale))


def _element_summary(i: int, name: str, moments: dict, fine: np.ndarray, std_lr: np.ndarray, scale: int) -> dict:
    """Element `i` in LR and HR units (mean, std, range, quantiles, the fitted normal), the normal's KS distance
    from the fine histogram, and the counts outside the histogram range."""
    n = int(moments["n"])
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
            "normal": {
                "mean": float(moments["mean"][i] * f),
                "std": float(std_lr[i] * f),
                "interval_99": None if normal_lr is None else [v * f for v in normal_lr],
            },
        }
    return {
        **units,
        "normal_ks_distance": ks,
        "outside_histogram_range": {"below": int(hist[0]), "above": int(hist[-1])},
    }


def _correlation(cov: np.ndarray) -> np.ndarray:
    """The correlation matrix of covariance `cov`; NaN where an element does not vary."""
    denom = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), np.nan)


def _selection_summary(selection: Selection, gaussians: int, plan_digest: str | None) -> dict:
    return {
        "crops": selection.crops,
        "done": int(selection.done_psnr.size),
        "crop_count": int(selection.indices.size),
        "below_min_psnr": int(selection.done_psnr.size - selection.indices.size),
        "gaussians": gaussians,
        "digest": selection.digest,
        "plan_digest": plan_digest,
    }


def _array_attrs(scale: int) -> dict:
    """What each saved array holds, stored beside it."""
    return {
        "histograms": {
            "elements": list(ELEMENTS),
            "ranges_lr": [list(HISTOGRAM_RANGES_LR[e]) for e in ELEMENTS],
            "note": "counts in equal bins over ranges_lr (x s or s^2 for HR); outside counts in the summary",
        },
        "joint_histograms": {
            "pairs": [list(p) for p in JOINT_PAIRS],
            "note": "counts [x bin, y bin] over the histogram ranges of each pair's elements",
        },
        "quantile_histograms": {
            "elements": list(ELEMENTS),
            "note": "counts in equal bins between each element's min and max (LR units, summary elements.*.lr)",
        },
        "per_crop": {
            "columns": list(PER_CROP_COLUMNS),
            "units": f"crop index, dB, (intensity/LR px)^2, then means in HR px / HR px^2 at x{scale}",
        },
    }


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
            groups.append(
                {
                    "crops": int(part.size),
                    feature: [float(rows[:, col[feature]].min()), float(rows[:, col[feature]].max())],
                    **{f"mean_{name}": float(rows[:, col[name]].mean()) for name in ("l11", "l21", "l22", "sqrt_det")},
                }
            )
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
        return (
            f"they were computed from {stats.summary['selection']['crop_count']} crops, the store now has "
            f"{selection.indices.size} usable ones"
        )
    return None


__all__ = [
    "CHOLESKY",
    "ELEMENTS",
    "LABELS",
    "PAPER_RANGES_HR_X4",
    "PER_CROP_COLUMNS",
    "QUANTILES",
    "NoDoneCropsError",
    "NonFiniteFieldError",
    "PriorStatistics",
    "SchedulerUnreachableError",
    "compute_statistics",
    "elements_lr",
    "histogram_quantiles",
    "is_current",
    "load_statistics",
    "quantile_key",
    "select_crops",
    "store_blocks",
]
