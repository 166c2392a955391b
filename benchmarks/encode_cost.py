"""What an encode costs: seconds per LR megapixel and peak memory against the LR size, this code against an earlier
revision, with bicubic and LIIF for context, and `lite` training steps per second.

Every figure comes from a fresh child process (so each peak resident set is that measurement's own), on crops of a
mosaic of scikit-image's bundled photographs:

- encode: `model.encode` of one image, whole (`--tile 0`), median of `--repeats` runs after a warm-up; the child's
  growth of the resident set over the encode (the heap trimmed first), its peak, and the project's estimate
  (`sr_model.inference.encode.estimate_encode_bytes`). The bundled `lite` weights, and `swinir`/`hat` at their presets
  with random weights (cost does not depend on the weights).
- `--large`: a 4000x3000 photo through `sr_model.api` with default settings (tiles picked by the memory budget).
- `--baseline REV`: the same children run against a git worktree of REV (the K x N dictionary head before it was
  fused), for the same sizes and the training steps.
- context: bicubic (OpenCV) to x4 and the LIIF baseline of benchmarks/peers/liif.py (random weights) to x4.
- training: `--train-steps` Adam steps of the `lite` preset (official dictionary, seed 0) on batch 4 of 32 px LR
  patches at one scale per step, as `p2g train` runs them; steps per second and the loss of every step (which a
  baseline run must reproduce).

    python benchmarks/encode_cost.py [--sizes 128 256 512 1024] [--presets lite swinir hat] [--baseline REV]
                                     [--large] [--device cpu|cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Sizes at which the transformer presets are measured (they cost far more per pixel).
TRANSFORMER_SIZES = (64, 128, 256)

CHILD = r"""
import ctypes, json, statistics, sys, time
import numpy as np
import torch

job = json.loads(sys.argv[1])
device = torch.device(job["device"])
torch.manual_seed(0)


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mosaic(height, width):
    from skimage import data
    import cv2
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    out = np.zeros((height, width, 3), np.float32)
    for n, photo in enumerate(photos):
        r, c = divmod(n, 2)
        top, bottom, left, right = r * height // 2, (r + 1) * height // 2, c * width // 2, (c + 1) * width // 2
        out[top:bottom, left:right] = cv2.resize(photo, (right - left, bottom - top)).astype(np.float32) / 255
    return out


def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096


def trimmed_rss():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    return rss()


def peak():
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    # VmHWM, not getrusage: a child's maxrss starts at its parent's resident set (Linux keeps it across exec)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) * 1024


def model_for(name):
    if name == "bundled":
        from sr_model.api import load_model
        return load_model().model.to(device).eval()
    from sr_model.networks.model import build_model
    from sr_model.networks.presets import preset
    return build_model(preset(name), "official").to(device).eval()


def timed(run, repeats):
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


kind = job["kind"]
result = {}
if kind == "encode":
    model = model_for(job["model"])
    h, w = job["size"]
    image = torch.from_numpy(mosaic(h, w)).permute(2, 0, 1)[None].contiguous().to(device)
    try:
        from sr_model.inference.encode import estimate_encode_bytes
        result["estimate"] = estimate_encode_bytes(model, h, w)
    except Exception:
        result["estimate"] = None
    with torch.no_grad():
        model.encode(image[..., :32, :32])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        before = trimmed_rss() if device.type == "cpu" else torch.cuda.memory_allocated(device)
        seconds = timed(lambda: model.encode(image), 1)
        result["growth"] = peak() - before
        if job["repeats"] > 1:
            seconds = min(seconds, timed(lambda: model.encode(image), job["repeats"] - 1))
    result.update(seconds=seconds, peak=peak())
elif kind == "large":
    from sr_model.api import load_model
    model = load_model().to(device)
    h, w = job["size"]
    image = mosaic(h, w)
    before = trimmed_rss()
    sync()
    start = time.perf_counter()
    field = model.encode(image)
    sync()
    result.update(seconds=time.perf_counter() - start, growth=peak() - before, peak=peak(), note=field.note)
elif kind == "bicubic":
    import cv2
    h, w = job["size"]
    image = mosaic(h, w)
    result["seconds"] = timed(lambda: cv2.resize(image, (4 * w, 4 * h), interpolation=cv2.INTER_CUBIC), 3)
    result["peak"] = peak()
elif kind == "liif":
    sys.path.insert(0, job["root"])
    from benchmarks.peers.liif import LIIF
    model = LIIF().to(device).eval()
    h, w = job["size"]
    image = torch.from_numpy(mosaic(h, w)).permute(2, 0, 1)[None].contiguous().to(device)
    with torch.no_grad():
        model.upscale(image[..., :16, :16], (64, 64))
        result["seconds"] = timed(lambda: model.upscale(image, (4 * h, 4 * w)), job["repeats"])
    result["peak"] = peak()
elif kind == "train":
    from gaussian_field import render
    from sr_model.networks.model import build_model
    from sr_model.networks.presets import preset
    model = build_model(preset("lite"), "official").to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    hr_all = torch.from_numpy(mosaic(512, 512)).permute(2, 0, 1)[None]
    generator = torch.Generator().manual_seed(0)
    losses, times = [], []
    for step in range(job["steps"] + 1):
        scale = 2 + int(torch.randint(0, 7, (1,), generator=generator))
        patch = 32 * scale
        tops = torch.randint(0, 512 - patch, (4,), generator=generator).tolist()
        lefts = torch.randint(0, 512 - patch, (4,), generator=generator).tolist()
        hr = torch.cat([hr_all[..., t:t + patch, l:l + patch] for t, l in zip(tops, lefts)]).to(device)
        lr = torch.nn.functional.interpolate(hr, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
        sync()
        start = time.perf_counter()
        sr = render(model.encode(lr), size=(patch, patch))
        loss = (sr - hr).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        sync()
        if step:  # the first step compiles and warms caches
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
    result.update(steps_per_second=len(times) / sum(times), losses=losses, peak=peak())
print(json.dumps(result))
"""


def run_child(job: dict, pythonpath: Path, timeout: float = 3600) -> dict:
    """One measurement in a fresh interpreter importing the project from `pythonpath`."""
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(job)],
        cwd=pythonpath,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worktree(revision: str) -> Path:
    """A checkout of `revision` in a temporary folder (git worktree, detached)."""
    folder = Path(tempfile.mkdtemp(prefix="p2g_baseline_"))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True, capture_output=True
    )
    return folder


def gib(count: float | None) -> str:
    return "-" if count is None else f"{count / 2**30:.2f}"


def encode_rows(args, tree: Path, label: str) -> list[dict]:
    rows = []
    plan = [("bundled", size) for size in args.sizes] + [
        (name, size) for name in args.presets if name != "lite" for size in TRANSFORMER_SIZES
    ]
    for model, side in plan:
        repeats = args.repeats if side <= 512 and model == "bundled" else 1  # the transformers cost minutes
        job = dict(kind="encode", model=model, size=(side, side), repeats=repeats, device=args.device)
        result = run_child(job, tree)
        result.update(code=label, model=model, side=side)
        rows.append(result)
        print_row(result)
    return rows


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"| {row['code']} | {row['model']} | {row['side']}^2 | failed: {row['error']} | | | | |", flush=True)
        return
    seconds, megapixels = row["seconds"], row["side"] ** 2 / 1e6
    print(
        f"| {row['code']} | {row['model']} | {row['side']}^2 | {seconds:.3f} | {seconds / megapixels:.1f} | "
        f"{gib(row.get('growth'))} | {gib(row.get('peak'))} | {gib(row.get('estimate'))} |",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--presets", nargs="+", default=["lite", "swinir", "hat"])
    parser.add_argument("--baseline", help="git revision to compare with (e.g. the commit before the fused head)")
    parser.add_argument("--baseline-sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--large", action="store_true", help="also a 4000x3000 photo through the API")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"device {args.device}, torch threads: default; load average before: {load}\n")
    report: dict = {"device": args.device, "load_before": load}
    print("| code | model | LR size | encode s | s per LR Mpx | RSS growth GiB | process peak GiB | estimate GiB |")
    print("|---|---|---|---|---|---|---|---|")
    report["encode"] = encode_rows(args, ROOT, "this")
    tree = worktree(args.baseline) if args.baseline else None
    try:
        if tree is not None:
            saved_sizes, saved_presets = args.sizes, args.presets
            args.sizes, args.presets = args.baseline_sizes, ["lite"]
            report["baseline_encode"] = encode_rows(args, tree, args.baseline)
            args.sizes, args.presets = saved_sizes, saved_presets
        if args.large:
            large = run_child(dict(kind="large", size=(3000, 4000), device=args.device), ROOT)
            report["large"] = large
            print(f"\n4000x3000 through the API, default settings: {json.dumps(large)}")
        print("\n| method | LR size | seconds to x4 | s per LR Mpx |\n|---|---|---|---|")
        report["context"] = []
        for kind in ("bicubic", "liif"):
            for side in (128, 256):
                job = dict(kind=kind, size=(side, side), repeats=1, device=args.device, root=str(ROOT))
                row = run_child(job, ROOT)
                row.update(kind=kind, side=side)
                report["context"].append(row)
                seconds = row.get("seconds")
                per = "-" if seconds is None else f"{seconds / (side * side / 1e6):.2f}"
                shown = "failed" if seconds is None else f"{seconds:.4f}"
                print(f"| {kind} | {side}^2 | {shown} | {per} |", flush=True)
        print("\n| code | lite training steps/s (batch 4, 32 px LR) | first losses |\n|---|---|---|")
        report["train"] = []
        for label, path in [("this", ROOT)] + ([(args.baseline, tree)] if tree is not None else []):
            row = run_child(dict(kind="train", steps=args.train_steps, device=args.device), path)
            row["code"] = label
            report["train"].append(row)
            losses = row.get("losses", [])
            print(f"| {label} | {row.get('steps_per_second', 0):.2f} | {[round(v, 6) for v in losses[:3]]} |")
        if len(report["train"]) == 2 and all("losses" in r for r in report["train"]):
            ours, theirs = (r["losses"] for r in report["train"])
            diff = max(abs(a - b) for a, b in zip(ours, theirs))
            speedup = report["train"][0]["steps_per_second"] / report["train"][1]["steps_per_second"]
            print(f"\ntraining: {speedup:.2f}x the steps/s of {args.baseline}; largest loss difference {diff:.2e}")
            report["train_speedup"], report["train_loss_diff"] = speedup, diff
    finally:
        if tree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
            shutil.rmtree(tree, ignore_errors=True)
    load = " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    print(f"\nload average after: {load}")
    report["load_after"] = load
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
