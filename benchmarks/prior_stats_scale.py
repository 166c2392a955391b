"""Prior stores of 10^4 to 10^6 crops: file count, `p2g info` time, `p2g prior-stats` peak RSS and time.

Synthetic stores are drawn from a measured store (`--source`, or a small store this script fits first from
scikit-image photos: 64 px crops, demo preset): every synthetic crop is a whole done crop of the source, picked
at random (seeded), with its Cholesky triplets, colours, centres and PSNR, so the synthetic store has the
source's distribution of Gaussians and of per-crop values. They are written shard by shard, not fitted.
Each command then runs in a fresh process; its peak RSS is the process's maximum resident set size.

    python benchmarks/prior_stats_scale.py --workdir SCRATCH                 # 10^4 and 10^5 crops
    python benchmarks/prior_stats_scale.py --workdir SCRATCH --crops 1000000 # the million-crop point (~32 GB)

The stores are deleted afterwards unless --keep. Timings on a shared machine are noisy: read the time per
million Gaussians across sizes (linear growth keeps it flat) and report the load average beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def fit_source(path: Path, crops_per_photo: int = 4) -> None:
    """A small measured store: 64 px crops of scikit-image photos, demo preset, fitted in this process."""
    from PIL import Image
    from skimage import data

    from dgp_fitting.fitting import FitConfig
    from dgp_fitting.job_plan import JobPlan
    from dgp_fitting.prior_job import fit_chunk, prepare_store

    photos = path.parent / "source_photos"
    photos.mkdir(parents=True, exist_ok=True)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field"):
        image = getattr(data, name)()
        Image.fromarray(image[..., :3] if image.ndim == 3 else np.stack([image] * 3, -1)).save(photos / f"{name}.png")
    fit = FitConfig(steps=100)
    store = prepare_store(JobPlan([photos], path, crop=64, crops_per_image=crops_per_photo, fit=fit), batch=8)
    for index in range(store.num_chunks):
        fit_chunk(str(path), index, root=".", device="cpu")


def build_synthetic(source: Path, path: Path, crops: int, chunk: int, seed: int = 0) -> None:
    """`crops` crops resampled whole from the done crops of `source`, written one shard at a time."""
    from prior_store import STATUS_DONE, StoreConfig, create_store, open_store

    src = open_store(source)
    done = np.flatnonzero(src.status() == STATUS_DONE)
    if done.size == 0:
        raise SystemExit(f"{source} has no done crops to draw from")
    pool = {
        name: np.asarray(src.read(name))[done]
        for name in ("field/means", "field/chol", "field/colors", "crops/psnr", "crops/iterations")
    }
    config = StoreConfig(
        crop_size=src.config.crop_size,
        chunk_size=chunk,
        reference_scale=src.config.reference_scale,
        k=src.config.k,
        fitting={**src.config.fitting, "synthetic_from": str(source)},
    )
    box = [0, 0, src.config.crop_size, src.config.crop_size]
    store = create_store(
        path,
        config,
        [f"synthetic/{i:07d}.png" for i in range(crops)],
        np.broadcast_to(np.array(box, np.int32), (crops, 4)),
    )
    rng = np.random.default_rng(seed)
    for index in range(store.num_shards):
        start, stop = store.shard_bounds(index)
        pick = rng.integers(0, done.size, stop - start)
        n = stop - start
        store.write_shard(
            index,
            {
                **{name: values[pick] for name, values in pool.items()},
                "crops/content_hash": [""] * n,
                "crops/reason": [""] * n,
                "crops/status": np.full(n, STATUS_DONE, np.int8),
            },
        )


def run_measured(cmd: list[str], log: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of a command in a fresh process; its output goes to `log`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as fh:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log.read_text()[-3000:]}")
    return seconds, usage.ru_maxrss * 1024


def count_files(path: Path) -> tuple[int, int, int]:
    """(files, of which zarr.json metadata, bytes on disk)."""
    files = meta = size = 0
    for root, _, names in os.walk(path):
        for name in names:
            files += 1
            meta += name == "zarr.json"
            size += os.stat(os.path.join(root, name)).st_blocks * 512
    return files, meta, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crops", default="10000,100000", help="comma-separated crop counts")
    parser.add_argument("--chunk", type=int, default=8, help="crops per store chunk (the job's default batch)")
    parser.add_argument("--source", type=Path, help="measured store to draw crops from (default: fit a small one)")
    parser.add_argument("--workdir", type=Path, required=True, help="where the stores are built")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic stores")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = args.source
    if source is None:
        source = args.workdir / "source.zarr"
        if not source.exists():
            start = time.perf_counter()
            fit_source(source)
            print(f"fitted the source store {source} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    python = sys.executable
    rows = []
    for crops in (int(c) for c in args.crops.split(",")):
        path = args.workdir / f"synthetic_{crops}.zarr"
        out = args.workdir / f"stats_{crops}"
        try:
            start = time.perf_counter()
            shutil.rmtree(path, ignore_errors=True)
            build_synthetic(source, path, crops, args.chunk)
            build = time.perf_counter() - start
            files, meta, size = count_files(path)
            info_s, info_rss = run_measured(
                [python, "-m", "workflows.cli", "info", str(path)], args.workdir / f"info_{crops}.log"
            )
            stats_s, stats_rss = run_measured(
                [python, "-m", "workflows.cli", "prior-stats", "--store", str(path), "--out", str(out)],
                args.workdir / f"prior_stats_{crops}.log",
            )
            summary = json.loads((out / "summary.json").read_text())
            gaussians = summary["selection"]["gaussians"]
            row = {
                "crops": crops,
                "gaussians": gaussians,
                "files": files,
                "metadata_files": meta,
                "bytes": size,
                "build_s": build,
                "info_s": info_s,
                "info_peak_rss": info_rss,
                "stats_s": stats_s,
                "stats_peak_rss": stats_rss,
                "stats_s_per_million_gaussians": stats_s / gaussians * 1e6,
                "l11_mean_hr": summary["elements"]["l11"]["hr"]["mean"],
                "load": os.getloadavg(),
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        finally:
            if not args.keep:
                shutil.rmtree(path, ignore_errors=True)
                shutil.rmtree(out, ignore_errors=True)
    gib, mib = 2**30, 2**20
    print(f"source store: {source}")
    print(
        "| crops | Gaussians | files (metadata) | on disk | build | p2g info | prior-stats | s per 10^6 Gaussians "
        "| prior-stats peak RSS | l11 mean (HR px) | load average |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['crops']:,} | {r['gaussians']:,} | {r['files']:,} ({r['metadata_files']}) | "
            f"{r['bytes'] / gib:.2f} GiB | {r['build_s']:.0f} s | {r['info_s']:.1f} s | {r['stats_s']:.0f} s | "
            f"{r['stats_s_per_million_gaussians']:.3f} | {r['stats_peak_rss'] / mib:.0f} MiB | "
            f"{r['l11_mean_hr']:.4f} | {r['load'][0]:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
