"""What overlapping a fitting task's stages buys: one shard fitted in line (load, fit, write per chunk, as
`fit_chunk` does) against the pipelined task (`fit_shard`: the next chunk decoded and the previous one written
on CPU threads while a chunk fits), on the same photos, the same plan and the same device, in one run.

The gain is the decode and write time hidden behind fitting, so it matters where fitting is fast: on a GPU, a
batch of hundreds of crops fits in seconds. On a CPU the quality preset's fitting dwarfs decoding; `--steps`
shortens the fits to put a CPU run in a GPU-like regime (say so when you quote it). Both stores are compared
crop by crop: the pipeline must change no byte.

    python benchmarks/fit_overlap.py [--images DIR] [--crop 64] [--crops-per-image 8] [--batch 16] [--steps 20]
                                     [--device cpu] [--repeats 2]

Default photos: the folder `make data` fills (data/wallpapers/train, Debian wallpapers of 1-8 Mpx, JPEG and
PNG) when present, else the scikit-image photos (small: decoding is cheap, so the gain is small).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from dgp_fitting.fitting import FitConfig
from dgp_fitting.job_plan import JobPlan
from dgp_fitting.prior_job import fit_chunk, fit_shard, prepare_store
from prior_store import open_store
from workflows.demo_assets import write_demo_photos

REPO = Path(__file__).resolve().parents[1]
COMPARED = ("field/means", "field/chol", "field/colors", "crops/psnr", "crops/status", "crops/content_hash")


def run_inline(
    store: str, chunks: list[int], root: str, device: str, decode: int | None
) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    summaries = [fit_chunk(store, index, root, device) for index in chunks]
    return time.perf_counter() - started, stage_totals(summaries)


def run_pipelined(
    store: str, chunks: list[int], root: str, device: str, decode: int | None
) -> tuple[float, dict[str, float]]:
    started = time.perf_counter()
    summaries = fit_shard(store, 0, chunks, root, device, decode)
    errors = [s["error"] for s in summaries if "error" in s]
    if errors:
        raise SystemExit(f"pipelined run failed: {errors[0]}")
    return time.perf_counter() - started, stage_totals(summaries)


def stage_totals(summaries: list[dict]) -> dict[str, float]:
    return {stage: sum(s[f"{stage}_seconds"] for s in summaries) for stage in ("load", "fit", "write")}


def same_stores(a: str, b: str) -> bool:
    sa, sb = open_store(a), open_store(b)
    for name in COMPARED:
        va, vb = sa.read(name), sb.read(name)
        if isinstance(va, list):
            if va != vb:
                return False
        elif not np.array_equal(va, vb, equal_nan=True):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, help="a folder of photos (default: data/wallpapers/train if present)")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--crops-per-image", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16, help="crops per chunk (per fitting batch)")
    parser.add_argument("--steps", type=int, default=20, help="fitting steps per crop (the quality preset has 500)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=2, help="alternating in-line / pipelined runs")
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads for fitting")
    parser.add_argument(
        "--decode-threads", type=int, help="photos decoded at once by the pipelined task (default: as the job picks)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="p2g-overlap-"))
    try:
        images = args.images or (REPO / "data" / "wallpapers" / "train")
        if not images.is_dir():
            images = work / "photos"
            write_demo_photos(images)
        template = work / "template.zarr"
        fit = FitConfig(steps=args.steps)
        job = JobPlan([images], template, crop=args.crop, crops_per_image=args.crops_per_image, fit=fit)
        store = prepare_store(job, args.batch, echo=lambda _: None)
        crops, chunks = store.num_crops, list(range(store.num_chunks))
        if store.num_shards != 1:  # one task = one shard; a bigger corpus is several tasks, each like this one
            shutil.rmtree(template)
            store = prepare_store(dataclasses.replace(job, shard_size=-(-crops // args.batch) * args.batch), args.batch)
            chunks = list(store.shard_chunks(0))
        root = os.getcwd()
        warm = work / "warm-up.zarr"  # imports, JIT compilation, caches: not timed
        shutil.copytree(template, warm)
        fit_chunk(str(warm), chunks[0], root, args.device)
        print(
            f"{len(chunks)} chunks of {args.batch} crops of {args.crop} px from {_shown(images)}, "
            f"{args.steps} steps per crop, "
            f"device {args.device}, {args.threads} fitting thread(s), load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        rows, identical = [], True
        for repeat in range(args.repeats):
            paths = {}
            for mode, runner in (("in line", run_inline), ("pipelined", run_pipelined)):
                path = work / f"{mode.replace(' ', '_')}_{repeat}.zarr"
                shutil.copytree(template, path)
                store_path = str(path)
                seconds, stages = runner(store_path, chunks, root, args.device, args.decode_threads)
                rows.append((mode, repeat, seconds, stages))
                paths[mode] = store_path
                print(
                    f"{mode:>9} run {repeat}: {seconds:7.2f} s wall; stage sums load {stages['load']:.2f} s, "
                    f"fit {stages['fit']:.2f} s, write {stages['write']:.2f} s",
                    flush=True,
                )
            identical &= same_stores(paths["in line"], paths["pipelined"])
        inline = min(s for m, _, s, _ in rows if m == "in line")
        piped = min(s for m, _, s, _ in rows if m == "pipelined")
        last = rows[-1][3]
        hidden = max(0.0, inline - piped)
        print(
            f"best of {args.repeats}: in line {inline:.2f} s, pipelined {piped:.2f} s = {inline / piped:.2f}x; "
            f"{hidden:.2f} s of {last['load'] + last['write']:.2f} s decode + write hidden; "
            f"{len(chunks) * args.batch / piped:.2f} crops/s pipelined; "
            f"stores identical: {'yes' if identical else 'NO'}; load average {os.getloadavg()[0]:.2f}"
        )
        if not identical:
            raise SystemExit("the pipelined store differs from the in-line one")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shown(path: Path) -> str:
    """A path as the README quotes it: relative to the repository when inside it."""
    try:
        return str(path.absolute().relative_to(REPO))
    except ValueError:
        return path.name


if __name__ == "__main__":
    main()
