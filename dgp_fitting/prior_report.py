"""Stage 2 end to end (what `p2g prior-stats` runs): statistics -> store, dictionary -> store, files -> --out.

`--out` receives summary.json (the statistics summary plus the dictionary's provenance; no timestamps or
paths, so reruns give identical bytes), summary.md (the same as tables), dictionary.npy + dictionary.json
(the export the model loads, HR px at x4) and the plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dgp_fitting.atomic_outputs import stats_transaction
from dgp_fitting.dictionary_sampling import DEFAULT_QUANTILES, DEFAULT_SIZE, build_dictionary, check_request
from dgp_fitting.job_limits import check_stats_numbers, free_memory
from dgp_fitting.prior_plots import write_plots
from dgp_fitting.prior_stats import (
    CHOLESKY,
    ELEMENTS,
    LABELS,
    QUANTILES,
    PriorStatistics,
    compute_statistics,
    is_current,
    load_statistics,
    quantile_key,
)
from prior_store import STATUS_DONE, open_store
from prior_store.dictionary import export_npy, write_dictionary
from prior_store.integrity import require_intact
from prior_store.lock import check_writable, store_lock
from prior_store.store import StoreError


class StaleStatisticsError(StoreError):
    """Stored statistics that no longer describe the store's crops (or another --min-psnr)."""


@dataclass
class PriorStatsResult:
    """What one run produced: the statistics, the dictionary and its provenance, and the files written."""

    stats: PriorStatistics
    kernels: np.ndarray
    provenance: dict
    files: list[Path] = field(default_factory=list)

    def lines(self) -> list[str]:
        s = self.stats.summary
        sel, scale = s["selection"], s["reference_scale"]
        floor = "" if s["config"]["min_psnr"] is None else f" with PSNR >= {s['config']['min_psnr']:g} dB"
        out = [
            f"statistics: {sel['crop_count']} crops{floor} ({sel['done']} done of {sel['crops']}), "
            f"{sel['gaussians']:,} Gaussians; HR px at x{scale}"
        ]
        for name in CHOLESKY:
            hr, q = s["elements"][name]["hr"], s["elements"][name]["hr"]["quantiles"]
            lo, hi = s["paper_ranges"]["hr"][name]
            out.append(
                f"  {name}: mean {hr['mean']:.3f}, std {hr['std']:.3f}, 0.5-99.5 % [{q['0.5']:.3f}, "
                f"{q['99.5']:.3f}]; {100 * s['paper_ranges']['inside'][name]:.2f} % inside the paper's "
                f"{lo:g}..{hi:g}"
            )
        out.append(f"  all three inside the paper's ranges: {100 * s['paper_ranges']['inside']['all']:.2f} %")
        p = self.provenance
        seed = "" if p["seed"] is None else f", seed {p['seed']}"
        out.append(
            f"dictionary: {p['method']}, {p['size']} kernels (HR px at x{p['reference_scale']}), quantiles "
            f"{100 * p['quantiles'][0]:g}-{100 * p['quantiles'][1]:g} %{seed}, {p['content_hash'][:19]}"
        )
        out += [f"wrote {path}" for path in self.files]
        return out


def run_prior_stats(
    store: str | Path,
    out: str | Path,
    method: str = "grid",
    size: int = DEFAULT_SIZE,
    min_psnr: float | None = None,
    quantiles=DEFAULT_QUANTILES,
    seed: int = 0,
    spacing: str = "linear",
    reuse_stats: bool = False,
    scheduler: str | None = None,
    threads: int | None = None,
) -> PriorStatsResult:
    """Compute (or, with `reuse_stats`, load) the statistics, derive the dictionary, write store and files.

    `scheduler` (a Dask scheduler's address) or `threads` (local threads) say where the statistics run."""
    check_request(method, size, quantiles, spacing)  # before anything is computed or overwritten
    check_stats_numbers(int(size), min_psnr, int(seed), threads, free_memory())
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder for the statistics and plots")
    with store_lock(store, "prior-stats"):
        check_writable(store)
        require_intact(store)  # a missing chunk reads as zeros and would change every statistic
        return _run_locked(
            store, out, method, size, min_psnr, quantiles, seed, spacing, reuse_stats, scheduler, threads
        )


def _run_locked(
    store, out: Path, method, size, min_psnr, quantiles, seed, spacing, reuse_stats, scheduler, threads
) -> PriorStatsResult:
    if reuse_stats:
        stats = load_statistics(store)
        why = is_current(stats, store, min_psnr)
        if why is not None:
            raise StaleStatisticsError(
                f"the statistics stored in {store} are out of date ({why}); rerun without "
                "--reuse-stats to recompute them"
            )
    else:
        stats = compute_statistics(store, min_psnr, scheduler=scheduler, threads=threads)
    kernels, provenance = build_dictionary(stats, method, size, quantiles, seed, spacing)
    json.dumps(stats.summary, allow_nan=False)  # a NaN anywhere fails here, before anything is written
    with stats_transaction(store, out) as staging:
        if not reuse_stats:
            stats.write(store)
        record = write_dictionary(store, kernels, provenance)
        summary = dict(stats.summary, dictionary=record)
        names = [Path("summary.json"), Path("summary.md")]
        (staging / names[0]).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        (staging / names[1]).write_text(summary_markdown(summary))
        names += [Path(p.name) for p in export_npy(store, staging / "dictionary.npy")]
        names += [Path(p.name) for p in write_plots(stats, kernels, record, _done_psnr(store), staging)]
    return PriorStatsResult(stats, kernels, record, [out / name for name in names])


def _done_psnr(store: str | Path) -> np.ndarray:
    opened = open_store(store)
    psnr = np.asarray(opened.read("crops/psnr"), dtype=np.float64)
    return psnr[opened.status() == STATUS_DONE]


def _f(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary_markdown(summary: dict) -> str:
    """The summary as markdown tables (HR px first, then LR px), for people."""
    lines = [
        *_overview_lines(summary),
        *_element_tables(summary),
        *_paper_range_table(summary),
        *_correlation_table(summary),
        *_content_tables(summary),
        *_dictionary_lines(summary.get("dictionary")),
    ]
    return "\n".join(lines)


def _overview_lines(summary: dict) -> list[str]:
    sel, cfg, scale = summary["selection"], summary["config"], summary["reference_scale"]
    floor = "none" if cfg["min_psnr"] is None else f"{cfg['min_psnr']:g} dB"
    psnr = summary["psnr"]["used"]
    return [
        "# Deep Gaussian Prior statistics",
        "",
        f"- crops used: {sel['crop_count']} of {sel['done']} done ({sel['crops']} in the store), PSNR floor {floor}",
        f"- Gaussians: {sel['gaussians']:,}; reference scale x{scale} (1 LR px = {scale} HR px)",
        f"- fitted PSNR of the crops used: median {psnr['median']:.2f} dB, 5th percentile {psnr['p5']:.2f} dB, "
        f"range {psnr['min']:.2f}..{psnr['max']:.2f} dB",
        "- quantiles are read from a fine histogram (16384 bins between each element's min and max)",
        "",
    ]


def _element_tables(summary: dict) -> list[str]:
    """One table per unit (HR px, then LR px): moments, quantiles and the fitted normal of each element."""
    scale = summary["reference_scale"]
    head = "| element | mean | std | " + " | ".join(f"{quantile_key(q)} %" for q in QUANTILES)
    lines: list[str] = []
    for unit, title in (
        ("hr", f"HR px at x{scale} (covariance entries HR px^2)"),
        ("lr", "LR px (covariance entries LR px^2)"),
    ):
        lines += [
            f"## Elements in {title}",
            "",
            head + " | normal 99 % interval | KS distance to normal |",
            "|---" * (len(QUANTILES) + 5) + "|",
        ]
        for name in ELEMENTS:
            e = summary["elements"][name]
            u = e[unit]
            interval = u["normal"]["interval_99"]
            lines.append(
                f"| {LABELS[name]} | {_f(u['mean'])} | {_f(u['std'])} | "
                + " | ".join(_f(u["quantiles"][quantile_key(q)]) for q in QUANTILES)
                + f" | {'n/a' if interval is None else f'{interval[0]:.4f}..{interval[1]:.4f}'}"
                + f" | {_f(e['normal_ks_distance'], 4)} |"
            )
        lines.append("")
    return lines


def _paper_range_table(summary: dict) -> list[str]:
    paper = summary["paper_ranges"]
    lines = [
        f"## Against the paper's ranges (given in HR px at x4; here HR px at x{summary['reference_scale']})",
        "",
        "| element | paper range | our 0.5..99.5 % | our min..max | inside the paper range |",
        "|---|---|---|---|---|",
    ]
    for name in CHOLESKY:
        hr = summary["elements"][name]["hr"]
        lo, hi = paper["hr"][name]
        lines.append(
            f"| {name} | {lo:g}..{hi:g} | {hr['quantiles']['0.5']:.3f}..{hr['quantiles']['99.5']:.3f} | "
            f"{hr['min']:.3f}..{hr['max']:.3f} | {100 * paper['inside'][name]:.2f} % |"
        )
    return [*lines, "", f"All three elements inside: {100 * paper['inside']['all']:.2f} % of the Gaussians.", ""]


def _correlation_table(summary: dict) -> list[str]:
    lines = [
        "## Correlation",
        "",
        "| | " + " | ".join(LABELS[e] for e in ELEMENTS) + " |",
        "|---" * (len(ELEMENTS) + 1) + "|",
    ]
    for name, row in zip(ELEMENTS, summary["correlation"]["matrix"]):
        lines.append(f"| {LABELS[name]} | " + " | ".join(_f(v, 3) for v in row) + " |")
    return lines


def _content_tables(summary: dict) -> list[str]:
    """Per-crop means in terciles of fitted PSNR and of gradient energy, with the rank correlation of each."""
    content = summary["by_content"]
    lines = ["", "## By image content (per-crop means, HR px; terciles of each measure)", ""]
    for feature, label in (("psnr", "fitted PSNR (dB)"), ("gradient_energy", "gradient energy")):
        rho = content["spearman_sqrt_det"][feature]
        lines += [
            f"{label}: Spearman correlation with per-crop mean sqrt(det Sigma) = {_f(rho, 3)}",
            "",
            f"| crops | {label} | mean l11 | mean l21 | mean l22 | mean sqrt(det Sigma) |",
            "|---|---|---|---|---|---|",
        ]
        for group in content["groups"][feature]:
            lo, hi = group[feature]
            lines.append(
                f"| {group['crops']} | {lo:.4g}..{hi:.4g} | {group['mean_l11']:.3f} | "
                f"{group['mean_l21']:.3f} | {group['mean_l22']:.3f} | {group['mean_sqrt_det']:.3f} |"
            )
        lines.append("")
    return lines


def _dictionary_lines(d: dict | None) -> list[str]:
    if not d:
        return []
    lines = [
        "## Dictionary",
        "",
        f"{d['method']}, {d['size']} kernels in HR px at x{d['reference_scale']}, quantiles "
        f"{100 * d['quantiles'][0]:g}..{100 * d['quantiles'][1]:g} %, seed {d['seed']}, from "
        f"{d['crop_count']} crops; {d['content_hash']}",
        "",
    ]
    if "values" in d:
        for name in CHOLESKY:
            lines.append(f"- {name}: " + ", ".join(f"{v:.3f}" for v in d["values"][name]))
        lines.append("")
    return lines


__all__ = ["PriorStatsResult", "StaleStatisticsError", "run_prior_stats", "summary_markdown"]
