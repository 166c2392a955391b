"""A large input end to end: `p2g upscale` of a 4000x3000 photo mosaic at x4 (a 16000x12000 PNG) on this machine.

Runs the command in a child process twice: first without --tile (expected: refused with a suggested --tile,
unless the machine has the memory), then with the suggested tile, and reports wall time, the child's peak
RSS, the encode / render / write times it printed, and the output's size read back from the file header.
The model is the `lite` preset with random weights unless --checkpoint is given (plumbing and memory do not
depend on the weights). The input is a mosaic of scikit-image's bundled photographs resized to fill the frame.

    python benchmarks/upscale_large.py [--size 4000x3000] [--scale 4] [--checkpoint CKPT] [--keep DIR]
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")


def mosaic(height: int, width: int) -> np.ndarray:
    """A height x width RGB mosaic of the bundled photos (3 x 4 cells), each resized to its cell."""
    import cv2

    from workflows.demo_assets import bundled_photo

    out = np.zeros((height, width, 3), np.float32)
    rows, cols = 3, 4
    for n in range(rows * cols):
        r, c = divmod(n, cols)
        top, bottom = r * height // rows, (r + 1) * height // rows
        left, right = c * width // cols, (c + 1) * width // cols
        photo = bundled_photo(PHOTOS[n % len(PHOTOS)]).astype(np.float32)
        out[top:bottom, left:right] = cv2.resize(photo, (right - left, bottom - top), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0, 1)


def run_child(args: list[str]) -> tuple[int, str, float, int]:
    """(exit code, output, seconds, peak RSS bytes of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "workflows.cli", *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    if peak <= before * 1024:
        peak = -1  # an earlier child peaked higher; this one's own peak is not visible
    return proc.returncode, proc.stdout + proc.stderr, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="4000x3000", help="input WxH")
    parser.add_argument("--scale", default="4")
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: lite preset, random weights)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    from gaussian_field.image_io import write_image
    from sr_model.checkpoint import save_checkpoint
    from sr_model.model import build_model
    from sr_model.presets import preset

    work = args.keep or Path(tempfile.mkdtemp(prefix="p2g_large_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        source = write_image(work / "mosaic.png", mosaic(height, width))
        checkpoint = args.checkpoint
        if checkpoint is None:
            import torch

            torch.manual_seed(0)
            checkpoint = save_checkpoint(work / "lite_random.pt", build_model(preset("lite"), "official"))
        base = [
            "upscale",
            str(source),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(work / "out"),
            "--scale",
            args.scale,
        ]
        code, text, seconds, peak = run_child(base)
        print(f"without --tile: exit {code} after {seconds:.1f} s\n{text.strip()}")
        match = re.search(r"--tile (\d+)", text)
        if code == 0 or not match:
            return
        tile = match.group(1)
        code, text, seconds, peak = run_child(base + ["--tile", tile])
        print(
            f"with --tile {tile}: exit {code}, {seconds:.1f} s wall, child peak RSS "
            f"{peak / 2**30:.2f} GiB\n{text.strip()}"
        )
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None
        for path in sorted((work / "out").glob("*.png")):
            with Image.open(path) as img:
                print(f"{path.name}: {img.size[0]}x{img.size[1]} px, {path.stat().st_size / 2**20:.0f} MiB")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
