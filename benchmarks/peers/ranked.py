"""The paper's quality claims ranked at one budget: ContinuousSR-lite, LIIF, no dictionary, a 126-entry dictionary.

    .venv/bin/python -m benchmarks.peers.ranked [--steps 1000 --batch 8 --patch 16 --scales 1-4] [--out runs/ranked]

Every model trains on the same photos (`make data`'s wallpapers, halved as `workflows.bundled_model prepare`
does), with the same `lite` encoder, seed, batches (`ScaleBatchSampler`), LR patch, steps, rate schedule, L1
loss and gradient clip (`benchmarks/compare_peers.py`'s two training loops). Scored on the held-out split
(val/, 240 px centre crops) and on scikit-image's held-out photos (motorcycle, camera, coins, clock; 192 px
centre crops) at x2, x3, x4, x6, x8, x12: Y-PSNR (shave = scale) and SSIM as `p2g eval` scores, per image,
so each pair of models gets a win count. Learning curves: held-out Y-PSNR at x4 and x8 every steps/4.

Rerunning skips the models already trained and scored (results.json keeps them); a model interrupted mid-run
trains again from its start. Writes OUT/results.json and OUT/results.md; `--results DIR` also copies both there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

SCALES = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0)
CURVE_SCALES = (4.0, 8.0)
#: model name -> ContinuousSR variant of benchmarks/peers/variants.py, or "LIIF"
MODELS = {
    "ContinuousSR-lite": "full",
    "LIIF": "LIIF",
    "no dictionary": "no-dictionary",
    "126-entry dictionary": "full-126",
}
SKIMAGE_CROP = 192
#: results.json's key for the scores of the bundled `lite` weights (sr_model/weights/, trained elsewhere: 1232 steps
#: of batch 4, LR patch 32, U(2, 8); see its model card)
SHIPPED = "shipped lite"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ranked")
    parser.add_argument("--corpus", type=Path, default=REPO / "data" / "wallpapers", help="make data's folder")
    parser.add_argument("--results", type=Path, help="also copy results.json/.md here (e.g. the repo's results)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=16, help="LR patch side")
    parser.add_argument("--scales", default="1-4", help="training scale range, U(low, high)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-crop", type=int, default=96, help="held-out crop of the learning curves (HR px)")
    parser.add_argument("--minutes", type=float, default=600.0, help="wall-clock cap of each training run")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset, in this order")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def per_image_scores(upscaler, crops, device) -> dict:
    """{"x2": {"psnr": [...], "ssim": [...]}, ...} per image at the six scales; None scores bicubic."""
    from compare_peers import per_image_scores as scores_per_image

    return scores_per_image(upscaler, crops, device, SCALES)


def test_sets(args, held_dir: Path) -> dict:
    from compare_peers import heldout_crops
    from train_lite import prepare_photos

    _, skimage_held, _ = prepare_photos(args.out / "skimage", "skimage", args.corpus)
    return {
        "wallpapers val (240 px)": heldout_crops(held_dir, 240),
        f"scikit-image held out ({SKIMAGE_CROP} px)": heldout_crops(skimage_held, SKIMAGE_CROP),
    }


def train_one(args, name: str, train_dir: Path, held_dir: Path, sources: dict) -> tuple[dict, object]:
    from compare_peers import (
        Upscaler,
        evaluate,
        heldout_crops,
        load_continuoussr,
        load_liif,
        train_continuoussr,
        train_liif,
    )

    low, high = (float(v) for v in args.scales.split("-"))
    variant = MODELS[name]
    if variant == "LIIF":
        curve_crops = heldout_crops(held_dir, args.val_crop)
        curve: list[dict] = []

        def point(model, step: int) -> None:
            scores = evaluate(Upscaler("LIIF", model), curve_crops, args.device, CURVE_SCALES)
            curve.append({"step": step, **{f"x{s:g}": scores[f"x{s:g}"]["psnr"] for s in CURVE_SCALES}})

        entry = train_liif(args, (low, high), train_dir, curve=point, curve_every=max(1, args.steps // 4))
        entry["val_curve"] = curve
        return entry, Upscaler("LIIF", load_liif(entry, args.out, args.device))
    entry = train_continuoussr(args, variant, (low, high), train_dir, held_dir, sources, validate=True)
    return entry, Upscaler("ContinuousSR", load_continuoussr(entry, variant, args.out, args.device))


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ["NUMBA_NUM_THREADS"] = str(args.threads)
    import platform

    import torch
    from compare_peers import prior_dictionaries

    from workflows.bundled_model import prepare

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    prepare(args.corpus, args.out)
    train_dir, held_dir = args.out / "photos" / "train", args.out / "photos" / "val"
    prior_args = SimpleNamespace(out=args.out, fit_preset="demo", prior_crops=2, dictionary_size=730)
    sources = prior_dictionaries(prior_args, args.corpus / "train")  # the prior of the full-size photos, as bundled
    sets = test_sets(args, held_dir)
    results_file = args.out / "results.json"
    settings = {  # paths relative to the repository: committed results name no machine's folders
        k: (os.path.relpath(v, REPO) if isinstance(v, Path) else v)
        for k, v in vars(args).items()
        if k not in ("out", "results")
    }
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if results.get("settings", {}) | {"models": ""} != settings | {"models": ""}:
        results = {"settings": settings, "models": {}}  # other settings: start over
    results["settings"] = settings
    results["hardware"] = f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared)"
    results["photos"] = {name: [stem for stem, _ in crops] for name, crops in sets.items()}
    if "bicubic" not in results:
        results["bicubic"] = {name: per_image_scores(None, crops, args.device) for name, crops in sets.items()}
    for name in args.models.split(","):
        if name in results["models"]:
            print(f"{name}: done before, kept")
            continue
        began = time.perf_counter()
        entry, upscaler = train_one(args, name, train_dir, held_dir, sources)
        entry["scores"] = {set_name: per_image_scores(upscaler, crops, args.device) for set_name, crops in sets.items()}
        results["models"][name] = entry
        results_file.write_text(json.dumps(results, indent=1))
        print(f"{name}: {entry['steps']} steps in {entry['train_seconds']:.0f} s ({time.perf_counter() - began:.0f} s)")
    if SHIPPED not in results:  # the bundled weights on the same photos: is any model here stronger?
        from compare_peers import Upscaler

        from sr_model.files.model_files import load_network

        shipped = Upscaler("ContinuousSR", load_network(None, args.device))
        results[SHIPPED] = {set_name: per_image_scores(shipped, crops, args.device) for set_name, crops in sets.items()}
        results_file.write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(report(results))
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        for file in ("results.json", "results.md"):
            shutil.copy(args.out / file, args.results / file)
    print((args.out / "results.md").read_text())


def mean(values) -> float:
    return sum(values) / len(values)


def report(results: dict) -> str:
    """The tables: mean Y-PSNR / SSIM per model and scale per test set, gains over bicubic, win counts, curves."""
    models = results["models"]
    settings = results["settings"]
    lines = [
        "# Peers ranked at one budget (`benchmarks/peers/ranked.py`)",
        "",
        f"Settings: {settings['steps']} steps, batch {settings['batch']}, LR patch {settings['patch']}, scales "
        f"U({settings['scales'].replace('-', ', ')}), Adam {settings['lr']} halved at 60 % and 85 %, seed "
        f"{settings['seed']}, `lite` encoder; {results['hardware']}.",
        "",
    ]
    for set_name in results["bicubic"]:
        lines += [f"## {set_name}: Y-PSNR (dB) / SSIM, mean of {len(results['photos'][set_name])} photos", ""]
        lines.append("| model | steps | " + " | ".join(f"x{s:g}" for s in SCALES) + " |")
        lines.append("|---|---|" + "---|" * len(SCALES))
        rows = [("bicubic", "", results["bicubic"][set_name])]
        if SHIPPED in results:
            rows.append(("bundled lite weights (model card)", "1232", results[SHIPPED][set_name]))
        rows += [(name, str(entry["steps"]), entry["scores"][set_name]) for name, entry in models.items()]
        for name, steps, scores in rows:
            cells = [f"{mean(scores[f'x{s:g}']['psnr']):.2f} / {mean(scores[f'x{s:g}']['ssim']):.4f}" for s in SCALES]
            lines.append(f"| {name} | {steps} | " + " | ".join(cells) + " |")
        lines += ["", "Gain over bicubic (dB); in brackets, photos where the model beats bicubic:", ""]
        lines.append("| model | " + " | ".join(f"x{s:g}" for s in SCALES) + " |")
        lines.append("|---|" + "---|" * len(SCALES))
        base = results["bicubic"][set_name]
        gains = dict(models)
        if SHIPPED in results:
            gains["bundled lite weights (model card)"] = {"scores": results[SHIPPED]}
        for name, entry in gains.items():
            cells = []
            for s in SCALES:
                ours, theirs = entry["scores"][set_name][f"x{s:g}"]["psnr"], base[f"x{s:g}"]["psnr"]
                wins = sum(a > b for a, b in zip(ours, theirs, strict=True))
                cells.append(f"{mean(ours) - mean(theirs):+.2f} ({wins}/{len(ours)})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    pairs = [("ContinuousSR-lite", "LIIF"), ("ContinuousSR-lite", "no dictionary"),
             ("ContinuousSR-lite", "126-entry dictionary"), ("ContinuousSR-lite", "bundled lite weights")]  # fmt: skip
    scored = {name: entry["scores"] for name, entry in models.items()}
    if SHIPPED in results:
        scored["bundled lite weights"] = results[SHIPPED]
    lines += ["## Head to head: Y-PSNR difference (dB) and wins over both test sets, all six scales", ""]
    lines += [
        "| pair | " + " | ".join(f"x{s:g}" for s in SCALES) + " | wins |",
        "|---|" + "---|" * len(SCALES) + "---|",
    ]
    for first, second in pairs:
        if first not in scored or second not in scored:
            continue
        cells, won, total = [], 0, 0
        for s in SCALES:
            a = [v for set_name in results["bicubic"] for v in scored[first][set_name][f"x{s:g}"]["psnr"]]
            b = [v for set_name in results["bicubic"] for v in scored[second][set_name][f"x{s:g}"]["psnr"]]
            won += sum(x > y for x, y in zip(a, b, strict=True))
            total += len(a)
            cells.append(f"{mean(a) - mean(b):+.2f}")
        lines.append(f"| {first} - {second} | " + " | ".join(cells) + f" | {won}/{total} |")
    lines += ["", "## Learning curves: held-out Y-PSNR (dB) at x4 / x8", ""]
    for name, entry in models.items():
        points = ", ".join(f"{p['step']}: {p.get('x4', float('nan')):.2f} / {p.get('x8', float('nan')):.2f}"
                           for p in entry.get("val_curve", []))  # fmt: skip
        lines.append(f"- {name} ({entry['train_seconds'] / 60:.0f} min): {points}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
