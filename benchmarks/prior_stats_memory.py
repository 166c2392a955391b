"""Peak memory of the prior statistics against the store's size: it should stay flat.

Builds synthetic prior stores (random Cholesky triplets, zero means/colours, no fitting) of several crop counts,
then runs `compute_statistics` on each in a fresh process and reports that process's peak RSS next to the
size of ``field/chol`` (what the statistics read). Timings on a shared machine are noisy; the ratio of peak
RSS to data size and its trend over store sizes are the point.

    python benchmarks/prior_stats_memory.py                      # 256 and 2048 crops of 256 px (16384 Gaussians each)
    python benchmarks/prior_stats_memory.py --crops 500,4000 --crop 128
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_store(path: Path, crops: int, crop: int, chunk: int, seed: int = 0) -> None:
    from prior_store import STATUS_DONE, StoreConfig, create_store

    config = StoreConfig(crop_size=crop, chunk_size=chunk, fitting={"synthetic": True})
    store = create_store(
        path, config, [f"synthetic/{i}.png" for i in range(crops)], np.array([[0, 0, crop, crop]] * crops, np.int32)
    )
    g = config.num_gaussians
    rng = np.random.default_rng(seed)
    for index in range(store.num_chunks):
        a, b = store.chunk_bounds(index)
        n = b - a
        chol = rng.normal([0.28, 0.02, 0.26], [0.08, 0.1, 0.07], size=(n, g, 3)).astype(np.float32)
        chol[..., 0] = np.abs(chol[..., 0])
        chol[..., 2] = np.abs(chol[..., 2])
        store.write_chunk(
            index,
            {
                "field/means": np.zeros((n, g, 2), np.float32),
                "field/chol": chol,
                "field/colors": np.zeros((n, g, 3), np.float32),
                "crops/content_hash": [""] * n,
                "crops/reason": [""] * n,
                "crops/psnr": rng.uniform(28, 40, n).astype(np.float32),
                "crops/iterations": np.zeros(n, np.int32),
                "crops/status": np.full(n, STATUS_DONE, np.int8),
            },
        )


def measure(path: str) -> dict:
    """Run in a fresh process: RSS after imports, then statistics, then the process's peak RSS."""
    import dask.array  # noqa: F401  (imports counted in the baseline)
    import scipy.stats  # noqa: F401

    from dgp_fitting.prior_stats import compute_statistics

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    stats = compute_statistics(path)
    seconds = time.perf_counter() - start
    return {
        "baseline_rss": baseline,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "seconds": seconds,
        "gaussians": stats.summary["selection"]["gaussians"],
    }


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", default="256,2048", help="comma-separated crop counts")
    parser.add_argument("--crop", type=int, default=256, help="crop side in HR px (Gaussians per crop: (crop/4)^2*4)")
    parser.add_argument("--chunk", type=int, default=16, help="crops per store chunk")
    parser.add_argument("--workdir", type=Path, help="where to build the stores (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="prior_stats_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for crops in (int(c) for c in args.crops.split(",")):
            path = work / f"synthetic_{crops}.zarr"
            if not path.exists():
                start = time.perf_counter()
                build_store(path, crops, args.crop, args.chunk)
                print(f"built {path.name} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            out = subprocess.run(
                [sys.executable, __file__, "--measure", str(path)], check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            chol_bytes = result["gaussians"] * 3 * 4
            rows.append((crops, result, chol_bytes, disk_bytes(path / "field" / "chol")))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    mib = 2**20
    print(
        "| crops | Gaussians | field/chol (float32) | on disk | RSS after imports | peak RSS | peak - imports "
        "| peak / chol | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for crops, r, chol_bytes, disk in rows:
        print(
            f"| {crops} | {r['gaussians']:,} | {chol_bytes / mib:.0f} MiB | {disk / mib:.0f} MiB | "
            f"{r['baseline_rss'] / mib:.0f} MiB | {r['peak_rss'] / mib:.0f} MiB | "
            f"{(r['peak_rss'] - r['baseline_rss']) / mib:.0f} MiB | {r['peak_rss'] / chol_bytes:.2f} | "
            f"{r['seconds']:.1f} |"
        )


if __name__ == "__main__":
    main()
