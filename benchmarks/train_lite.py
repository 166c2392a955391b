"""Quality of `lite` trained on this machine's CPU: held-out Y-PSNR gain over bicubic against training steps.

    .venv/bin/python benchmarks/train_lite.py [--steps 500] [--curve-every 100] [--variants full,unanchored]

1. Photos. `--data DIR` (a folder with train/ and val/, e.g. `make data`'s data/wallpapers, the default when
   it exists); otherwise the photographs bundled with scikit-image, split by image: the held-out ones
   (motorcycle, camera, coins, clock) are neither trained on nor among the demo's photos. Grayscale photos are
   stacked to RGB.
2. Prior. `p2g fit-prior` on random crops of the training photos, then `p2g prior-stats` (grid dictionary):
   the project's own pipeline, cached in OUT/prior between runs (not counted in the training budget);
   `--prior STORE` uses an existing store instead.
3. Training. Each variant trains with the same settings and the same budget: --steps steps, cut at --minutes of
   wall-clock time, whichever comes first. Variants: `full` (the `lite` preset: colours anchored on the LR's
   interpolation, sr_model.networks.color_anchor), `unanchored` (the same model with raw colours, as the official
   architectures and the `lite` preset before anchoring), and the paper's ablations `fixed-centres`,
   `no-dictionary`. The machine is shared: the steps reached in the budget depend on its load and are reported.
4. Learning curves. Before training and every --curve-every steps, the training loop's validation
   (sr_model.training.validation, the protocol of `p2g eval`: MATLAB-bicubic LR rounded to 8 bits, BasicSR Y-PSNR with
   shave = scale) on centre crops (--val-crop px) of the held-out photos at x2, x3, x4, x6, x8: the gain over
   bicubic per scale and the per-channel mean error (SR - HR in 8-bit levels), which separates a global colour
   bias from structural error.

Writes OUT/results.json and OUT/results.md (default OUT: runs/train_lite) and prints the tables.
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

TRAIN_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "brick",
    "grass",
    "gravel",
    "moon",
)
HELDOUT_PHOTOS = ("motorcycle", "camera", "coins", "clock")
EVAL_SCALES = (2.0, 3.0, 4.0, 6.0, 8.0)
VARIANTS = {
    "full": {},
    "unanchored": {"color_anchor": "none"},
    "fixed-centres": {"positions": "fixed"},
    "no-dictionary": {"covariance": "free"},
}


def skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image[..., :3].astype(np.float64) / 255.0


def prepare_photos(out: Path, corpus: str, data: Path) -> tuple[Path, Path, str]:
    """(train folder, held-out folder, description)."""
    if corpus == "wallpapers" or (corpus == "auto" and (data / "train").is_dir()):
        if not (data / "train").is_dir() or not (data / "val").is_dir():
            raise SystemExit(f"{data} has no train/ and val/ folders: run `make data` first, or use --corpus skimage")
        return (
            data / "train",
            data / "val",
            f"Debian wallpaper photographs (make data): {data.name}/train, held out {data.name}/val",
        )
    from gaussian_field.image_io import write_image

    train_dir, held_dir = out / "photos" / "train", out / "photos" / "heldout"
    for folder, names in ((train_dir, TRAIN_PHOTOS), (held_dir, HELDOUT_PHOTOS)):
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (folder / f"{name}.png").exists():
                write_image(folder / f"{name}.png", skimage_photo(name))
    described = (
        f"scikit-image photos: train {', '.join(TRAIN_PHOTOS)}; held out {', '.join(HELDOUT_PHOTOS)} "
        f"(motorcycle = stereo_motorcycle left view)"
    )
    return train_dir, held_dir, described


def p2g(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "workflows.cli", *args], cwd=REPO, check=True)


def build_prior(out: Path, train_dir: Path, crops_per_image: int, size: int) -> Path:
    """The training photos' own prior: fit-prior (reused when the store is complete), then prior-stats (cheap,
    deterministic) for a dictionary of `size` kernels, stored in the store with its provenance."""
    store = out / "prior" / "store.zarr"
    fit = (
        "fit-prior",
        str(train_dir),
        "--store",
        str(store),
        "--preset",
        "quality",
        "--crop",
        "64",
        "--crops-per-image",
        str(crops_per_image),
        "--workers",
        "2",
        "--no-progress",
    )
    try:
        p2g(*fit)
    except subprocess.CalledProcessError:  # a store of older fitting settings (the defaults moved): refit
        print(f"refitting: {store} does not match the current fitting settings", flush=True)
        shutil.rmtree(store)
        p2g(*fit)
    p2g("prior-stats", "--store", str(store), "--out", str(out / "prior" / "stats"), "--size", str(size))
    return store


def _config(args, name: str, train_dir: Path, held_dir: Path, prior: Path):
    from sr_model.training.state import TrainConfig, milestones_from_fractions

    overrides = VARIANTS[name]
    return TrainConfig(
        images=[train_dir],
        out=args.out / "runs" / name,
        prior=None if overrides.get("covariance") == "free" else prior,
        preset="lite",
        model_overrides=overrides,
        steps=args.steps,
        batch=args.batch,
        patch=args.patch,
        scale_min=args.scale_min,
        scale_max=args.scale_max,
        lr=args.lr,
        lr_milestones=milestones_from_fractions(args.steps, (0.6, 0.85)),
        val_images=[held_dir],
        val_scales=EVAL_SCALES,
        val_every=args.curve_every,
        val_crop=args.val_crop,
        log_every=20,
        seed=args.seed,
    )


def initial_scores(config) -> dict:
    """The validation of the model training starts from (built as `train` builds it: same seed)."""
    import torch

    from sr_model.networks.covariance_dictionary import load_dictionary
    from sr_model.networks.model import build_model
    from sr_model.training.validation import Validator

    torch.manual_seed(config.seed)
    model_config = config.model_config()
    model = build_model(model_config, load_dictionary(config.prior) if model_config.uses_dictionary else None)
    return Validator(config.val_images, config.val_scales, config.val_crop)(model)


def train_variant(args, name: str, train_dir: Path, held_dir: Path, prior: Path) -> dict:
    import torch

    from sr_model.training.loop import train

    torch.set_num_threads(args.threads)

    config = _config(args, name, train_dir, held_dir, prior)
    if Path(config.out).exists():
        shutil.rmtree(config.out)
    curve = [{"step": 0, "val": initial_scores(config)}]
    load_before = os.getloadavg()[1]
    result = train(config, device="cpu", time_limit=args.minutes * 60, progress=True)
    for line in (Path(config.out) / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "val" in record:
            curve.append({"step": record["step"], "val": record["val"]})
    return {
        "steps": result.step,
        "train_seconds": result.seconds,
        "checkpoint": str(result.last),
        "curve": curve,
        "load_average_5min": [round(load_before, 2), round(os.getloadavg()[1], 2)],
    }


def markdown(results: dict) -> str:
    names = list(results["variants"])
    scales = [f"x{s:g}" for s in EVAL_SCALES]
    lines = [
        f"lite trained on CPU ({results['photos']}); held-out Y-PSNR gain over bicubic (dB), shave = scale, "
        f"LR by MATLAB bicubic (8-bit), centre crops of at most {results['settings']['val_crop']} px of "
        f"{results['images']} held-out image(s); bias = per-channel mean of SR - HR in 8-bit levels (R, G, B), "
        f"mean over the scales",
        "",
        "| variant | step | " + " | ".join(scales) + " | bias R, G, B |",
        "|---|---|" + "---|" * (len(scales) + 1),
    ]
    first = results["variants"][names[0]]["curve"][0]["val"]
    lines.append(
        "| bicubic (dB) | - | "
        + " | ".join(f"{first[s]['bicubic']:.2f}" for s in scales)
        + " | "
        + ", ".join(f"{v:+.2f}" for v in np.mean([first[s]["bicubic_bias_rgb"] for s in scales], axis=0))
        + " |"
    )
    for name in names:
        for point in results["variants"][name]["curve"]:
            val = point["val"]
            lines.append(
                f"| {name} | {point['step']} | "
                + " | ".join(f"{val[s]['gain']:+.2f}" for s in scales)
                + " | "
                + ", ".join(f"{v:+.2f}" for v in val["bias_rgb"])
                + " |"
            )
    lines += ["", "| variant | steps | train min | 5-min load average before -> after |", "|---|---|---|---|"]
    for name, v in results["variants"].items():
        lines.append(
            f"| {name} | {v['steps']} | {v['train_seconds'] / 60:.1f} | "
            f"{v['load_average_5min'][0]:g} -> {v['load_average_5min'][1]:g} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "train_lite")
    parser.add_argument("--minutes", type=float, default=60.0, help="training budget per variant (wall clock)")
    parser.add_argument("--steps", type=int, default=500, help="schedule length (rate x0.5 at 60 %% and 85 %%)")
    parser.add_argument("--curve-every", type=int, default=100, help="held-out validation every N steps")
    parser.add_argument("--val-crop", type=int, default=256, help="held-out photos are centre-cropped to this")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=24)
    parser.add_argument("--scale-min", type=float, default=2.0)
    parser.add_argument("--scale-max", type=float, default=8.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="full,unanchored", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--corpus", choices=("auto", "skimage", "wallpapers"), default="auto")
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO / "data" / "wallpapers",
        help="folder with train/ and val/ photos (default: make data's)",
    )
    parser.add_argument("--prior", help="an existing prior store or .npy dictionary, or official (skips fit-prior)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (per variant)")
    parser.add_argument("--jobs", type=int, default=1, help="variants trained at the same time, one process each")
    parser.add_argument("--prior-crops", type=int, default=4, help="fit-prior crops per training photo")
    parser.add_argument("--dictionary-size", type=int, default=126, help="n^3 + 1 grid kernels")
    args = parser.parse_args()
    import torch

    from sr_model.data.datasets import find_images

    torch.set_num_threads(args.threads)
    unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    train_dir, held_dir, photos = prepare_photos(args.out, args.corpus, args.data)
    start = time.perf_counter()
    prior = args.prior or build_prior(args.out, train_dir, args.prior_crops, args.dictionary_size)
    results = {
        "photos": photos,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "prior": str(prior),
        "prior_minutes": (time.perf_counter() - start) / 60,
        "variants": {},
    }
    names = args.variants.split(",")
    results["images"] = len(find_images([held_dir]))

    def report(name: str, entry: dict) -> None:
        results["variants"][name] = entry
        results["variants"] = {n: results["variants"][n] for n in names if n in results["variants"]}
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        (args.out / "results.md").write_text(markdown(results))
        print(markdown(results), flush=True)

    if args.jobs > 1:  # variants side by side, one process each (same settings, so the same budget)
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {name: pool.submit(train_variant, args, name, train_dir, held_dir, prior) for name in names}
            for name in names:
                report(name, futures[name].result())
    else:
        for name in names:
            report(name, train_variant(args, name, train_dir, held_dir, prior))


if __name__ == "__main__":
    main()
