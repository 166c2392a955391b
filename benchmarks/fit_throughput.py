"""Prior-fitting throughput: crops per second and PSNR of `p2g fit-prior` on CPU, 1 worker vs 2 workers.

Fits crops of the photographs bundled with scikit-image through the real job (LocalCluster, one thread per
worker, the store written by the workers). Every worker first fits a tiny random crop so that imports and JIT
compilation are not counted; the measured time runs from the first task to the last result. Timings on a
shared machine are noisy: compare the two rows of one run, not numbers across runs.

    python benchmarks/fit_throughput.py [--preset demo] [--crop 64] [--crops-per-image 4] [--workers 1 2]
    python benchmarks/fit_throughput.py --curve 25 50 100 200 500 1000   # PSNR vs steps, in-process
    python benchmarks/fit_throughput.py --device cuda --workers 1 --preset quality --crop 128   # on a GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from distributed import Client, LocalCluster

from dgp_fitting.fitting import FIT_PRESETS
from dgp_fitting.prior_job import run_prior_job
from workflows.demo_assets import write_demo_photos


def warm_up(crop: int, device: str) -> None:
    import torch

    from dgp_fitting.fitting import FitConfig, fit_crops

    crops = torch.rand(1, 3, crop, crop, device="cuda" if device == "cuda" else "cpu")
    fit_crops(crops, [0], FitConfig(steps=2))


def measure(workers: int, photos: Path, work: Path, args, fit) -> dict:
    resources = {"GPU": 1} if args.device == "cuda" else None
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      resources=resources) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers)
        client.run(warm_up, args.crop, args.device)  # on every worker: imports, kernel compilation or cache load
        summary = run_prior_job([photos], work / f"bench{workers}.zarr", crop=args.crop,
                                crops_per_image=args.crops_per_image, fit=fit, batch=args.batch, client=client,
                                device=args.device, progress=False)
    return {"workers": workers, "crops": summary.fitted, "seconds": summary.seconds,
            "crops_per_s": summary.crops_per_second, "psnr_median": summary.psnr_median, "psnr_p5": summary.psnr_p5}


#: The eight 64 px photo crops of the PSNR-vs-steps curve (name, top, left).
CURVE_CROPS = tuple((name, 60 + 37 * i, 100 + 23 * i) for i, name in enumerate(
    ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "astronaut", "coffee"]))


def psnr_curve(steps_list: list[int], size: int = 64) -> None:
    """PSNR and Cholesky percentiles after N steps of the quality preset's settings, in this process."""
    import numpy as np
    import torch

    from dgp_fitting.fitting import FitConfig, fit_crops
    from workflows.demo_assets import bundled_photo

    torch.set_num_threads(1)
    crops = np.stack([bundled_photo(n)[t : t + size, l : l + size] for n, t, l in CURVE_CROPS])
    crops = torch.from_numpy(crops).permute(0, 3, 1, 2).float().contiguous()
    print(f"PSNR vs steps: {len(CURVE_CROPS)} photo crops of {size} px, quality settings, one thread")
    print(f"{'steps':>6} {'median':>7} {'p5':>6} {'min':>6} {'l11 p99.9':>9} {'|l21| p99.9':>11} {'CPU s':>6}")
    for steps in steps_list:
        start = time.process_time()
        result = fit_crops(crops, list(range(len(crops))), FitConfig(steps=steps))
        cpu = time.process_time() - start
        psnr, chol = result.psnr.numpy(), result.chol.reshape(-1, 3).numpy()
        print(f"{steps:>6} {float(result.psnr.median()):>7.2f} {np.percentile(psnr, 5):>6.2f} {psnr.min():>6.2f} "
              f"{np.percentile(chol[:, 0], 99.9):>9.3f} {np.percentile(np.abs(chol[:, 1]), 99.9):>11.3f} {cpu:>6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(FIT_PRESETS), default="demo")
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--crops-per-image", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: each worker gets a GPU (worker i uses GPU i modulo the GPUs seen)")
    parser.add_argument("--curve", type=int, nargs="+", metavar="STEPS",
                        help="instead: PSNR of 8 photo crops after each number of steps (no cluster)")
    args = parser.parse_args()
    if args.curve:
        psnr_curve(args.curve)
        return
    fit = FIT_PRESETS[args.preset]
    if args.steps is not None:
        fit = dataclasses.replace(fit, steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = work / "photos"
        write_demo_photos(photos)
        print(f"fit-prior throughput on {args.device}: preset {args.preset} ({fit.steps} steps), {args.crop} px crops, "
              f"{args.crops_per_image} per photo x {len(list(photos.iterdir()))} photos, batch {args.batch}")
        rows = [measure(w, photos, work, args, fit) for w in args.workers]
    print(f"{'workers':>7} {'crops':>6} {'seconds':>8} {'crops/s':>8} {'PSNR median':>12} {'PSNR p5':>8}")
    for r in rows:
        print(f"{r['workers']:>7} {r['crops']:>6} {r['seconds']:>8.2f} {r['crops_per_s']:>8.3f} "
              f"{r['psnr_median']:>12.2f} {r['psnr_p5']:>8.2f}")
    if len(rows) > 1:
        base = rows[0]["crops_per_s"]
        for r in rows[1:]:
            print(f"speed-up {r['workers']} vs {rows[0]['workers']} workers: {r['crops_per_s'] / base:.2f}x")


if __name__ == "__main__":
    main()
