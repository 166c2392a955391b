"""The bundled `lite` weights, reproducibly: corpus -> prior -> dictionary -> training -> held-out scores.

    python -m workflows.bundled_model prepare --corpus data/wallpapers --out runs/bundled
    python -m workflows.bundled_model prior   --corpus data/wallpapers --out runs/bundled
    python -m workflows.bundled_model train   --out runs/bundled [--minutes 70] [--device cuda --batch 16 ...]
    python -m workflows.bundled_model score   --out runs/bundled [--checkpoint runs/bundled/train/last.pt]

1. prepare: `make data`'s wallpaper photographs, halved (2x2 box average: the 3-6K JPEGs become ~2K photos
   with their compression noise averaged away, the size of DIV2K's), as PNG. The held-out split (val/) is
   also centre-cropped to 480 px (divisible by every scored scale), so scoring stays cheap on a CPU.
2. prior: `p2g fit-prior` (64 px crops, 2 per training photo, demo preset) on the training photos as `make data`
   gave them (full size), and `p2g prior-stats` (the default 730-kernel grid dictionary): the dictionary's
   provenance goes into the checkpoint.
3. train: `p2g train` of the `lite` preset (colours anchored on the LR's interpolation) with the settings below;
   rerunning continues the run (`--resume`), so a time-limited run is extended by running it again.
4. score: held-out Y-PSNR (shave = scale) of the checkpoint and of bicubic at x2 ... x16, as `p2g eval` scores,
   printed as the model card's table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SCORE_SCALES = (2, 3, 4, 6, 8, 12, 16)
VAL_CROP = 480


def p2g(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "workflows.cli", *map(str, args)], check=True)


def prepare(corpus: Path, out: Path) -> None:
    """Halve every photo of corpus/{train,val} into out/photos/{train,val} (val also centre-cropped)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # wallpapers are large on purpose
    for split in ("train", "val"):
        target = out / "photos" / split
        target.mkdir(parents=True, exist_ok=True)
        sources = sorted(p for p in (corpus / split).iterdir() if p.is_file())
        if not sources:
            raise SystemExit(f"no photos in {corpus / split}; run `make data` first")
        for path in sources:
            dest = target / (path.stem + ".png")
            if dest.exists():
                continue
            with Image.open(path) as img:
                half = img.convert("RGB").reduce(2)
            if split == "val":
                side = min(VAL_CROP, half.width, half.height)
                left, top = (half.width - side) // 2, (half.height - side) // 2
                half = half.crop((left, top, left + side, top + side))
            half.save(dest)
        print(f"{split}: {len(sources)} photos in {target}")


def prior(corpus: Path, out: Path, workers: int) -> None:
    store = out / "prior.zarr"
    p2g(
        "fit-prior",
        corpus / "train",
        "--store",
        store,
        "--crop",
        64,
        "--crops-per-image",
        2,
        "--preset",
        "demo",
        "--batch",
        4,
        "--workers",
        workers,
        "--no-progress",
    )
    p2g("prior-stats", "--store", store, "--out", out / "prior_stats")


def train(out: Path, args) -> None:
    run = out / "train"
    common = ["--out", run, "--device", args.device, "--time-limit", args.minutes]
    if (run / "last.pt").exists():
        p2g("train", *common, "--resume", "--steps", args.steps)
        return
    p2g(
        "train",
        *common,
        "--prior",
        out / "prior.zarr",
        "--preset",
        "lite",
        "--images",
        out / "photos" / "train",
        "--val-images",
        out / "photos" / "val",
        "--steps",
        args.steps,
        "--batch",
        args.batch,
        "--patch",
        args.patch,
        "--scales",
        args.scales,
        "--lr",
        args.lr,
        "--lr-decay",
        "0.6,0.85",
        "--val-scales",
        "2,4,8",
        "--val-every",
        args.val_every,
        "--val-crop",
        192,
        "--log-every",
        10,
    )


def score(out: Path, checkpoint: Path | None) -> None:
    import numpy as np

    from sr_model.evaluation.evaluate import evaluate, summarize
    from sr_model.files.model_files import load_network as load_model

    checkpoint = checkpoint or out / "train" / "last.pt"
    rows = evaluate([out / "photos" / "val"], [float(s) for s in SCORE_SCALES], model=load_model(checkpoint))
    table: dict = {}
    for entry in summarize(rows):
        table.setdefault(entry["scale"], {})[entry["method"]] = entry["psnr"]
    images = len({r.image for r in rows})
    print(f"{checkpoint}: held-out Y-PSNR (dB, shave = scale), mean of {images} photos")
    print("| scale | " + " | ".join(f"x{s:g}" for s in SCORE_SCALES) + " |")
    print("|---|" + "---|" * len(SCORE_SCALES))
    for method in ("model", "bicubic"):
        print(f"| {method} | " + " | ".join(f"{table[float(s)][method]:.2f}" for s in SCORE_SCALES) + " |")
    gains = [table[float(s)]["model"] - table[float(s)]["bicubic"] for s in SCORE_SCALES]
    print("| gain | " + " | ".join(f"{g:+.2f}" for g in gains) + " |")
    print(f"mean gain {np.mean(gains):+.2f} dB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("prepare", "prior", "train", "score"))
    parser.add_argument("--out", type=Path, default=Path("runs/bundled"))
    parser.add_argument("--corpus", type=Path, default=Path("data/wallpapers"), help="make data's folder")
    parser.add_argument("--workers", type=int, default=1, help="fit-prior worker processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, default=70.0, help="this call's training time limit")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--scales", default="2-8")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--checkpoint", type=Path, help="score this checkpoint instead of train/last.pt")
    args = parser.parse_args(argv)
    if args.stage == "prepare":
        prepare(args.corpus, args.out)
    elif args.stage == "prior":
        prior(args.corpus, args.out, args.workers)
    elif args.stage == "train":
        train(args.out, args)
    else:
        score(args.out, args.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
