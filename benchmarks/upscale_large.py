"""A large input end to end: `p2g upscale` of a 4000x3000 photo mosaic with default flags, as a user runs it.

Runs the command in a child process and reports its exit code, wall time, peak RSS, the lines it printed (encode /
render / write times, the tiling notice) and the output's size read back from the file header. The model is the
bundled one unless --checkpoint is given. The input is a mosaic of scikit-image's bundled photographs resized to
fill the frame. Were the command to refuse, it is run again with the --tile its message suggests.

    python benchmarks/upscale_large.py [--size 4000x3000] [--scale 2] [--checkpoint CKPT] [--keep DIR]
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
    parser.add_argument("--scale", default="2")
    parser.add_argument("--checkpoint", type=Path, help="model file (default: the bundled model)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    from gaussian_field.image_io import write_image

    work = args.keep or Path(tempfile.mkdtemp(prefix="p2g_large_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        source = write_image(work / "mosaic.png", mosaic(height, width))
        base = ["upscale", str(source), "--out", str(work / "out"), "--scale", args.scale]
        if args.checkpoint is not None:
            base += ["--checkpoint", str(args.checkpoint)]
        code, text, seconds, peak = run_child(base)
        print(
            f"default flags: exit {code}, {seconds:.1f} s wall, child peak RSS {peak / 2**30:.2f} GiB "
            f"(load average {' '.join(open('/proc/loadavg').read().split()[:3])})\n{text.strip()}"
        )
        match = re.search(r"--tile (\d+)", text)
        if code != 0 and match:
            tile = match.group(1)
            code, text, seconds, peak = run_child(base + ["--tile", tile])
            print(f"with --tile {tile}: exit {code}, {seconds:.1f} s wall, child peak RSS {peak / 2**30:.2f} GiB")
            print(text.strip())
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
