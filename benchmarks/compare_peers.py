"""ContinuousSR-lite side by side with LIIF-lite (benchmarks/peers/liif.py), and the paper's ablations.

    .venv/bin/python benchmarks/compare_peers.py [--steps 150 --batch 8 --patch 16] [--out runs/peers]
    .venv/bin/python benchmarks/compare_peers.py --tiny          # a one-minute smoke run of every stage

1. Photos: scikit-image's (train: 11 photos; held out: motorcycle, camera, coins, clock), as benchmarks/
   train_lite.py; the prior: `p2g fit-prior` + `p2g prior-stats` on the training photos (our pipeline).
2. Training, one run per (method, scale range), U(1,4) as LIIF and U(4,8) as the paper: the same photos,
   batches (`ScaleBatchSampler`, same seed), steps, batch, LR patch, rate schedule, L1 loss, gradient clip.
   ContinuousSR goes through `sr_model.training.loop.train` (the preset's current formulation); LIIF through the
   loop below, which differs only where LIIF does: it decodes `patch^2` random HR pixels per image (the LIIF
   paper's sampling) instead of rendering the whole HR patch.
3. Ablations at U(4,8), same budget: `benchmarks/peers/variants.py` (dictionaries, fixed centres, P_off only,
   two no-dictionary parametrisations), with held-out validation every steps/4 to follow the gap over steps.
4. Held-out Y-PSNR (shave = scale) and SSIM on centre crops at x2 ... x24 with bicubic (`p2g eval`'s protocol);
   time to produce one image at 40 scales (x1.1..x16) and 45 scales (x4..x48), encode included; peak memory
   (CPU RSS, one fresh process per point; GPU: max allocated) at x4, x8, x16, x32.

Writes OUT/results.json, OUT/results.md, OUT/psnr_vs_scale.png and OUT/time_vs_scales.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

EVAL_SCALES = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0)
RANGES = {"U(1,4)": (1.0, 4.0), "U(4,8)": (4.0, 8.0)}
ABLATION_RANGE = "U(4,8)"
MEMORY_SCALES = (4.0, 8.0, 16.0, 32.0)
METHODS = ("ContinuousSR", "LIIF")


def multi_scales(count: int, low: float, high: float) -> list[float]:
    return [low + (high - low) * i / (count - 1) for i in range(count)]


SCALE_SETS = {"40 scales x1.1..x16": multi_scales(40, 1.1, 16.0), "45 scales x4..x48": multi_scales(45, 4.0, 48.0)}

#: How results.json names the --out folder, whose place differs between machines: "OUT/runs/liif-1-4/liif.pt".
OUT_MARK = "OUT"


# ----------------------------------------------------------------------------------------------- paths
def recorded_path(path: Path, out: Path) -> str:
    """`path` as results.json records it (committed results name no machine's folders): inside the --out folder
    as OUT/..., otherwise relative to the repository."""
    path, out = Path(path).resolve(), Path(out).resolve()
    if path == out or out in path.parents:
        return Path(OUT_MARK, path.relative_to(out)).as_posix()
    return Path(os.path.relpath(path, REPO)).as_posix()


def resolved_path(recorded: str, out: Path) -> Path:
    """The file a `recorded_path` names, with OUT standing for this run's --out folder."""
    parts = Path(recorded).parts
    if parts and parts[0] == OUT_MARK:
        return Path(out).joinpath(*parts[1:])
    return REPO / recorded


def recorded_settings(args: argparse.Namespace) -> dict:
    """The command-line settings for results.json, paths (--out, --results, --merge) as `recorded_path` writes them."""

    def recorded(value):
        if isinstance(value, Path):
            return recorded_path(value, args.out)
        return [recorded(v) for v in value] if isinstance(value, list) else value

    return {k: recorded(v) for k, v in vars(args).items() if not k.startswith("probe")}


# ----------------------------------------------------------------------------------------------- data
def heldout_crops(held_dir: Path, crop: int) -> list[tuple[str, np.ndarray]]:
    from gaussian_field.image_io import read_image
    from sr_model.data.datasets import find_images
    from sr_model.training.validation import centre_crop

    return [(path.stem, centre_crop(read_image(path), crop)) for path in find_images([held_dir])]


def prior_dictionaries(args, train_dir: Path) -> dict[str, str]:
    """Dictionary sources by name: our prior at the default and at 126 kernels, and the crude grids."""
    from train_lite import p2g

    from benchmarks.peers.variants import grid_dictionary
    from prior_store.dictionary import read_dictionary

    folder = args.out / "dictionaries"
    folder.mkdir(parents=True, exist_ok=True)
    sources = {}
    for name, size in (("prior-126", 126), ("prior", args.dictionary_size)):  # the default one last: kept in store
        store = args.out / "prior" / "store.zarr"  # fit-prior resumes: a finished store is reused
        p2g(
            "fit-prior",
            str(train_dir),
            "--store",
            str(store),
            "--preset",
            args.fit_preset,
            "--crop",
            "64",
            "--crops-per-image",
            str(args.prior_crops),
            "--workers",
            "1",
            "--no-progress",
        )
        p2g(
            "prior-stats",
            "--store",
            str(store),
            "--out",
            str(args.out / "prior" / f"stats-{size}"),
            "--size",
            str(size),
        )
        kernels, provenance = read_dictionary(store)
        if float(provenance["reference_scale"]) != 4.0:
            raise SystemExit(f"expected a dictionary at reference scale 4, got {provenance['reference_scale']}")
        import numpy as np

        np.save(folder / f"{name}.npy", np.asarray(kernels, dtype=np.float32))
        sources[name] = str(folder / f"{name}.npy")
    sources["K1"] = str(grid_dictionary(folder / "K1.npy", 1.0))
    sources["K2"] = str(grid_dictionary(folder / "K2.npy", 10.0))
    return sources


# ----------------------------------------------------------------------------------------------- training
def train_continuoussr(
    args, variant_name: str, scale_range, train_dir: Path, held_dir: Path, sources: dict, validate: bool
) -> dict:
    import sr_model.training.loop as training
    from benchmarks.peers.variants import VARIANTS
    from sr_model.training.state import TrainConfig, milestones_from_fractions

    variant = VARIANTS[variant_name]
    run = args.out / "runs" / f"continuoussr-{variant_name}-{scale_range[0]:g}-{scale_range[1]:g}"
    shutil.rmtree(run, ignore_errors=True)
    config = TrainConfig(
        images=[train_dir],
        out=run,
        prior=sources[variant.dictionary] if variant.dictionary else None,
        preset="lite",
        model_overrides=variant.overrides,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        scale_min=scale_range[0],
        scale_max=scale_range[1],
        lr=args.lr,
        lr_milestones=milestones_from_fractions(args.steps, (0.6, 0.85)),
        val_images=[held_dir] if validate else (),
        val_scales=(4.0, 8.0),
        val_crop=args.val_crop,
        val_every=max(1, args.steps // 4) if validate else args.steps,
        log_every=max(1, args.steps // 10),
        seed=args.seed,
    )
    original = training.build_model
    if variant.specialise is not None:
        training.build_model = lambda *a, **k: variant.specialise(original(*a, **k))
    load = os.getloadavg()[0]
    try:
        result = training.train(config, device=args.device, workers=0, time_limit=args.minutes * 60, progress=False)
    finally:
        training.build_model = original
    curve = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val" in record:
            curve.append(
                {"step": record["step"], **{k: v["psnr"] for k, v in record["val"].items() if k.startswith("x")}}
            )
    return {
        "steps": result.step,
        "train_seconds": result.seconds,
        "checkpoint": recorded_path(result.last, args.out),
        "val_curve": curve,
        "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def load_continuoussr(entry: dict, variant_name: str, out: Path, device):
    from benchmarks.peers.variants import VARIANTS
    from sr_model.files.model_files import load_network as load_model

    model = load_model(resolved_path(entry["checkpoint"], out), device)
    specialise = VARIANTS[variant_name].specialise
    return (specialise(model) if specialise else model).eval()


def train_liif(args, scale_range, train_dir: Path, curve=None, curve_every: int = 0) -> dict:
    """LIIF on the batches ContinuousSR sees (same dataset, sampler and seed), Adam, same schedule and clip.
    `curve(model, step)`, if given, is called every `curve_every` steps (a learning-curve point, in eval mode)."""
    import torch

    from benchmarks.peers.liif import LIIF, sample_queries
    from sr_model.data.datasets import ScaleBatchSampler, SRTrainDataset
    from sr_model.training.state import learning_rate, milestones_from_fractions

    run = args.out / "runs" / f"liif-{scale_range[0]:g}-{scale_range[1]:g}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    schedule = SimpleNamespace(
        lr=args.lr, lr_gamma=0.5, lr_milestones=milestones_from_fractions(args.steps, (0.6, 0.85))
    )
    dataset = SRTrainDataset([train_dir], args.patch, scale_range, cache=True)
    batches = ScaleBatchSampler(dataset, args.batch, args.seed)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = LIIF().to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    load, began, step, losses = os.getloadavg()[0], time.perf_counter(), 0, []
    while step < args.steps and time.perf_counter() - began < args.minutes * 60:
        samples = [dataset[key] for key in batches.batch(step)]
        lr_img = torch.stack([s["lr"] for s in samples]).to(device)
        hr = torch.stack([s["hr"] for s in samples])
        coord, cell, rgb = (t.to(device) for t in sample_queries(hr, args.patch * args.patch, generator))
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(schedule, step)
        loss = (model(lr_img, coord, cell) - rgb).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        if curve is not None and curve_every and step % curve_every == 0:
            model.eval()
            curve(model, step)
            model.train()
    seconds = time.perf_counter() - began
    torch.save({"state_dict": model.state_dict(), "step": step}, run / "liif.pt")
    return {
        "steps": step,
        "train_seconds": seconds,
        "checkpoint": recorded_path(run / "liif.pt", args.out),
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def load_liif(entry: dict, out: Path, device):
    import torch

    from benchmarks.peers.liif import LIIF

    model = LIIF()
    checkpoint = torch.load(resolved_path(entry["checkpoint"], out), map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------- measuring
class Upscaler:
    """encode once, then `render(size)` as often as wanted; one interface for both methods."""

    def __init__(self, method: str, model) -> None:
        self.method, self.model = method, model

    def encode(self, lr):
        return self.model.encode(lr)

    def render(self, encoded, size):
        if self.method == "LIIF":
            return self.model.render(encoded, size)
        from gaussian_field import render

        return render(encoded, size=size)


def to_tensor(image, device):
    import numpy as np
    import torch

    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None].to(device)


def sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def per_image_scores(upscaler: Upscaler | None, crops, device, scales=EVAL_SCALES) -> dict:
    """{"x2": {"psnr": [...], "ssim": [...]}, ...}: one score per held-out crop, in the crops' order; None scores
    bicubic."""
    import torch

    from sr_model.evaluation.evaluate import bicubic_upscale, make_lr, to_uint8
    from sr_model.evaluation.metrics import protocol_settings, psnr, ssim

    table = {}
    for scale in scales:
        border, y_channel = protocol_settings("benchmark", scale)
        scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
        for _, image in crops:
            hr, lr = make_lr(image, scale)
            if upscaler is None:
                sr = bicubic_upscale(lr, scale, hr.shape[:2])
            else:
                with torch.inference_mode():
                    out = upscaler.render(upscaler.encode(to_tensor(lr, device)), hr.shape[:2])
                sr = out[0].permute(1, 2, 0).double().cpu().numpy()
            hr8, sr8 = to_uint8(hr), to_uint8(sr)
            scores["psnr"].append(float(psnr(hr8, sr8, border, y_channel)))
            scores["ssim"].append(float(ssim(hr8, sr8, border, y_channel)))
        table[f"x{scale:g}"] = scores
    return table


def evaluate(upscaler: Upscaler | None, crops, device, scales=EVAL_SCALES) -> dict:
    """{"x2": {"psnr", "ssim"}, ...}: means over the held-out crops; None scores bicubic."""
    import numpy as np

    return {
        key: {metric: float(np.mean(values)) for metric, values in scores.items()}
        for key, scores in per_image_scores(upscaler, crops, device, scales).items()
    }


def time_scales(upscaler: Upscaler, lr_image, scales, device) -> dict:
    """Encode once, render every scale; wall seconds of the encode and of each render (after one warm-up)."""
    import torch

    lr = to_tensor(lr_image, device)
    h, w = lr.shape[-2:]
    with torch.inference_mode():
        upscaler.render(upscaler.encode(lr), (2 * h, 2 * w))  # warm-up: kernels compiled, caches filled
        sync(device)
        start = time.perf_counter()
        encoded = upscaler.encode(lr)
        sync(device)
        encode_s = time.perf_counter() - start
        renders = []
        for scale in scales:
            begin = time.perf_counter()
            upscaler.render(encoded, (math.ceil(h * scale), math.ceil(w * scale)))
            sync(device)
            renders.append(time.perf_counter() - begin)
    return {
        "encode_s": encode_s,
        "render_s": renders,
        "total_s": encode_s + sum(renders),
        "output_megapixels": sum(math.ceil(h * s) * math.ceil(w * s) for s in scales) / 1e6,
    }


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> int:
    """Reset the peak to the current RSS (Linux clear_refs 5), so imports do not hide the upscale's peak;
    returns the RSS after the reset."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return peak_rss()


def memory_probe(args) -> None:
    """One fresh process: load a model, upscale the LR once at one scale, print peak memory as JSON."""
    import numpy as np
    import torch

    results = json.loads((args.results / "results.json").read_text())
    method, scale = args.probe_method, args.probe_scale
    runs = results["training"][ABLATION_RANGE]
    model = (
        load_liif(runs["LIIF"], args.out, args.device)
        if method == "LIIF"
        else load_continuoussr(runs["ContinuousSR"], "full", args.out, args.device)
    )
    upscaler = Upscaler(method, model)
    lr = to_tensor(np.load(args.out / "memory_lr.npy"), args.device)
    h, w = lr.shape[-2:]
    gpu = torch.device(args.device).type == "cuda"
    if gpu:
        torch.cuda.reset_peak_memory_stats()
        before_gpu = torch.cuda.memory_allocated()
    with torch.inference_mode():  # warm-up at x1: kernels loaded (numba compiles or reads its cache) before the peak
        upscaler.render(upscaler.encode(lr), (h, w))
    before = reset_peak_rss()
    with torch.inference_mode():
        out = upscaler.render(upscaler.encode(lr), (math.ceil(h * scale), math.ceil(w * scale)))
        sync(args.device)
    peak = peak_rss()
    record = {"rss_before_mib": before / 2**20, "rss_peak_mib": peak / 2**20, "output": list(out.shape[-2:])}
    if gpu:
        record["gpu_peak_mib"] = (torch.cuda.max_memory_allocated() - before_gpu) / 2**20
    print(json.dumps(record))


def measure_memory(args, lr_image) -> dict:
    import numpy as np

    np.save(args.out / "memory_lr.npy", lr_image.astype(np.float32))
    table = {}
    for method in METHODS:
        for scale in MEMORY_SCALES:
            command = [
                sys.executable,
                __file__,
                "--out",
                str(args.out),
                "--results",
                str(args.results),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
                "--probe-method",
                method,
                "--probe-scale",
                str(scale),
            ]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            table.setdefault(method, {})[f"x{scale:g}"] = json.loads(out.strip().splitlines()[-1])
    return table


def covariance_diagnostics(model, image, device) -> dict:
    """How the covariance head uses its freedom on one held-out LR image: the spread of the predicted
    Cholesky triplets (LR px) and, for a dictionary, how peaked the softmax mix is (exp of its entropy:
    1 = one entry per Gaussian, K = uniform) and how many entries are any Gaussian's top choice."""
    import torch

    lr = to_tensor(image, device)
    with torch.inference_mode():
        field = model.encode(lr)
        chol = field.chol.reshape(-1, 3).double()
        record = {
            "chol_mean": chol.mean(0).tolist(),
            "chol_std": chol.std(0).tolist(),
            "sigma_mean_lr_px": float(((chol[:, 0] ** 2 + chol[:, 1] ** 2 + chol[:, 2] ** 2) / 2).sqrt().mean()),
        }
        if model.dictionary is not None:
            weights = model.covariance_head.weights(model.features(lr), model.dictionary)[0]  # (K, N)
            entropy = -(weights * weights.clamp_min(1e-30).log()).sum(0)
            record.update(
                dictionary_size=int(weights.shape[0]),
                effective_entries=float(entropy.exp().mean()),
                top_weight_mean=float(weights.max(0).values.mean()),
                entries_used_as_top=int(weights.argmax(0).unique().numel()),
            )
    return record


def diagnose(args, results: dict, crops) -> dict:
    """covariance_diagnostics of every ContinuousSR variant, at initialisation and after training."""
    import torch

    from benchmarks.peers.variants import VARIANTS
    from sr_model.evaluation.evaluate import make_lr
    from sr_model.networks.model import build_model
    from sr_model.networks.presets import preset

    image = make_lr(crops[0][1], 4.0)[1]
    sources = {path.stem: str(path) for path in (args.out / "dictionaries").glob("*.npy")}
    table = {}
    for name, entry in results["ablations"].items():
        variant = VARIANTS[name]
        torch.manual_seed(args.seed)
        fresh = build_model(
            preset("lite", **variant.overrides), sources[variant.dictionary] if variant.dictionary else None
        )
        fresh = (variant.specialise(fresh) if variant.specialise else fresh).eval()
        table[name] = {
            "init": covariance_diagnostics(fresh, image, args.device),
            "trained": covariance_diagnostics(
                load_continuoussr(entry["training"], name, args.out, args.device), image, args.device
            ),
        }
    return table


# ----------------------------------------------------------------------------------------------- report
def plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(RANGES), figsize=(11, 4), sharey=True)
    for ax, range_name in zip(axes, RANGES):
        quality = results["quality"][range_name]
        for name, entry in quality.items():
            ax.plot(EVAL_SCALES, [entry[f"x{s:g}"]["psnr"] for s in EVAL_SCALES], marker="o", label=name)
        ax.axvspan(*RANGES[range_name], color="grey", alpha=0.15, label="training scales")
        ax.set_xscale("log", base=2)
        ax.set_xticks(EVAL_SCALES, [f"x{s:g}" for s in EVAL_SCALES])
        ax.set_title(f"trained on {range_name}")
        ax.set_xlabel("scale")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out Y-PSNR (dB)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out / "psnr_vs_scale.png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(SCALE_SETS), figsize=(11, 4))
    for ax, set_name in zip(axes, SCALE_SETS):
        for method, entry in results["multi_scale"][set_name].items():
            cumulative, total = [], entry["encode_s"]
            for seconds in entry["render_s"]:
                total += seconds
                cumulative.append(total)
            ax.plot(range(1, len(cumulative) + 1), cumulative, label=method)
        ax.set_yscale("log")
        ax.set_title(f"{set_name}, {results['settings']['time_lr']} px LR")
        ax.set_xlabel("number of scales rendered (one encode)")
        ax.set_ylabel("seconds (cumulative)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "time_vs_scales.png", dpi=110)
    plt.close(fig)
    return ["psnr_vs_scale.png", "time_vs_scales.png"]


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        "# ContinuousSR-lite vs LIIF-lite, one run",
        "",
        f"Budget: {s['steps']} steps, batch {s['batch']}, LR patch {s['patch']}, rate {s['lr']:g} (x0.5 at 60 % "
        f"and 85 %), seed {s['seed']}, {s['threads']} torch thread(s), device {s['device']}. Hardware: "
        f"{results['hardware']}. Photos: {results['photos']}. Held out: centre crops of {s['eval_crop']} px.",
        "",
        "## Held-out Y-PSNR (dB, shave = scale) / SSIM (Y)",
        "",
    ]
    header = "| trained on | method | steps | train min | " + " | ".join(f"x{v:g}" for v in EVAL_SCALES) + " |"
    lines += [header, "|" + "---|" * (4 + len(EVAL_SCALES))]
    for range_name, quality in results["quality"].items():
        for name, entry in quality.items():
            run = results["training"][range_name].get(name, {})
            steps = run.get("steps", "-")
            minutes = f"{run['train_seconds'] / 60:.1f}" if run else "-"
            cells = [f"{entry[f'x{v:g}']['psnr']:.2f} / {entry[f'x{v:g}']['ssim']:.3f}" for v in EVAL_SCALES]
            lines.append(f"| {range_name} | {name} | {steps} | {minutes} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## One image at many scales (encode once, then each scale; {s['time_lr']}x{s['time_lr']} px LR)",
        "",
        "| scales | method | encode s | renders s | total s | output MP | LIIF / ContinuousSR |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, entry in results["multi_scale"].items():
        ratio = entry["LIIF"]["total_s"] / entry["ContinuousSR"]["total_s"]
        for method in METHODS:
            m = entry[method]
            lines.append(
                f"| {set_name} | {method} | {m['encode_s']:.3f} | {sum(m['render_s']):.2f} | "
                f"{m['total_s']:.2f} | {m['output_megapixels']:.2f} | "
                f"{f'{ratio:.1f}x' if method == 'LIIF' else ''} |"
            )
    if results.get("memory"):
        lines += [
            "",
            f"## Peak memory of one upscale, fresh process ({s['memory_lr']}x{s['memory_lr']} px LR; "
            "+N: above the RSS after a warm-up upscale at x1)",
            "",
            "| method | " + " | ".join(f"x{v:g}" for v in MEMORY_SCALES) + " |",
            "|---|" + "---|" * len(MEMORY_SCALES),
        ]
        for method, entry in results["memory"].items():
            cells = []
            for v in MEMORY_SCALES:
                e = entry[f"x{v:g}"]
                cell = f"{e['rss_peak_mib']:.0f} MiB RSS (+{e['rss_peak_mib'] - e['rss_before_mib']:.0f})"
                if "gpu_peak_mib" in e:
                    cell += f", GPU {e['gpu_peak_mib']:.0f} MiB"
                cells.append(cell)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if results.get("ablations"):
        lines += [
            "",
            f"## Ablations (ContinuousSR-lite, {ABLATION_RANGE}, same budget)",
            "",
            "| variant | steps | train min | "
            + " | ".join(f"x{v:g}" for v in EVAL_SCALES[:5])
            + " | held-out val x4 / x8 by step |",
            "|---|---|---|" + "---|" * 6,
        ]
        for entry in results["ablations"].values():
            run, quality = entry["training"], entry["quality"]
            curve = "; ".join(
                f"{c['step']}: {c.get('x4', float('nan')):.2f} / {c.get('x8', float('nan')):.2f}"
                for c in run["val_curve"]
            )
            cells = [f"{quality[f'x{v:g}']['psnr']:.2f}" for v in EVAL_SCALES[:5]]
            lines.append(
                f"| {entry['label']} | {run['steps']} | {run['train_seconds'] / 60:.1f} | "
                + " | ".join(cells)
                + f" | {curve} |"
            )
    if results.get("diagnostics"):
        lines += [
            "",
            "## Covariance heads on one held-out LR image (the first crop at x4), at initialisation -> trained",
            "",
            "| variant | mean sigma (LR px) | std of l11 | dictionary: effective entries per Gaussian | "
            "mean top weight | entries used as a top choice |",
            "|---|---|---|---|---|---|",
        ]
        for name, entry in results["diagnostics"].items():
            a, b = entry["init"], entry["trained"]
            row = (
                f"| {name} | {a['sigma_mean_lr_px']:.3f} -> {b['sigma_mean_lr_px']:.3f} | "
                f"{a['chol_std'][0]:.3f} -> {b['chol_std'][0]:.3f} | "
            )
            if "effective_entries" in a:
                row += (
                    f"{a['effective_entries']:.1f} -> {b['effective_entries']:.1f} of {a['dictionary_size']} | "
                    f"{a['top_weight_mean']:.3f} -> {b['top_weight_mean']:.3f} | "
                    f"{a['entries_used_as_top']} -> {b['entries_used_as_top']} |"
                )
            else:
                row += "- | - | - |"
            lines.append(row)
    lines += ["", f"1-minute load average before -> after each stage: {results['load_notes']}", ""]
    return "\n".join(lines)


def write(results: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if "hardware" in results:  # an --ablations-only run has only its part: merged into a full run's report later
        (out / "results.md").write_text(markdown(results))


# ----------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "peers", help="runs, photos and the prior")
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "benchmarks" / "peers" / "results",
        help="results.json / results.md and the plots",
    )
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=16, help="LR patch side (HR: round(patch * s))")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock cap of each training run")
    parser.add_argument(
        "--ablations",
        default=",".join(["full-126", "K1", "K2", "fixed-centres", "p-off-only", "no-dictionary", "no-dictionary-raw"]),
        help="comma-separated names of benchmarks/peers/variants.py ('' for none)",
    )
    parser.add_argument("--eval-crop", type=int, default=128, help="held-out centre crop side (HR px)")
    parser.add_argument("--val-crop", type=int, default=96, help="held-out crop of the ablations' validation curve")
    parser.add_argument("--time-lr", type=int, default=4, help="LR side of the multi-scale timing")
    parser.add_argument("--memory-lr", type=int, default=12, help="LR side of the memory probe")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--prior-crops", type=int, default=4)
    parser.add_argument("--dictionary-size", type=int, default=730)
    parser.add_argument("--fit-preset", default="demo", help="p2g fit-prior preset of the prior (demo: 100 steps)")
    parser.add_argument("--prior-only", action="store_true", help="build the prior and dictionaries, then stop")
    parser.add_argument(
        "--ablations-only",
        action="store_true",
        help="train and score only --ablations (OUT must hold the dictionaries of a full run)",
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help="measure only the memory probes again, into RESULTS/results.json of a full run",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="*",
        default=[],
        help="with --report-only: results folders of --ablations-only runs to merge in",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="from RESULTS/results.json and the runs in OUT: covariance diagnostics, plots, results.md",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch and numba threads")
    parser.add_argument("--tiny", action="store_true", help="smoke run: few steps, small crops, no ablation curve")
    parser.add_argument("--probe-method", help=argparse.SUPPRESS)
    parser.add_argument("--probe-scale", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.batch, args.patch, args.eval_crop, args.val_crop = 4, 2, 8, 72, 48
        args.time_lr, args.memory_lr, args.prior_crops = 3, 4, 1
        args.ablations = "K1,p-off-only,no-dictionary-raw"
    return args


def main() -> None:
    args = parse_args()
    os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    import platform

    import torch

    torch.set_num_threads(args.threads)
    if args.probe_method:
        return memory_probe(args)
    from train_lite import prepare_photos

    from benchmarks.peers.variants import VARIANTS
    from sr_model.evaluation.evaluate import make_lr

    args.out.mkdir(parents=True, exist_ok=True)
    # the skimage corpus: the data folder (train_lite's wallpapers) is not read
    train_dir, held_dir, photos = prepare_photos(args.out, "skimage", REPO / "data" / "wallpapers")
    crops = heldout_crops(held_dir, args.eval_crop)
    if args.report_only:
        results = json.loads((args.results / "results.json").read_text())
        for other in args.merge:  # ablations of --ablations-only runs made beside this one
            extra = json.loads((other / "results.json").read_text())
            results["ablations"].update(extra["ablations"])
            results["load_notes"] += f"; beside it ({other.name}): {extra['load_notes']}"
        return report(args, results, crops)
    if args.memory_only:
        results = json.loads((args.results / "results.json").read_text())
        results["memory"] = measure_memory(args, make_lr(crops[0][1], crops[0][1].shape[0] / args.memory_lr)[1])
        results["memory_note"] = f"memory measured again, load average {os.getloadavg()[0]:.1f}"
        return write(results, args.results)
    loads = []

    def note(stage: str) -> None:
        loads.append(f"{stage} {os.getloadavg()[0]:.1f}")

    if args.ablations_only:  # beside a running full run, sharing its OUT (prior, dictionaries)
        sources = {path.stem: str(path) for path in (args.out / "dictionaries").glob("*.npy")}
        results = {
            "settings": recorded_settings(args),
            "ablations": {},
            "load_notes": "",
        }
        note("start")
        return run_ablations(args, results, train_dir, held_dir, sources, crops, note, loads)
    cpu = platform.processor() or platform.machine()
    hardware = (
        torch.cuda.get_device_name()
        if torch.device(args.device).type == "cuda"
        else f"CPU {cpu}, {os.cpu_count()} cores (shared)"
    )
    results = {
        "settings": recorded_settings(args),
        "hardware": hardware,
        "photos": photos,
        "training": {},
        "quality": {},
        "multi_scale": {},
        "memory": {},
        "ablations": {},
        "load_notes": "",
    }
    note("start")
    sources = prior_dictionaries(args, train_dir)
    note("prior")
    if args.prior_only:
        return
    for range_name, scale_range in RANGES.items():
        runs = results["training"][range_name] = {}
        runs["ContinuousSR"] = train_continuoussr(
            args, "full", scale_range, train_dir, held_dir, sources, validate=range_name == ABLATION_RANGE
        )
        note(f"ContinuousSR {range_name}")
        runs["LIIF"] = train_liif(args, scale_range, train_dir)
        note(f"LIIF {range_name}")
        quality = results["quality"][range_name] = {"bicubic": evaluate(None, crops, args.device)}
        quality["ContinuousSR"] = evaluate(
            Upscaler("ContinuousSR", load_continuoussr(runs["ContinuousSR"], "full", args.out, args.device)),
            crops,
            args.device,
        )
        quality["LIIF"] = evaluate(Upscaler("LIIF", load_liif(runs["LIIF"], args.out, args.device)), crops, args.device)
        note(f"eval {range_name}")
        results["load_notes"] = ", ".join(loads)
        write(results, args.results)

    runs = results["training"][ABLATION_RANGE]
    time_lr = make_lr(crops[0][1], crops[0][1].shape[0] / args.time_lr)[1]
    upscalers = {
        "ContinuousSR": Upscaler(
            "ContinuousSR", load_continuoussr(runs["ContinuousSR"], "full", args.out, args.device)
        ),
        "LIIF": Upscaler("LIIF", load_liif(runs["LIIF"], args.out, args.device)),
    }
    for set_name, scales in SCALE_SETS.items():
        results["multi_scale"][set_name] = {
            m: time_scales(u, time_lr, scales, args.device) for m, u in upscalers.items()
        }
        note(f"timing {set_name}")
    if not args.no_memory:
        memory_lr = make_lr(crops[0][1], crops[0][1].shape[0] / args.memory_lr)[1]
        results["memory"] = measure_memory(args, memory_lr)
        note("memory")
    results["load_notes"] = ", ".join(loads)
    write(results, args.results)

    if args.ablations:
        results["ablations"]["full"] = {
            "label": VARIANTS["full"].label,
            "training": runs["ContinuousSR"],
            "quality": results["quality"][ABLATION_RANGE]["ContinuousSR"],
        }
    run_ablations(args, results, train_dir, held_dir, sources, crops, note, loads)
    report(args, results, crops)


def run_ablations(args, results: dict, train_dir: Path, held_dir: Path, sources: dict, crops, note, loads) -> None:
    """Train and score each ablation at ABLATION_RANGE; results written after each one."""
    from benchmarks.peers.variants import VARIANTS

    for name in filter(None, args.ablations.split(",")):
        run = train_continuoussr(args, name, RANGES[ABLATION_RANGE], train_dir, held_dir, sources, validate=True)
        model = load_continuoussr(run, name, args.out, args.device)
        results["ablations"][name] = {
            "label": VARIANTS[name].label,
            "training": run,
            "quality": evaluate(Upscaler("ContinuousSR", model), crops, args.device),
        }
        note(name)
        results["load_notes"] = ", ".join(loads)
        write(results, args.results)


def report(args, results: dict, crops) -> None:
    if results["ablations"]:
        results["diagnostics"] = diagnose(args, results, crops)
    results["plots"] = plots(results, args.results)
    write(results, args.results)
    print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
