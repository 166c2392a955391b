"""Decompression bombs: every image header is checked against P2G_MAX_IMAGE_PIXELS before anything is decoded, in
every format and by every reader (decode, probe, the crop plan's and the datasets' sizes), refused in one line
that names the file, its size, the limit and how to raise it; the verbs refuse a 40000 x 40000 TIFF of a few MB
in one line without growing past 1 GiB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from gaussian_field.image_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageReadError,
    ImageTooLargeError,
    max_image_pixels,
    probe_image,
    read_image,
    read_image_file,
    write_image,
)

ROOT = Path(__file__).resolve().parent.parent
HEIGHT, WIDTH = 30, 40  # 1200 pixels


def tiff_bomb(path: Path, side: int, dtype=np.uint8, channels: int = 3, header_only: bool = False) -> Path:
    """A zlib-tiled TIFF of side x side constant pixels, a few MB (every tile the same compressed bytes); with
    `header_only`, the file ends before the first tile."""
    tile = 1024
    block = zlib.compress(np.zeros((tile, tile, channels), dtype).tobytes(), 9)
    count = (-(-side // tile)) ** 2
    tifffile.imwrite(
        path,
        data=(block for _ in range(count)),
        shape=(side, side, channels) if channels > 1 else (side, side),
        dtype=dtype,
        tile=(tile, tile),
        compression="zlib",
        photometric="rgb" if channels >= 3 else "minisblack",
    )
    if header_only:
        with tifffile.TiffFile(path) as tif:
            first = tif.pages.first.dataoffsets[0]
        path.write_bytes(path.read_bytes()[:first])
    return path


def write_format(path: Path, pixels: np.ndarray) -> None:
    """`pixels` (float RGB in [0, 1]) in the format the name says, as each decoder path of image_io meets it."""
    name = path.name
    levels = np.round(pixels * 255).astype(np.uint8)
    if name == "rgb16.png":
        write_image(path, pixels, bits=16)  # OpenCV decodes it
    elif name == "gray16.png":
        Image.fromarray(levels[..., 0].astype(np.uint16) * 257).save(path)
    elif name == "rgba.png":
        write_image(path, pixels, alpha=pixels[..., 0])
    elif name == "rgb16.tif":
        write_image(path, pixels, bits=16)
    elif name == "float.tif":
        write_image(path, pixels, bits=32)
    elif name == "float_rgba.tif":  # OpenCV refuses it: tifffile decodes it
        tifffile.imwrite(path, np.dstack([pixels, pixels[..., :1]]).astype(np.float32), photometric="rgb")
    elif name == "gray16.tif":
        tifffile.imwrite(path, levels[..., 0].astype(np.uint16) * 257)
    elif name == "tiff_named.png":  # a TIFF whatever its name says
        tifffile.imwrite(path, levels, photometric="rgb")
    else:
        write_image(path, pixels)


FORMATS = [
    "rgb8.png",
    "rgb16.png",
    "gray16.png",
    "rgba.png",
    "photo.jpg",
    "photo.webp",
    "photo.bmp",
    "rgb8.tif",
    "rgb16.tif",
    "float.tif",
    "float_rgba.tif",
    "gray16.tif",
    "tiff_named.png",
]


def decoded(*args, **kwargs):
    raise AssertionError("pixels were decoded")


def trap_decoders(patch: pytest.MonkeyPatch) -> None:
    """Every pixel decoder image_io uses raises: what runs under `patch` has read headers only."""
    import cv2
    from PIL import ImageFile

    for owner, name in ((cv2, "imread"), (cv2, "imdecode"), (tifffile, "imread"), (tifffile.TiffPage, "asarray")):
        patch.setattr(owner, name, decoded)
    patch.setattr(ImageFile.ImageFile, "load", decoded)


def verified_probe(path):
    """The header read that training and evaluation scans make (structure verified too)."""
    return probe_image(path, verify=True)


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_is_refused_from_its_header_before_decoding(tmp_path, photo, monkeypatch, name):
    path = tmp_path / name
    pixels = photo("coffee", 100, 100, 64)[:HEIGHT, :WIDTH]
    write_format(path, pixels)
    monkeypatch.setenv("P2G_MAX_IMAGE_PIXELS", "1000")
    with monkeypatch.context() as trapped:
        trap_decoders(trapped)
        for reader in (read_image_file, read_image, probe_image, verified_probe):
            with pytest.raises(ImageTooLargeError) as caught:
                reader(path)
            message = str(caught.value)
            assert "\n" not in message
            for part in (str(path), f"{WIDTH}x{HEIGHT}", "1,200", "limit 1,000", "P2G_MAX_IMAGE_PIXELS=1200"):
                assert part in message, (reader.__name__, message)
    monkeypatch.setenv("P2G_MAX_IMAGE_PIXELS", "1200")  # exactly the image's pixels: read as before
    image = read_image_file(path)
    assert image.rgb.shape == (HEIGHT, WIDTH, 3)
    expected = np.repeat(pixels[..., :1], 3, axis=-1) if name.startswith("gray") else pixels
    lossy = name.endswith((".jpg", ".webp"))
    assert np.abs(image.rgb - expected).max() < (0.1 if lossy else 0.5 / 255 + 1e-6)
    probe = probe_image(path)
    assert (probe.height, probe.width) == (HEIGHT, WIDTH)
    assert (probe.bits, probe.has_alpha) == (image.bits, image.alpha is not None)
    assert verified_probe(path).size == probe.size == (HEIGHT, WIDTH)


def test_a_header_only_tiff_bomb_is_one_quiet_line(tmp_path, capfd, caplog, recwarn):
    bomb = tiff_bomb(tmp_path / "header_only.tif", 30000, header_only=True)
    assert bomb.stat().st_size < 100_000
    for reader in (read_image, probe_image, verified_probe):
        with pytest.raises(ImageTooLargeError, match=r"header_only.tif: .*30000x30000 = 900,000,000 pixels"):
            reader(bomb)
    assert capfd.readouterr().err == ""
    assert not [r for r in caplog.records if r.levelno >= 30] and not recwarn.list


def test_a_tiff_cut_before_its_pixels_is_one_quiet_line(tmp_path, capfd, caplog, recwarn):
    cut = tiff_bomb(tmp_path / "cut.tif", 2048, header_only=True)  # 4 Mpx, under the limit; no tile in the file
    with pytest.raises(ImageReadError, match="cut.tif: unreadable image") as caught:
        read_image(cut)
    assert "\n" not in str(caught.value)
    assert capfd.readouterr().err == ""  # OpenCV's and libtiff's own messages included
    assert not [r for r in caplog.records if r.levelno >= 30] and not recwarn.list


def test_the_pixel_limit_setting(monkeypatch):
    monkeypatch.delenv("P2G_MAX_IMAGE_PIXELS", raising=False)
    assert max_image_pixels() == DEFAULT_MAX_IMAGE_PIXELS == 178_956_970  # what Pillow refuses by default
    for text, limit in (("none", None), ("0", None), (" 2e3 ", 2000), ("5000", 5000)):
        monkeypatch.setenv("P2G_MAX_IMAGE_PIXELS", text)
        assert max_image_pixels() == limit
    for text in ("lots", "-5", "inf", "nan"):
        monkeypatch.setenv("P2G_MAX_IMAGE_PIXELS", text)
        with pytest.raises(ValueError, match="P2G_MAX_IMAGE_PIXELS must be a pixel count or 'none'"):
            max_image_pixels()


# One child process runs the verbs in turn (torch is imported once) and reports each one's result and the process's
# own high-water mark of resident memory (VmHWM: getrusage's maxrss of a child starts at its parent's resident set).
# Its address space is capped a few GiB above what the imports took, so a regression fails here instead of taking
# the machine's memory.
VERBS_CHILD = """
import json, resource, sys
import cv2, tifffile, torch
from click.testing import CliRunner
from workflows.cli import cli

def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":")) * 1024

resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + 4 * 2**30, resource.RLIM_INFINITY))
results = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args)
    results.append({"args": args, "code": result.exit_code, "output": result.output, "peak": status("VmHWM")})
print(json.dumps(results))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads the resident set from /proc")
def test_every_verb_refuses_a_40000_squared_tiff_in_one_line_within_1_gib(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    bomb = tiff_bomb(folder / "bomb.tif", 40000)
    assert bomb.stat().st_size < 8 * 2**20
    lite = str(ROOT / "sr_model" / "weights" / "lite.safetensors")
    verbs = [
        ["upscale", str(bomb), "--scale", "2", "--out", str(tmp_path / "up"), "--checkpoint", lite, "--device", "cpu"],
        ["eval", "--images", str(folder), "--scales", "2", "--checkpoint", lite, "--device", "cpu"],
        ["train", "--images", str(folder), "--out", str(tmp_path / "run"), "--prior", "official", "--device", "cpu"],
        ["view", str(bomb), "--no-browser", "--checkpoint", lite, "--device", "cpu"],
        ["fit-prior", str(folder), "--store", str(tmp_path / "prior.zarr"), "--preset", "demo", "--device", "cpu"],
    ]
    env = {k: v for k, v in os.environ.items() if k != "P2G_MAX_IMAGE_PIXELS"}
    proc = subprocess.run(
        [sys.executable, "-c", VERBS_CHILD, json.dumps(verbs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""  # nothing from the decoders' C libraries either
    for result in json.loads(proc.stdout.strip().splitlines()[-1]):
        lines = [line for line in result["output"].splitlines() if line.strip()]
        verb = result["args"][0]
        assert result["code"] == 2 and len(lines) == 1, (verb, result["output"])
        for part in ("error: ", "bomb.tif", "40000x40000 = 1,600,000,000 pixels", "limit 178,956,970", "P2G_MAX"):
            assert part in lines[0], (verb, lines[0])
        assert result["peak"] < 2**30, (verb, result["peak"] / 2**30)


def test_the_datasets_scan_still_finds_a_cut_png_without_decoding_it(tmp_path, photo, monkeypatch):
    write_image(tmp_path / "whole.png", photo("astronaut", 0, 0, 64))
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with monkeypatch.context() as trapped:
        trap_decoders(trapped)
        assert probe_image(tmp_path / "cut.png").height == 64  # the header alone is whole
        with pytest.raises(ImageReadError, match="cut.png: unreadable image"):
            verified_probe(tmp_path / "cut.png")  # verified: the chunks' CRCs, no pixel decoded
        assert verified_probe(tmp_path / "whole.png").size == (64, 64)
