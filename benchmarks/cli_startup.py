"""Start-up time of the `p2g` command line: `p2g --version`, `p2g --help` and every `p2g VERB --help`, each a fresh
process, against `python -c pass`, and against the eager start-up the CLI had before its verbs were loaded lazily.

    PYTHONPATH=. .venv/bin/python benchmarks/cli_startup.py            # medians of 5 runs per command
    PYTHONPATH=. .venv/bin/python benchmarks/cli_startup.py --repeats 3 --json

"eager" runs the same command after importing what the verb modules imported at module level before (torch,
the model, the Dask job, the Zarr store: `OLD_VERB_IMPORTS`), which is what every command paid then. All figures
come from one run, interleaved, so machine load affects both sides; compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

#: The project modules the verb modules imported at module level before the lazy group (every verb, every run).
OLD_VERB_IMPORTS = (
    "gaussian_field",
    "gaussian_field.image_io",
    "gaussian_field.speed",
    "sr_model.api",
    "sr_model.files.checkpoint",
    "sr_model.inference.upscale_files",
    "sr_model.evaluation.evaluate",
    "sr_model.training.state",
    "sr_model.training.loop",
    "sr_model.networks.presets",
    "dgp_fitting.clusters",
    "dgp_fitting.fitting",
    "dgp_fitting.prior_job",
    "dgp_fitting.dictionary_sampling",
    "dgp_fitting.prior_report",
    "prior_store",
    "prior_store.dictionary",
    "yaml",
)
#: The target: every lazy command answers within this many seconds (wall, median).
TARGET_S = 1.0
RUN_CLI = "from workflows.cli import main; main()"


def command_lines() -> list[tuple[str, list[str]]]:
    from workflows.cli import VERBS

    lines = [("--version", ["--version"]), ("--help", ["--help"])]
    return lines + [(f"{verb} --help", [verb, "--help"]) for verb in sorted(VERBS)]


def wall_time(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds


def measure(repeats: int, eager_for: tuple[str, ...]) -> dict:
    python = sys.executable
    eager_code = "".join(f"import {name}; " for name in OLD_VERB_IMPORTS) + RUN_CLI
    cases = {"python -c pass": [python, "-c", "pass"]}
    for label, args in command_lines():
        cases[f"p2g {label}"] = [python, "-c", RUN_CLI, *args]
        if label in eager_for:
            cases[f"p2g {label} (eager)"] = [python, "-c", eager_code, *args]
    for argv in cases.values():  # warm the file cache once
        wall_time(argv)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):  # interleaved, so that a burst of load hits every case alike
        for name, argv in cases.items():
            times[name].append(wall_time(argv))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["python -c pass"]
    rows = []
    for name, median in medians.items():
        row = {"command": name, "median_s": median, "vs_python": median / base}
        eager = medians.get(f"{name} (eager)")
        if eager is not None:
            row["eager_over_lazy"] = eager / median
        rows.append(row)
    lazy = [r for r in rows if r["command"].startswith("p2g") and not r["command"].endswith("(eager)")]
    slowest = max(lazy, key=lambda r: r["median_s"])
    return {
        "repeats": repeats,
        "load_average": os.getloadavg(),
        "rows": rows,
        "target": {
            "limit_s": TARGET_S,
            "slowest": slowest["command"],
            "slowest_s": slowest["median_s"],
            "met": slowest["median_s"] <= TARGET_S,
        },
    }


def report_lines(report: dict) -> list[str]:
    load = ", ".join(f"{v:.2f}" for v in report["load_average"])
    lines = [f"p2g start-up, wall time of a fresh process, median of {report['repeats']} (load average {load})"]
    for row in report["rows"]:
        extra = f"   eager / lazy {row['eager_over_lazy']:.1f}x" if "eager_over_lazy" in row else ""
        lines.append(f"  {row['command']:<32} {row['median_s'] * 1000:8.1f} ms  {row['vs_python']:6.1f}x python{extra}")
    t = report["target"]
    lines.append(
        f"target: every lazy command <= {t['limit_s']:g} s: slowest {t['slowest']} {t['slowest_s']:.3f} s -> "
        + ("met" if t["met"] else "NOT met")
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per command (median reported).")
    parser.add_argument(
        "--eager",
        default="--version,--help,upscale --help",
        help="Commands also timed with the old eager imports (comma-separated).",
    )
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    args = parser.parse_args()
    report = measure(args.repeats, tuple(c.strip() for c in args.eager.split(",") if c.strip()))
    print(json.dumps(report) if args.json else "\n".join(report_lines(report)))


if __name__ == "__main__":
    main()
