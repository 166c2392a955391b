"""Plots of the prior statistics and the dictionary (matplotlib's object API on the Agg canvas: headless,
no pyplot state). Everything is drawn in HR px at the store's reference scale, with the paper's ranges
(given at x4, converted) for comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from dgp_fitting.dictionary_sampling import ellipse_axes
from dgp_fitting.prior_stats import (
    CHOLESKY,
    ELEMENTS,
    HISTOGRAM_RANGES_LR,
    JOINT_PAIRS,
    LABELS,
    PER_CROP_COLUMNS,
    UNIT_POWER,
    PriorStatistics,
)

#: Crops drawn in the per-crop scatter plots at most (Spearman values still use every crop).
MAX_SCATTER_POINTS = 20000
PLOT_FILES = ("element_histograms.png", "joint_densities.png", "dictionary.png", "psnr.png", "per_crop.png")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def _unit(stats: PriorStatistics, element: str) -> str:
    return f"HR px{'^2' if UNIT_POWER[element] == 2 else ''} at x{stats.reference_scale}"


def _edges_hr(stats: PriorStatistics, element: str, bins: int) -> np.ndarray:
    lo, hi = HISTOGRAM_RANGES_LR[element]
    return stats.to_hr(element, np.linspace(lo, hi, bins + 1))


def _view(stats: PriorStatistics, element: str) -> tuple[float, float]:
    """Axis limits (HR): the 0.5-99.5 % interval and the paper's range, padded, within the histogram range."""
    hr = stats.summary["elements"][element]["hr"]
    lo, hi = hr["quantiles"]["0.5"], hr["quantiles"]["99.5"]
    if element in CHOLESKY:
        plo, phi = stats.summary["paper_ranges"]["hr"][element]
        lo, hi = min(lo, plo), max(hi, phi)
    pad = 0.25 * max(hi - lo, 1e-9)
    edges = _edges_hr(stats, element, 1)
    return max(lo - pad, float(edges[0])), min(hi + pad, float(edges[-1]))


def plot_element_histograms(stats: PriorStatistics, path: Path) -> Path:
    """Per element: histogram (density), the fitted normal, the 0.5-99.5 % interval and the paper's range."""
    fig = _figure(13, 7)
    axes = fig.subplots(2, 3)
    summary = stats.summary
    for ax, name in zip(axes.flat, ELEMENTS):
        i = ELEMENTS.index(name)
        counts = stats.arrays["histograms"][i].astype(np.float64)
        edges = _edges_hr(stats, name, counts.size)
        width = np.diff(edges)
        density = counts / max(summary["selection"]["gaussians"], 1) / width
        ax.stairs(density, edges, fill=True, alpha=0.5, color="tab:blue", label="fitted Gaussians")
        hr = summary["elements"][name]["hr"]
        if hr["std"] > 0:
            xs = np.linspace(edges[0], edges[-1], 400)
            ax.plot(
                xs,
                scipy_stats.norm.pdf(xs, hr["mean"], hr["std"]),
                color="tab:red",
                lw=1.2,
                label=f"normal fit (KS {summary['elements'][name]['normal_ks_distance']:.3f})",
            )
        lo, hi = hr["quantiles"]["0.5"], hr["quantiles"]["99.5"]
        ax.axvline(lo, color="black", ls="--", lw=1, label="0.5-99.5 % interval")
        ax.axvline(hi, color="black", ls="--", lw=1)
        if name in CHOLESKY:
            plo, phi = summary["paper_ranges"]["hr"][name]
            inside = summary["paper_ranges"]["inside"][name]
            ax.axvspan(plo, phi, color="tab:green", alpha=0.12, label=f"paper range ({100 * inside:.1f} % inside)")
        ax.set_xlim(*_view(stats, name))
        ax.set_title(f"{LABELS[name]}: mean {hr['mean']:.3f}, std {hr['std']:.3f}")
        ax.set_xlabel(f"{LABELS[name]} ({_unit(stats, name)})")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle(
        f"Fitted covariances: {summary['selection']['gaussians']:,} Gaussians of "
        f"{summary['selection']['crop_count']} crops"
    )
    return _save(fig, path)


def plot_joint_densities(stats: PriorStatistics, path: Path, kernels: np.ndarray | None = None) -> Path:
    """2D densities (log counts) of the Cholesky element pairs, with the paper's box and the dictionary."""
    fig = _figure(15, 4.8)
    axes = fig.subplots(1, len(JOINT_PAIRS))
    summary = stats.summary
    for p, (ax, (x, y)) in enumerate(zip(axes, JOINT_PAIRS)):
        counts = stats.arrays["joint_histograms"][p].astype(np.float64)
        ex, ey = _edges_hr(stats, x, counts.shape[0]), _edges_hr(stats, y, counts.shape[1])
        mesh = ax.pcolormesh(ex, ey, np.log10(counts.T + 1), cmap="viridis", shading="flat")
        fig.colorbar(mesh, ax=ax, label="log10(count + 1)")
        (x0, x1), (y0, y1) = summary["paper_ranges"]["hr"][x], summary["paper_ranges"]["hr"][y]
        ax.plot([x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0], color="white", ls="--", lw=1, label="paper ranges")
        if kernels is not None:
            ix, iy = CHOLESKY.index(x), CHOLESKY.index(y)
            ax.scatter(kernels[:, ix], kernels[:, iy], s=4, color="tab:red", label="dictionary")
        ax.set_xlim(*_view(stats, x))
        ax.set_ylim(*_view(stats, y))
        ax.set_xlabel(f"{x} ({_unit(stats, x)})")
        ax.set_ylabel(f"{y} ({_unit(stats, y)})")
        ax.set_title(f"{x} vs {y}")
        ax.legend(fontsize=7, loc="upper right")
    fig.suptitle("Joint densities of the fitted Cholesky elements")
    return _save(fig, path)


def plot_dictionary(kernels: np.ndarray, provenance: dict, path: Path) -> Path:
    """Each kernel's 1-sigma ellipse (HR px, y down) in its own cell of a square grid."""
    kernels = np.asarray(kernels, dtype=np.float64)
    count = kernels.shape[0]
    cols = int(np.ceil(np.sqrt(count)))
    major, _minor, _angle = ellipse_axes(kernels)
    cell = 2.2 * max(float(major.max()), 1e-6)
    t = np.linspace(0, 2 * np.pi, 48)
    circle = np.stack([np.cos(t), np.sin(t)], axis=1)  # unit circle; L maps it to the 1-sigma ellipse
    lines, flat = [], []
    for i, (l11, l21, l22) in enumerate(kernels):
        centre = np.array([(i % cols) * cell, (i // cols) * cell])
        if l11 * l22 == 0:
            flat.append(centre)
        lines.append(centre + circle @ np.array([[l11, 0.0], [l21, l22]]).T)
    fig = _figure(10, 10)
    ax = fig.subplots()
    ax.add_collection(LineCollection(lines, linewidths=0.6, colors="tab:blue"))
    if flat:
        flat_arr = np.array(flat)
        ax.scatter(flat_arr[:, 0], flat_arr[:, 1], marker="x", s=12, color="tab:red", label="degenerate kernels")
        ax.legend(fontsize=8, loc="lower right")
    rows = int(np.ceil(count / cols))
    ax.set_xlim(-cell, cols * cell)
    ax.set_ylim(rows * cell, -cell)  # y down, as image coordinates
    ax.set_aspect("equal")
    ax.set_xlabel(f"x (HR px at x{provenance['reference_scale']}; cells {cell:.2f} px apart)")
    ax.set_ylabel("y (HR px, down)")
    quantiles = provenance.get("quantiles") or [0, 1]
    ax.set_title(
        f"{provenance['method']} dictionary: {count} kernels (1-sigma ellipses), quantiles "
        f"{100 * quantiles[0]:g}-{100 * quantiles[1]:g} %, from {provenance['crop_count']} crops"
    )
    return _save(fig, path)


def plot_psnr(done_psnr: np.ndarray, min_psnr: float | None, path: Path) -> Path:
    """Histogram of the fitted PSNR of the done crops, with the floor used for the statistics."""
    psnr = np.asarray(done_psnr, dtype=np.float64)
    psnr = psnr[np.isfinite(psnr)]
    fig = _figure(7, 4.5)
    ax = fig.subplots()
    bins = np.arange(np.floor(psnr.min()), np.ceil(psnr.max()) + 1.0, 0.5) if psnr.size else 10
    ax.hist(psnr, bins=bins, color="tab:blue", alpha=0.7, label=f"{psnr.size} done crops")
    if min_psnr is not None:
        ax.axvline(min_psnr, color="tab:red", ls="--", label=f"--min-psnr {min_psnr:g} dB")
    ax.set_xlabel("fitted PSNR (dB)")
    ax.set_ylabel("crops")
    ax.set_title(f"Fitted PSNR of the crops (median {np.median(psnr):.2f} dB)" if psnr.size else "Fitted PSNR")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_per_crop(stats: PriorStatistics, path: Path) -> Path:
    """Per-crop mean sqrt(det Sigma) against fitted PSNR and against the field's gradient energy."""
    table = stats.arrays["per_crop"]
    shown = ""
    if table.shape[0] > MAX_SCATTER_POINTS:  # evenly spaced rows: a readable plot in bounded time and memory
        table = table[np.linspace(0, table.shape[0] - 1, MAX_SCATTER_POINTS).round().astype(np.int64)]
        shown = f" ({MAX_SCATTER_POINTS:,} of {stats.arrays['per_crop'].shape[0]:,} crops shown)"
    col = {name: i for i, name in enumerate(PER_CROP_COLUMNS)}
    fig = _figure(11, 4.5)
    axes = fig.subplots(1, 2)
    rho = stats.summary["by_content"]["spearman_sqrt_det"]
    for ax, feature, label in (
        (axes[0], "psnr", "fitted PSNR (dB)"),
        (axes[1], "gradient_energy", "gradient energy of the field's LR image ((intensity/LR px)^2)"),
    ):
        ax.scatter(table[:, col[feature]], table[:, col["sqrt_det"]], s=8, alpha=0.7)
        if feature == "gradient_energy" and (table[:, col[feature]] > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"mean l11*l22 = sqrt(det Sigma) (HR px^2 at x{stats.reference_scale})")
        value = rho[feature]
        ax.set_title(
            f"Gaussian size vs {feature.replace('_', ' ')} (Spearman {'n/a' if value is None else f'{value:.2f}'})"
        )
    fig.suptitle("Per-crop statistics" + shown)
    return _save(fig, path)


def write_plots(
    stats: PriorStatistics, kernels: np.ndarray, provenance: dict, done_psnr: np.ndarray, out_dir: Path
) -> list[Path]:
    """All plots into `out_dir` (overwritten), in PLOT_FILES order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_element_histograms(stats, out_dir / PLOT_FILES[0]),
        plot_joint_densities(stats, out_dir / PLOT_FILES[1], kernels),
        plot_dictionary(kernels, provenance, out_dir / PLOT_FILES[2]),
        plot_psnr(done_psnr, stats.summary["config"]["min_psnr"], out_dir / PLOT_FILES[3]),
        plot_per_crop(stats, out_dir / PLOT_FILES[4]),
    ]


__all__ = [
    "PLOT_FILES",
    "plot_dictionary",
    "plot_element_histograms",
    "plot_joint_densities",
    "plot_per_crop",
    "plot_psnr",
    "write_plots",
]
