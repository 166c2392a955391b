"""Quality of `lite` trained on this machine's CPU: held-out Y-PSNR at x2, x3, x4, x6, x8 against bicubic.

    .venv/bin/python benchmarks/train_lite.py [--minutes 30] [--variants full,fixed-centres,no-dictionary]

1. Photos. `data/wallpapers` (from `make data`) when it exists; otherwise the photographs bundled with
   scikit-image, split by image: the held-out ones (motorcycle, camera, coins, clock) are neither trained on nor
   among the demo's photos. Grayscale photos are stacked to RGB.
2. Prior. `p2g fit-prior` on random crops of the training photos, then `p2g prior-stats` (grid dictionary):
   the project's own pipeline, cached in OUT/prior between runs (not counted in the training budget).
3. Training. Each variant (the paper's ablation: full model, fixed centres, no dictionary) trains with the same
   settings and the same budget: --steps steps, cut at --minutes of wall-clock time, whichever comes first.
   The machine is shared: the steps reached in the budget depend on its load and are reported.
4. Evaluation. `sr_model.evaluation.evaluate` (the code behind `p2g eval`) on the held-out photos with each
   variant's last.pt: MATLAB-bicubic LR rounded to 8 bits, BasicSR Y-PSNR with shave = scale, bicubic beside it.

Writes OUT/results.json and OUT/results.md (default OUT: runs/train_lite) and prints the table.
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
sys.path.insert(0, str(REPO))

TRAIN_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                "brick", "grass", "gravel", "moon")
HELDOUT_PHOTOS = ("motorcycle", "camera", "coins", "clock")
EVAL_SCALES = (2.0, 3.0, 4.0, 6.0, 8.0)
VARIANTS = {"full": {}, "fixed-centres": {"positions": "fixed"}, "no-dictionary": {"covariance": "free"}}


def skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.float64) / 255.0


def prepare_photos(out: Path, corpus: str) -> tuple[Path, Path, str]:
    """(train folder, held-out folder, description)."""
    wallpapers = REPO / "data" / "wallpapers"
    if corpus == "wallpapers" or (corpus == "auto" and (wallpapers / "train").is_dir()):
        if not (wallpapers / "train").is_dir():
            raise SystemExit("data/wallpapers is missing: run `make data` first, or use --corpus skimage")
        return wallpapers / "train", wallpapers / "val", "Debian wallpaper photographs (make data)"
    from gaussian_field.image_io import write_image

    train_dir, held_dir = out / "photos" / "train", out / "photos" / "heldout"
    for folder, names in ((train_dir, TRAIN_PHOTOS), (held_dir, HELDOUT_PHOTOS)):
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (folder / f"{name}.png").exists():
                write_image(folder / f"{name}.png", skimage_photo(name))
    described = (f"scikit-image photos: train {', '.join(TRAIN_PHOTOS)}; held out {', '.join(HELDOUT_PHOTOS)} "
                 f"(motorcycle = stereo_motorcycle left view)")
    return train_dir, held_dir, described


def p2g(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "workflows.cli", *args], cwd=REPO, check=True)


def build_prior(out: Path, train_dir: Path, crops_per_image: int, size: int) -> Path:
    """The training photos' own prior: fit-prior (reused when the store is complete), then prior-stats (cheap,
    deterministic) for a dictionary of `size` kernels, stored in the store with its provenance."""
    store = out / "prior" / "store.zarr"
    fit = ("fit-prior", str(train_dir), "--store", str(store), "--preset", "quality", "--crop", "64",
           "--crops-per-image", str(crops_per_image), "--workers", "2", "--no-progress")
    try:
        p2g(*fit)
    except subprocess.CalledProcessError:  # a store of older fitting settings (the defaults moved): refit
        print(f"refitting: {store} does not match the current fitting settings", flush=True)
        shutil.rmtree(store)
        p2g(*fit)
    p2g("prior-stats", "--store", str(store), "--out", str(out / "prior" / "stats"), "--size", str(size))
    return store


def train_variant(args, name: str, train_dir: Path, prior: Path) -> dict:
    from sr_model.train_state import TrainConfig, milestones_from_fractions
    from sr_model.training import train

    run = args.out / "runs" / name
    if run.exists():
        shutil.rmtree(run)
    overrides = VARIANTS[name]
    config = TrainConfig(images=[train_dir], out=run, prior=None if overrides.get("covariance") == "free" else prior,
                         preset="lite", model_overrides=overrides, steps=args.steps, batch=args.batch,
                         patch=args.patch, scale_min=args.scale_min, scale_max=args.scale_max, lr=args.lr,
                         lr_milestones=milestones_from_fractions(args.steps, (0.6, 0.85)), val_every=args.steps,
                         log_every=20, seed=args.seed)
    load_before = os.getloadavg()[1]
    result = train(config, device="cpu", time_limit=args.minutes * 60, progress=True)
    return {"steps": result.step, "train_seconds": result.seconds, "checkpoint": str(result.last),
            "load_average_5min": [round(load_before, 2), round(os.getloadavg()[1], 2)]}


def evaluate_variant(checkpoint: str, held_dir: Path) -> dict:
    from sr_model.evaluation import evaluate, summarize
    from sr_model.model_files import load_network

    rows = evaluate([held_dir], EVAL_SCALES, model=load_network(checkpoint))
    table: dict = {}
    for entry in summarize(rows):
        table.setdefault(f"x{entry['scale']:g}", {})[entry["method"]] = entry["psnr"]
    return table


def markdown(results: dict) -> str:
    names = list(results["variants"])
    lines = [f"lite trained on CPU ({results['photos']}); held-out Y-PSNR (dB), shave = scale, "
             f"LR by MATLAB bicubic (8-bit); {results['images']} held-out image(s)", "",
             "| variant | steps | train min | " + " | ".join(f"x{s:g}" for s in EVAL_SCALES) + " |",
             "|---|---|---|" + "---|" * len(EVAL_SCALES)]
    first = results["variants"][names[0]]["psnr"]
    lines.append("| bicubic | - | - | " + " | ".join(f"{first[f'x{s:g}']['bicubic']:.3f}" for s in EVAL_SCALES) + " |")
    for name in names:
        entry = results["variants"][name]
        cells = [f"{entry['psnr'][f'x{s:g}']['model']:.3f} ({entry['psnr'][f'x{s:g}']['model'] - entry['psnr'][f'x{s:g}']['bicubic']:+.2f})"
                 for s in EVAL_SCALES]
        lines.append(f"| {name} | {entry['steps']} | {entry['train_seconds'] / 60:.1f} | " + " | ".join(cells) + " |")
    loads = ", ".join(f"{n} {v['load_average_5min'][0]:g} -> {v['load_average_5min'][1]:g}" for n, v in results["variants"].items())
    lines += ["", f"5-minute load average of this 2-core machine before -> after each training: {loads}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "train_lite")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per variant (wall clock)")
    parser.add_argument("--steps", type=int, default=3000, help="schedule length (rate x0.5 at 60 %% and 85 %%)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--scale-min", type=float, default=2.0)
    parser.add_argument("--scale-max", type=float, default=8.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--corpus", choices=("auto", "skimage", "wallpapers"), default="auto")
    parser.add_argument("--prior-crops", type=int, default=4, help="fit-prior crops per training photo")
    parser.add_argument("--dictionary-size", type=int, default=126, help="n^3 + 1 grid kernels")
    args = parser.parse_args()
    import torch

    from sr_model.datasets import find_images

    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    train_dir, held_dir, photos = prepare_photos(args.out, args.corpus)
    start = time.perf_counter()
    prior = build_prior(args.out, train_dir, args.prior_crops, args.dictionary_size)
    results = {"photos": photos, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "prior_minutes": (time.perf_counter() - start) / 60, "variants": {}}
    for name in args.variants.split(","):
        entry = train_variant(args, name, train_dir, prior)
        entry["psnr"] = evaluate_variant(entry["checkpoint"], held_dir)
        results["variants"][name] = entry
        results["images"] = len(find_images([held_dir]))
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        (args.out / "results.md").write_text(markdown(results))
        print(markdown(results), flush=True)


if __name__ == "__main__":
    main()
