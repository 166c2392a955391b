"""The covariance dictionary from the prior statistics: a quantile grid, or kernels drawn from the fitted normal.

Both give float32 Cholesky triplets (l11, l21, l22) in HR px at the store's reference scale, the format of
the official dictionary (HR px at x4).

- ``grid``: n values per element between the element's quantiles q_lo and q_hi, evenly spaced in value by
  default (as the official lists roughly are), or with ``spacing="quantile"`` at evenly spaced probability
  levels (denser where fitted Gaussians are; on real photos, whose elements peak sharply, that puts most
  values in a narrow band), their Cartesian product with l11 varying slowest (``itertools.product`` as
  upstream), then the zero kernel as the official dictionary's last row: n^3 + 1 kernels, 730 for n = 9.
- ``sample``: N kernels drawn (seeded) from the 3D normal fitted to (l11, l21, l22) (means, stds and
  correlations of the statistics), keeping only draws with l11 > 0, l22 > 0 (Sigma = L L^T positive
  definite) inside the [q_lo, q_hi] quantile box of each element. No zero kernel is added.
"""

from __future__ import annotations

import itertools

import numpy as np

from dgp_fitting.prior_stats import CHOLESKY, PriorStatistics

METHODS = ("grid", "sample")
SPACINGS = ("linear", "quantile")
DEFAULT_SIZE = 730
DEFAULT_QUANTILES = (0.005, 0.995)
#: Draws tried per requested kernel before `sample` gives up (the quantile box rejects about 3 % by default).
MAX_DRAWS_PER_KERNEL = 1000


class DictionaryRequestError(ValueError):
    """A dictionary that cannot be made as asked (size, quantiles, method)."""


def grid_side(size: int) -> int:
    """n with n^3 + 1 == size (the grid's values per element), or a DictionaryRequestError naming valid sizes."""
    n = round((size - 1) ** (1 / 3)) if size > 1 else 0
    if n < 2 or n**3 + 1 != size:
        near = sorted({max(m, 2) ** 3 + 1 for m in (n - 1, n, n + 1)})
        raise DictionaryRequestError(
            f"a grid dictionary has n^3 + 1 kernels (n values per element plus the zero kernel); {size} is not "
            f"one: try {', '.join(str(v) for v in near)}"
        )
    return n


def check_quantiles(quantiles) -> tuple[float, float]:
    lo, hi = (float(q) for q in quantiles)
    if not 0.0 <= lo < hi <= 1.0:
        raise DictionaryRequestError(f"quantiles must satisfy 0 <= low < high <= 1 (fractions), got {lo}, {hi}")
    return lo, hi


def _base_provenance(stats: PriorStatistics, method: str, quantiles: tuple[float, float]) -> dict:
    return {
        "method": method,
        "quantiles": list(quantiles),
        "crop_count": int(stats.summary["selection"]["crop_count"]),
        "gaussian_count": int(stats.summary["selection"]["gaussians"]),
        "min_psnr": stats.summary["config"]["min_psnr"],
        "statistics_digest": stats.summary["selection"]["digest"],
        "reference_scale": stats.reference_scale,
    }


def grid_dictionary(
    stats: PriorStatistics,
    size: int = DEFAULT_SIZE,
    quantiles=DEFAULT_QUANTILES,
    spacing: str = "linear",
) -> tuple[np.ndarray, dict]:
    """(kernels (n^3 + 1, 3) float32 HR px, provenance): the quantile grid plus the zero kernel."""
    n = grid_side(int(size))
    lo, hi = check_quantiles(quantiles)
    if spacing not in SPACINGS:
        raise DictionaryRequestError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    values = {}
    for name in CHOLESKY:
        if spacing == "quantile":
            values[name] = stats.quantiles(name, np.linspace(lo, hi, n))
        else:
            a, b = stats.quantiles(name, (lo, hi))
            values[name] = [float(v) for v in np.linspace(a, b, n)]
    rows = list(itertools.product(*(values[name] for name in CHOLESKY))) + [(0.0, 0.0, 0.0)]
    kernels = np.asarray(rows, dtype=np.float64).astype(np.float32)
    provenance = _base_provenance(stats, "grid", (lo, hi))
    provenance.update(
        seed=None,
        spacing=spacing,
        zero_kernel=True,
        values={name: [float(np.float32(v)) for v in values[name]] for name in CHOLESKY},
    )
    return kernels, provenance


def sample_dictionary(
    stats: PriorStatistics,
    size: int = DEFAULT_SIZE,
    quantiles=DEFAULT_QUANTILES,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """(kernels (size, 3) float32 HR px, provenance): seeded draws from the fitted normal, all valid."""
    size = int(size)
    if size < 1:
        raise DictionaryRequestError(f"a sampled dictionary needs at least one kernel, got size {size}")
    lo, hi = check_quantiles(quantiles)
    mean, cov = stats.cholesky_normal_hr()
    box = np.array([stats.quantiles(name, (lo, hi)) for name in CHOLESKY])  # (3, 2)
    factor = _cholesky_factor(cov)
    rng = np.random.default_rng(int(seed))
    kept: list[np.ndarray] = []
    count, draws = 0, 0
    batch = max(1024, 2 * size)
    while count < size:
        if draws >= MAX_DRAWS_PER_KERNEL * size:
            raise DictionaryRequestError(
                f"only {count} of {size} draws from the fitted normal were valid kernels inside the "
                f"{100 * lo:g}-{100 * hi:g} % quantile box after {draws} draws; widen --quantiles"
            )
        z = rng.standard_normal((batch, 3))
        draw = mean + z @ factor.T
        ok = (draw[:, 0] > 0) & (draw[:, 2] > 0) & np.all((draw >= box[:, 0]) & (draw <= box[:, 1]), axis=1)
        kept.append(draw[ok])
        count += int(ok.sum())
        draws += batch
    kernels = np.concatenate(kept)[:size].astype(np.float32)
    provenance = _base_provenance(stats, "sample", (lo, hi))
    provenance.update(
        seed=int(seed),
        zero_kernel=False,
        acceptance=count / draws,
        normal={"mean": [float(v) for v in mean], "covariance": [[float(v) for v in r] for r in cov]},
        box={name: [float(a), float(b)] for name, (a, b) in zip(CHOLESKY, box)},
    )
    return kernels, provenance


def _cholesky_factor(cov: np.ndarray) -> np.ndarray:
    """A lower factor of `cov`, with a tiny ridge when an element has (numerically) no spread."""
    cov = np.asarray(cov, dtype=np.float64)
    ridge = 1e-12 * max(float(np.trace(cov)), 1e-12)
    try:
        return np.linalg.cholesky(cov + ridge * np.eye(3))
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(cov)
        return vectors @ np.diag(np.sqrt(np.clip(values, 0, None)))


def check_request(method: str, size: int, quantiles, spacing: str = "linear") -> None:
    """Refuse a dictionary request that cannot be met, before any statistics are computed or written."""
    if method not in METHODS:
        raise DictionaryRequestError(f"method must be one of {METHODS}, got {method!r}")
    if spacing not in SPACINGS:
        raise DictionaryRequestError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    check_quantiles(quantiles)
    if method == "grid":
        grid_side(int(size))
    elif int(size) < 1:
        raise DictionaryRequestError(f"a sampled dictionary needs at least one kernel, got size {size}")


def build_dictionary(
    stats: PriorStatistics,
    method: str = "grid",
    size: int = DEFAULT_SIZE,
    quantiles=DEFAULT_QUANTILES,
    seed: int = 0,
    spacing: str = "linear",
) -> tuple[np.ndarray, dict]:
    """Dispatch to `grid_dictionary` or `sample_dictionary` (seed only matters for sample)."""
    check_request(method, size, quantiles, spacing)
    if method == "grid":
        return grid_dictionary(stats, size, quantiles, spacing)
    if method == "sample":
        return sample_dictionary(stats, size, quantiles, seed)
    raise DictionaryRequestError(f"method must be one of {METHODS}, got {method!r}")


def ellipse_axes(kernels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(major std, minor std, angle in degrees) of each kernel's Sigma = L L^T (for drawing)."""
    k = np.asarray(kernels, dtype=np.float64)
    a, b, c = k[:, 0] ** 2, k[:, 0] * k[:, 1], k[:, 1] ** 2 + k[:, 2] ** 2
    half_trace, diff = (a + c) / 2, np.sqrt(((a - c) / 2) ** 2 + b**2)
    major = np.sqrt(np.maximum(half_trace + diff, 0))
    minor = np.sqrt(np.maximum(half_trace - diff, 0))
    angle = np.degrees(0.5 * np.arctan2(2 * b, a - c))
    return major, minor, angle


__all__ = [
    "DEFAULT_QUANTILES",
    "DEFAULT_SIZE",
    "METHODS",
    "SPACINGS",
    "DictionaryRequestError",
    "build_dictionary",
    "check_quantiles",
    "check_request",
    "ellipse_axes",
    "grid_dictionary",
    "grid_side",
    "sample_dictionary",
]
