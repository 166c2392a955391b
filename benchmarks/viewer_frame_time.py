"""Frame times of `p2g view`'s WebGL2 renderer in headless Chromium, and the README's screenshot.

    python benchmarks/viewer_frame_time.py                      # 512x512 LR field, window 1280x720
    python benchmarks/viewer_frame_time.py --screenshot docs/viewer.jpg --window 760x600 --zoom 12 --origin 0 9

Frame time = drawing every visible tile into the float target, the display pass, and a one-pixel read that waits
for the GPU; medians over --frames frames per zoom. Without a GPU, Chromium's WebGL2 is SwiftShader on the CPU,
so these figures are a floor for what a laptop GPU does, not an estimate of it. The screenshot is a field fitted
to a crop of scikit-image's chelsea (the project's per-crop fitting, demo preset) shown split against bicubic of
the crop's MATLAB-bicubic LR image.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from gaussian_field.initial import field_from_image
from workflows.demo_assets import bundled_photo
from workflows.viewer.content import content_for_field
from workflows.viewer.headless import chromium, open_viewer, save_screenshot
from workflows.viewer.server import ViewerServer


def timing_field(size: int):
    """A size x size LR field of astronaut (512x512, repeated for larger sizes), straight from its pixels."""
    photo = bundled_photo("astronaut").astype(np.float32)
    reps = -(-size // photo.shape[0])
    lr = np.tile(photo, (reps, reps, 1))[:size, :size]
    image = torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1)
    return field_from_image(image, k=2, sigma=0.45), lr


def fitted_field(steps: int):
    """A field fitted to a 256 px crop of chelsea (64x64 LR at x4), and the crop's MATLAB-bicubic LR image."""
    from dgp_fitting.fitting import FitConfig, fit_crops
    from gaussian_field import GaussianField
    from sr_model.data.imresize import imresize

    hr = torch.from_numpy(bundled_photo("chelsea")[20:276, 120:376].astype(np.float32)).permute(2, 0, 1)[None]
    result = fit_crops(hr, [0], FitConfig(steps=steps), scale=4, k=2)
    field = GaussianField(result.means, result.chol, result.colors, 64, 64, 2)
    lr = imresize(hr, 0.25)[0].clamp(0, 1).permute(1, 2, 0).numpy()
    return field, lr, float(result.psnr[0])


def accuracy(driver, size: int = 24, scales=(2, 3.7, 8)) -> None:
    """Max |page render - gaussian_field.render| of a small photo field, in 8-bit levels, per scale."""
    import base64

    from gaussian_field import render

    lr = bundled_photo("astronaut")[100 : 100 + size, 180 : 180 + size].astype(np.float32)
    field = field_from_image(torch.from_numpy(np.ascontiguousarray(lr)).permute(2, 0, 1), k=2, sigma=0.45)
    content = content_for_field(field, lr, {"title": "accuracy"})
    server = ViewerServer(content)
    server.start_background()
    open_viewer(driver, server.url)
    parts = []
    for scale in scales:
        height = width = round(size * scale)
        got = np.frombuffer(
            base64.b64decode(
                driver.execute_script(
                    "return p2g.render(arguments[0], arguments[1], [arguments[2], arguments[2]])", width, height, scale
                )
            ),
            np.float32,
        ).reshape(height, width, 4)[..., :3]
        with torch.no_grad():
            expected = render(field, scale=scale)[0].permute(1, 2, 0).numpy()
        parts.append(f"x{scale:g} {np.abs(got - expected).max() * 255:.2f}")
    server.shutdown()
    print(
        f"page vs gaussian_field.render, {size}x{size} astronaut crop (sent as {content.packed.dtype}), "
        f"max |diff| in 8-bit levels: {', '.join(parts)}"
    )


def measure(args) -> None:
    start = time.perf_counter()
    field, lr = timing_field(args.lr_size)
    content = content_for_field(field, lr, {"title": f"astronaut_{args.lr_size}.npz"})
    pack_s = time.perf_counter() - start
    server = ViewerServer(content)
    server.start_background()
    width, height = args.window
    print(
        f"field {args.lr_size}x{args.lr_size} LR, {field.num_gaussians} Gaussians, sent as {content.packed.dtype} "
        f"({len(content.packed.data) / 2**20:.1f} MiB, float16 error {content.packed.float16_error * 255:.2f} "
        f"levels), packed in {pack_s:.1f} s"
    )
    with chromium(width, height) as driver:
        accuracy(driver)
        start = time.perf_counter()
        info = open_viewer(driver, server.url + f"?tile={args.tile}", timeout=600)
        print(
            f"page ready in {time.perf_counter() - start:.1f} s (download, decode, upload); {info['tiles']} tiles, "
            f"render target {info['renderTarget']}, renderer {info['renderer']}"
        )
        canvas = driver.execute_script("return p2g.getView().size")
        print(f"canvas {canvas[0]}x{canvas[1]}, median of {args.frames} frames:")
        for zoom in args.zooms:
            s = min(canvas[0], canvas[1]) / args.lr_size if zoom == "fit" else float(zoom)
            centre = args.lr_size / 2
            driver.execute_script(
                "p2g.setView(arguments[0], arguments[1])", s, [centre - canvas[0] / s / 2, centre - canvas[1] / s / 2]
            )
            times = driver.execute_script("return p2g.frameTimes(arguments[0])", args.frames)
            drawn = driver.execute_script("return p2g.info().tilesDrawn")
            median = statistics.median(times)
            print(
                f"  x{s:<7.3g} {median:9.1f} ms  ({1000 / median:6.2f} fps; {drawn}/{info['tiles']} tiles drawn; "
                f"frames {', '.join(f'{t:.0f}' for t in times)} ms)"
            )
    server.shutdown()
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def screenshot(args) -> None:
    field, lr, psnr = fitted_field(args.fit_steps)
    print(f"fitted chelsea crop: 64x64 LR field, {args.fit_steps} steps, x4 PSNR {psnr:.2f} dB")
    content = content_for_field(field, lr, {"title": "chelsea_field.npz", "bicubic_of": "chelsea_lr.png"})
    server = ViewerServer(content)
    server.start_background()
    with chromium(*args.window) as driver:
        open_viewer(driver, server.url, timeout=600)
        driver.execute_script("p2g.setView(arguments[0], arguments[1])", args.zoom, args.origin)
        driver.find_element("id", "split").click()
        driver.execute_script("p2g.draw()")
        path = Path(args.screenshot)
        shot = save_screenshot(driver, path.with_suffix(".png"))
        if path.suffix.lower() in (".jpg", ".jpeg"):  # a smaller file for the README
            from PIL import Image

            with Image.open(shot) as image:
                image.convert("RGB").save(path, quality=90)
            shot.unlink()
        print(f"wrote {path}")
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-size", type=int, default=512, help="LR side of the timed field")
    parser.add_argument("--window", type=lambda t: tuple(int(v) for v in t.split("x")), default=(1280, 720))
    parser.add_argument("--zooms", nargs="+", default=["fit", "1", "4", "30"])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--tile", type=int, default=128, help="LR pixels per tile side")
    parser.add_argument("--screenshot", metavar="PNG", help="write the README screenshot instead of timing")
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--zoom", type=float, default=7.0)
    parser.add_argument("--origin", type=float, nargs=2, default=(14.0, 14.0))
    args = parser.parse_args()
    screenshot(args) if args.screenshot else measure(args)


if __name__ == "__main__":
    main()
