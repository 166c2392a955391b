"""Prior-fitting throughput: the fitting engine against an earlier revision's, and `p2g fit-prior` on 1 vs 2 workers.

`--engines` (on photo crops of the images bundled with scikit-image, 8-bit as the job reads them): the fitting code
of the git revision `--against REV` (default: the engine before the sync-free rewrite, a host read of the loss every
step; `fit_revision.PREVIOUS_ENGINE`) in batches of `--previous-batch`, against `dgp_fitting.fitting.fit_crops` of
this checkout in batches of `--batch` (default auto), on the same crops in one run. The revision is exported with
`git archive` to a temporary folder and runs in a subprocess that imports only its code (`fit_revision.py`), so its
figures are that revision's engine and renderer together. Per engine: crops/s, HR Mpx/s, median and 5th-percentile
PSNR; the largest per-crop PSNR difference to the revision; for the current engine the share of step time per phase
(a short profiled run that synchronises the device between phases) and the device-hours the paper's corpus (40,000
images of 2.8 Mpx) would take at that rate, beside the paper's 700 GPU-hours. `--json FILE` writes every figure.

Default mode: the real job (LocalCluster, one thread per worker, the store written by the workers) on 1 and on 2
workers; every worker first fits a tiny crop so that imports and JIT compilation are not counted, and the time runs
from the first task to the last result. Timings on a shared machine are noisy: compare rows of one run only.

    python benchmarks/fit_throughput.py --engines [--against REV] [--device cpu] [--preset demo] [--crops 64]
    python benchmarks/fit_throughput.py [--preset demo] [--crop 64] [--crops-per-image 4] [--workers 1 2] [--batch auto]
    python benchmarks/fit_throughput.py --curve 25 50 100 200 500 1000   # PSNR vs steps, in-process
    python benchmarks/fit_throughput.py --engines --device cuda --preset quality --crops 2048 --previous-crops 64
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fit_revision import PREVIOUS_ENGINE, RevisionFitError, fit_at_revision, resolve_revision, sync, timed_fits

from dgp_fitting.batch_size import auto_batch
from dgp_fitting.fitting import FIT_PRESETS, FitConfig, PhaseTimer, fit_crops
from workflows.demo_assets import DEMO_CROPS, bundled_photo, write_demo_photos

#: The paper's corpus and its fitting cost (ContinuousSR: ~40,000 HR photos of DIV2K size, 700+ GPU-hours).
PAPER_IMAGES = 40_000
PAPER_MPX_PER_IMAGE = 2.8
PAPER_GPU_HOURS = 700.0


# ---- engines compared in one run --------------------------------------------------------------------------------


def photo_crops(count: int, size: int) -> torch.Tensor:
    """`count` crops of `size` px from the six demo photos (256 px each), on a grid with overlap as needed, as
    8-bit values (what the job reads from the PNG files)."""
    photos = [bundled_photo(name)[rows, cols] for name, rows, cols in DEMO_CROPS]
    per_photo = -(-count // len(photos))
    side = max(1, int(np.ceil(np.sqrt(per_photo))))
    span = photos[0].shape[0] - size
    starts = [round(i * span / max(1, side - 1)) for i in range(side)]
    crops = [p[t : t + size, l : l + size] for p in photos for t in starts for l in starts][:count]
    arr = np.round(np.stack(crops) * 255) / 255
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().contiguous()


def run_engine(crops: torch.Tensor, batch: int, config: FitConfig) -> dict:
    """Fit every crop in batches of `batch` with this checkout's engine; `engine_figures` of the run."""
    seconds, psnr = timed_fits(fit_crops, crops, batch, config)
    return engine_figures(crops, batch, seconds, psnr)


def engine_figures(crops: torch.Tensor, batch: int, seconds: float, psnr_list: list[float]) -> dict:
    """Rate, PSNR percentiles and the paper corpus's device-hours of one engine's timed fit of `crops`."""
    psnr = np.array(psnr_list)
    pixels = crops.shape[0] * crops.shape[2] * crops.shape[3]
    mpx_s = pixels / seconds / 1e6
    return {
        "crops": int(crops.shape[0]),
        "batch": batch,
        "seconds": seconds,
        "crops_per_s": crops.shape[0] / seconds,
        "mpx_per_s": mpx_s,
        "psnr": psnr.tolist(),
        "psnr_median": float(np.median(psnr)),
        "psnr_p5": float(np.percentile(psnr, 5)),
        "paper_corpus_device_hours": PAPER_IMAGES * PAPER_MPX_PER_IMAGE / mpx_s / 3600,
    }


def profile_engine(crops: torch.Tensor, batch: int, config: FitConfig, steps: int) -> dict:
    """Share of step time per phase over `steps` steps of one batch (device synchronised between phases)."""
    timer = PhaseTimer(crops.device)
    fit_crops(
        crops[:batch], list(range(min(batch, crops.shape[0]))), dataclasses.replace(config, steps=steps), timer=timer
    )
    total = sum(timer.seconds.values())
    return {
        "steps": steps,
        "batch": min(batch, crops.shape[0]),
        "step_ms": total / steps * 1e3,
        "shares": timer.shares(),
    }


def compare_engines(args, fit: FitConfig) -> dict:
    device = torch.device(args.device)
    crops = photo_crops(args.crops, args.crop).to(device)
    batch = auto_batch(args.crop, device) if args.batch == "auto" else int(args.batch)
    batch = min(batch, crops.shape[0])
    previous_crops = crops[: args.previous_crops or crops.shape[0]]
    fit_crops(crops[:2], [0, 1], dataclasses.replace(fit, steps=2))  # compilation and caches stay out of the timing
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "preset_steps": fit.steps,
        "crop": args.crop,
        "config": fit.as_dict(),
    }
    old_fit = FIT_PRESETS[args.previous_preset] if args.previous_preset else fit
    report["previous_config"] = old_fit.as_dict()
    commit = args.against_commit  # the revision warms up in its own process, as this one did above
    at_revision = fit_at_revision(commit, previous_crops, old_fit.as_dict(), args.previous_batch, args.threads)
    report["previous_revision"] = {"commit": commit, "asked": args.against, "module": at_revision["module"]}
    previous = engine_figures(previous_crops, args.previous_batch, at_revision["seconds"], at_revision["psnr"])
    new = run_engine(crops, batch, fit)
    count = previous_crops.shape[0]
    gain = np.array(new["psnr"][:count]) - np.array(previous["psnr"])
    delta = np.abs(gain)
    new["max_abs_psnr_diff_to_previous"] = float(delta.max())
    new["crops_within_0.05_dB"] = int((delta <= 0.05).sum())
    new["psnr_gain_over_previous"] = {"min": float(gain.min()), "median": float(np.median(gain))}
    new["compared_crops"] = count
    report["previous"], report["new"] = previous, new
    report["speedup_crops_per_s"] = new["crops_per_s"] / previous["crops_per_s"]
    report["profile"] = {"new": profile_engine(crops, batch, fit, args.profile_steps)}
    report["load_average_after"] = os.getloadavg()
    return report


def _engine_worker(rank: int, workers: int, args, fit: FitConfig, barrier, results) -> None:
    """One process of `process_scaling`: fits its share of the crops with the current engine after a warm-up."""
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    device = torch.device(args.device)
    crops = photo_crops(args.crops, args.crop).to(device)
    mine = crops[rank::workers]
    batch = auto_batch(args.crop, device) if args.batch == "auto" else int(args.batch)
    batch = max(1, min(batch, mine.shape[0]))
    fit_crops(mine[:2], [0, 1], dataclasses.replace(fit, steps=2))
    barrier.wait()
    start = time.time()
    for i in range(0, mine.shape[0], batch):
        fit_crops(mine[i : i + batch], list(range(i, min(i + batch, mine.shape[0]))), fit)
    sync(device)
    results.put((rank, start, time.time(), int(mine.shape[0]), batch))


def process_scaling(args, fit: FitConfig, counts: list[int]) -> list[dict]:
    """Crops/s of the current engine in 1, 2, ... worker processes sharing the device (crops dealt round-robin,
    each process in batches of `--batch`, auto sized to the device's free memory when it starts), wall time from
    a common start after every process has warmed up to the last process's end."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rows = []
    for workers in counts:
        barrier, results = context.Barrier(workers), context.Queue()
        procs = [
            context.Process(target=_engine_worker, args=(rank, workers, args, fit, barrier, results))
            for rank in range(workers)
        ]
        for proc in procs:
            proc.start()
        outcome = [results.get() for _ in procs]
        for proc in procs:
            proc.join()
        wall = max(o[2] for o in outcome) - min(o[1] for o in outcome)
        crops = sum(o[3] for o in outcome)
        rows.append(
            {
                "workers": workers,
                "crops": crops,
                "batch": [o[4] for o in sorted(outcome)],
                "seconds": wall,
                "crops_per_s": crops / wall,
                "mpx_per_s": crops * args.crop**2 / wall / 1e6,
            }
        )
    return rows


def _revision_label(revision: dict) -> str:
    commit, asked = revision["commit"], revision["asked"]
    return f"revision {commit[:10]}" + ("" if commit.startswith(asked) else f" (--against {asked})")


def format_engines(report: dict) -> list[str]:
    lines = [
        f"fitting engines on {report['device_name']} ({report['device']}, {report['threads']} torch threads): "
        f"{report['preset_steps']} steps, {report['crop']} px crops; load average "
        f"{report['load_average'][0]:.1f} before, {report['load_average_after'][0]:.1f} after",
        f"previous: {_revision_label(report['previous_revision'])}, its fitting engine and renderer, in a subprocess",
        f"{'engine':>9} {'crops':>6} {'batch':>6} {'seconds':>8} {'crops/s':>8} {'HR Mpx/s':>9} "
        f"{'PSNR med':>9} {'PSNR p5':>8} {'paper corpus':>14}",
    ]
    for name in ("previous", "new"):
        r = report[name]
        lines.append(
            f"{name:>9} {r['crops']:>6} {r['batch']:>6} {r['seconds']:>8.2f} {r['crops_per_s']:>8.3f} "
            f"{r['mpx_per_s']:>9.4f} {r['psnr_median']:>9.2f} {r['psnr_p5']:>8.2f} "
            f"{r['paper_corpus_device_hours']:>10.0f} h"
        )
    new = report["new"]
    lines.append(
        f"new vs previous: {report['speedup_crops_per_s']:.2f}x crops/s; per-crop PSNR difference over "
        f"{new['compared_crops']} crops: max {new['max_abs_psnr_diff_to_previous']:.4f} dB, "
        f"{new['crops_within_0.05_dB']} within 0.05 dB"
    )
    if report.get("previous_config", report["config"]) != report["config"]:
        gain = new["psnr_gain_over_previous"]
        lines.append(
            f"settings differ: previous {report['previous_config']['steps']} steps, new {report['preset_steps']} "
            f"steps; per-crop PSNR of new minus previous: min {gain['min']:+.2f} dB, median {gain['median']:+.2f} dB"
        )
    lines.append(
        f"paper corpus ({PAPER_IMAGES} images x {PAPER_MPX_PER_IMAGE} Mpx) at the new rate: "
        f"{new['paper_corpus_device_hours']:.0f} device-hours per device (paper: {PAPER_GPU_HOURS:.0f} "
        f"GPU-hours; target <= {PAPER_GPU_HOURS / 20:.0f})"
    )
    for name, prof in report["profile"].items():
        shares = ", ".join(
            f"{phase} {share * 100:.0f}%" for phase, share in sorted(prof["shares"].items(), key=lambda kv: -kv[1])
        )
        lines.append(
            f"step phases, {name} (batch {prof['batch']}, {prof['steps']} steps, {prof['step_ms']:.1f} ms "
            f"per step): {shares}"
        )
    for row in report.get("processes", []):
        lines.append(
            f"current engine in {row['workers']} worker process(es) on the device: {row['crops']} crops "
            f"(batches {row['batch']}) in {row['seconds']:.2f} s = {row['crops_per_s']:.3f} crops/s, "
            f"{row['mpx_per_s']:.4f} HR Mpx/s"
        )
    rows = report.get("processes", [])
    if len(rows) > 1:
        lines.append(
            f"speed-up {rows[-1]['workers']} vs {rows[0]['workers']} worker processes: "
            f"{rows[-1]['crops_per_s'] / rows[0]['crops_per_s']:.2f}x"
        )
    return lines


def warm_up(crop: int, device: str) -> None:
    crops = torch.rand(1, 3, crop, crop, device="cuda" if device == "cuda" else "cpu")
    fit_crops(crops, [0], FitConfig(steps=2))


def measure(workers: int, photos: Path, work: Path, args, fit) -> dict:
    from distributed import Client, LocalCluster

    from dgp_fitting.prior_job import run_prior_job

    resources = {"GPU": 1} if args.device == "cuda" else None
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0", resources=resources
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        client.run(warm_up, args.crop, args.device)  # on every worker: imports, kernel compilation or cache load
        summary = run_prior_job(
            [photos],
            work / f"bench{workers}.zarr",
            crop=args.crop,
            crops_per_image=args.crops_per_image,
            fit=fit,
            batch=args.batch,
            client=client,
            device=args.device,
            progress=False,
        )
    pixels = summary.fitted * args.crop * args.crop
    return {
        "workers": workers,
        "crops": summary.fitted,
        "seconds": summary.seconds,
        "mpx_per_s": pixels / summary.seconds / 1e6 if summary.seconds else 0.0,
        "crops_per_s": summary.crops_per_second,
        "psnr_median": summary.psnr_median,
        "psnr_p5": summary.psnr_p5,
    }


#: The eight 64 px photo crops of the PSNR-vs-steps curve (name, top, left).
CURVE_CROPS = tuple(
    (name, 60 + 37 * i, 100 + 23 * i)
    for i, name in enumerate(
        ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "astronaut", "coffee"]
    )
)


def psnr_curve(steps_list: list[int], preset: str = "quality", count: int = 0, size: int = 64) -> None:
    """PSNR and Cholesky percentiles after N steps of a preset's settings, in this process: on the 8 CURVE_CROPS, or
    on `count` crops of the demo photos (`photo_crops`)."""
    torch.set_num_threads(1)
    if count:
        crops = photo_crops(count, size)
    else:
        crops = np.stack([bundled_photo(n)[t : t + size, l : l + size] for n, t, l in CURVE_CROPS])
        crops = torch.from_numpy(crops).permute(0, 3, 1, 2).float().contiguous()
    print(f"PSNR vs steps: {len(crops)} photo crops of {size} px, {preset} settings, one thread")
    print(f"{'steps':>6} {'median':>7} {'p5':>6} {'min':>6} {'l11 p99.9':>9} {'|l21| p99.9':>11} {'CPU s':>6}")
    for steps in steps_list:
        start = time.process_time()
        result = fit_crops(crops, list(range(len(crops))), dataclasses.replace(FIT_PRESETS[preset], steps=steps))
        cpu = time.process_time() - start
        psnr, chol = result.psnr.numpy(), result.chol.reshape(-1, 3).numpy()
        print(
            f"{steps:>6} {float(result.psnr.median()):>7.2f} {np.percentile(psnr, 5):>6.2f} {psnr.min():>6.2f} "
            f"{np.percentile(chol[:, 0], 99.9):>9.3f} {np.percentile(np.abs(chol[:, 1]), 99.9):>11.3f} {cpu:>6.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset", choices=sorted(FIT_PRESETS), help="fitting settings (default: demo; quality for --curve)"
    )
    parser.add_argument(
        "--previous-preset",
        choices=sorted(FIT_PRESETS),
        help="--engines: the revision with this preset's settings instead (e.g. quality vs --preset fast)",
    )
    parser.add_argument("--steps", type=int, help="override the preset's steps")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--crops-per-image", type=int, default=4)
    parser.add_argument(
        "--batch", default=None, help="crops per batch: a number or auto [default: auto with --engines, else 4]"
    )
    parser.add_argument(
        "--engines",
        action="store_true",
        help="compare the fitting engine of --against REV with the current one, on the same crops",
    )
    parser.add_argument(
        "--against",
        default=PREVIOUS_ENGINE,
        metavar="REV",
        help="--engines: the git revision to compare with [default: the engine before the sync-free rewrite]",
    )
    parser.add_argument("--crops", type=int, default=64, help="--engines: crops fitted by the current engine")
    parser.add_argument(
        "--previous-crops",
        type=int,
        help="--engines: fit only the first N of them with the revision [default: all]",
    )
    parser.add_argument("--previous-batch", type=int, default=8, help="--engines: the revision's batch")
    parser.add_argument("--profile-steps", type=int, default=20, help="--engines: steps of the phase profile")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and numba")
    parser.add_argument(
        "--processes",
        type=int,
        nargs="+",
        metavar="N",
        help="--engines: also time the current engine in N worker processes sharing the device",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cuda: each worker gets a GPU (worker i uses GPU i modulo the GPUs seen)",
    )
    parser.add_argument(
        "--curve",
        type=int,
        nargs="+",
        metavar="STEPS",
        help="instead: PSNR of 8 photo crops after each number of steps (no cluster; quality settings unless --preset)",
    )
    parser.add_argument("--curve-crops", type=int, default=0, help="--curve on this many demo-photo crops instead")
    args = parser.parse_args()
    if args.curve:
        psnr_curve(args.curve, args.preset or "quality", args.curve_crops)
        return
    args.preset = args.preset or "demo"
    fit = FIT_PRESETS[args.preset]
    if args.steps is not None:
        fit = dataclasses.replace(fit, steps=args.steps)
    torch.set_num_threads(args.threads)
    try:
        import numba

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    if args.engines:
        try:
            args.against_commit = resolve_revision(args.against)
        except ValueError as err:
            parser.error(f"--against: {err}")
        args.batch = args.batch or "auto"
        try:
            report = compare_engines(args, fit)
        except RevisionFitError as err:
            parser.exit(1, f"{parser.prog}: error: {err}\n")
        if args.processes:
            report["processes"] = process_scaling(args, fit, args.processes)
        for line in format_engines(report):
            print(line)
        if args.json:
            args.json.write_text(json.dumps(report))
        return
    batch = "auto" if args.batch == "auto" else int(args.batch or 4)
    args.batch = batch
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = work / "photos"
        write_demo_photos(photos)
        print(
            f"fit-prior throughput on {args.device}: preset {args.preset} ({fit.steps} steps), {args.crop} px crops, "
            f"{args.crops_per_image} per photo x {len(list(photos.iterdir()))} photos, batch {args.batch}"
        )
        rows = [measure(w, photos, work, args, fit) for w in args.workers]
    print(
        f"{'workers':>7} {'crops':>6} {'seconds':>8} {'crops/s':>8} {'HR Mpx/s':>9} {'PSNR median':>12} {'PSNR p5':>8}"
    )
    for r in rows:
        print(
            f"{r['workers']:>7} {r['crops']:>6} {r['seconds']:>8.2f} {r['crops_per_s']:>8.3f} {r['mpx_per_s']:>9.4f} "
            f"{r['psnr_median']:>12.2f} {r['psnr_p5']:>8.2f}"
        )
    if len(rows) > 1:
        base = rows[0]["crops_per_s"]
        for r in rows[1:]:
            print(f"speed-up {r['workers']} vs {rows[0]['workers']} workers: {r['crops_per_s'] / base:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"device": args.device, "rows": rows, "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
