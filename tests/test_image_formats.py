"""Image files as photographers have them: EXIF orientation, ICC profiles, transparency, WebP, float TIFF and
16-bit, through `read_image_file`/`write_image` and end to end through `p2g upscale` (files made in each test)."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image, ImageCms

from gaussian_field.image_io import ORIENTATION_TAG, probe_image, read_image, read_image_file, write_image
from sr_model.files.checkpoint import save_checkpoint
from tests.test_tiling import tiny_model
from workflows.cli import cli


def display_p3_profile() -> bytes:
    """A matrix/TRC ICC v2 profile with Display P3's primaries (D50-adapted colorants, gamma 2.2 curves)."""

    def s15(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    def xyz(x, y, z) -> bytes:
        return b"XYZ " + b"\0" * 4 + s15(x) + s15(y) + s15(z)

    def desc(text: str) -> bytes:
        ascii_ = text.encode() + b"\0"
        return b"desc" + b"\0" * 4 + struct.pack(">I", len(ascii_)) + ascii_ + b"\0" * 12 + b"\0" * 67

    curve = b"curv" + b"\0" * 4 + struct.pack(">I", 1) + struct.pack(">H", round(2.2 * 256)) + b"\0\0"
    tags = [
        (b"desc", desc("Display P3 (test)")),
        (b"cprt", b"text" + b"\0" * 4 + b"none\0\0\0\0"),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.5151, 0.2412, -0.0011)),
        (b"gXYZ", xyz(0.2920, 0.6922, 0.0419)),
        (b"bXYZ", xyz(0.1571, 0.0666, 0.7841)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"APPL"
        + b"\0" * 4
        + b"\0" * 8
        + b"\0" * 8
        + b"\0" * 4
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
    )
    header += b"\0" * (128 - len(header))
    return header + table + body


@pytest.fixture(scope="module")
def p3_profile() -> bytes:
    profile = display_p3_profile()
    assert "Display P3" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))
    return profile


@pytest.fixture()
def checkpoint(tmp_path):
    save_checkpoint(tmp_path / "tiny.pt", tiny_model("lite"))
    return tmp_path / "tiny.pt"


def upscale(*args):
    return CliRunner().invoke(cli, ["upscale", *map(str, args)])


def jpeg_with_orientation(path, upright: np.ndarray, orientation: int) -> None:
    """Store `upright` (H, W, 3 uint8) as a phone does for Orientation=6: pixels turned 90 degrees
    anticlockwise, with the tag saying "rotate 90 clockwise to show"."""
    assert orientation == 6
    stored = np.ascontiguousarray(np.rot90(upright, k=1))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    Image.fromarray(stored).save(path, quality=100, exif=exif.tobytes())


def test_orientation_6_jpeg_comes_out_upright(tmp_path, photo, checkpoint):
    upright = np.round(photo("astronaut", 30, 150, 48)[:24, :40] * 255).astype(np.uint8)  # 24 x 40, landscape
    jpeg_with_orientation(tmp_path / "phone.jpg", upright, 6)
    with Image.open(tmp_path / "phone.jpg") as raw:
        assert raw.size == (24, 40)  # stored portrait
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (24, 40, 3)
    error = np.abs(image - upright / 255.0).mean()
    sideways = np.abs(np.rot90(image, k=2) - upright / 255.0).mean()  # the same shape, the wrong way round
    assert error < 0.02 < sideways
    assert probe_image(tmp_path / "phone.jpg", verify=True).size == (24, 40)
    assert (probe_image(tmp_path / "phone.jpg").height, probe_image(tmp_path / "phone.jpg").width) == (24, 40)
    result = upscale(tmp_path / "phone.jpg", "--checkpoint", checkpoint, "--out", tmp_path / "out", "--scale", 2)
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "out" / "phone_x2.png").shape == (48, 80, 3)


def test_orientation_of_a_tiff_read_by_opencv_is_applied(tmp_path, photo):
    upright = np.round(photo("coffee", 40, 200, 32)[:20, :32] * 65535).astype(np.uint16)
    tifffile.imwrite(
        tmp_path / "turned.tif",
        np.ascontiguousarray(np.rot90(upright, k=1)),
        photometric="rgb",
        extratags=[(274, "H", 1, 6, True)],
    )
    image = read_image_file(tmp_path / "turned.tif")
    assert image.bits == 16
    assert np.array_equal(np.round(image.rgb * 65535).astype(np.uint16), upright)


def test_p3_profile_is_carried_to_every_output_format(tmp_path, photo, p3_profile, checkpoint):
    pixels = np.round(photo("chelsea", 60, 100, 24) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "p3.png", icc_profile=p3_profile)
    assert read_image_file(tmp_path / "p3.png").icc_profile == p3_profile
    for fmt in ("png", "jpg", "tif", "webp"):
        result = upscale(
            tmp_path / "p3.png", "--checkpoint", checkpoint, "--out", tmp_path / "out", "--scale", 2, "--format", fmt
        )
        assert result.exit_code == 0, result.output
        out = tmp_path / "out" / f"p3_x2.{fmt}"
        with Image.open(out) as img:
            assert img.info.get("icc_profile") == p3_profile, fmt
        assert read_image_file(out).icc_profile == p3_profile, fmt
    assert cv2.imread(str(tmp_path / "out" / "p3_x2.png"), cv2.IMREAD_UNCHANGED).shape == (48, 48, 3)
    # 16-bit PNG (OpenCV-encoded, the profile added as an iCCP chunk) and float TIFF carry it too
    for bits, fmt in (("16", "png"), ("32", "tif")):
        result = upscale(
            tmp_path / "p3.png",
            "--checkpoint",
            checkpoint,
            "--out",
            tmp_path / f"out{bits}",
            "--scale",
            2,
            "--format",
            fmt,
            "--bits",
            bits,
        )
        assert result.exit_code == 0, result.output
        assert read_image_file(tmp_path / f"out{bits}" / f"p3_x2.{fmt}").icc_profile == p3_profile


def test_a_profile_that_is_not_rgb_is_not_carried(tmp_path, photo, p3_profile):
    """A CMYK or gray profile does not describe the RGB pixels we decode to: writing it would misstate them."""
    cmyk_profile = p3_profile[:16] + b"CMYK" + p3_profile[20:]
    pixels = np.round(photo("chelsea", 60, 100, 16) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "cmyk_tagged.png", icc_profile=cmyk_profile)
    assert read_image_file(tmp_path / "cmyk_tagged.png").icc_profile is None
    assert not probe_image(tmp_path / "cmyk_tagged.png").has_icc


def rgba_photo(photo) -> np.ndarray:
    """A photo crop with a soft round alpha mask: opaque centre, transparent corners."""
    rgb = photo("rocket", 80, 180, 32)
    yy, xx = np.mgrid[0:32, 0:32] + 0.5
    alpha = np.clip((14.0 - np.hypot(yy - 16, xx - 16)) / 4.0, 0.0, 1.0)
    return np.round(np.concatenate([rgb, alpha[..., None]], axis=-1) * 255).astype(np.uint8)


def test_rgba_png_keeps_a_plausible_alpha(tmp_path, photo, checkpoint):
    rgba = rgba_photo(photo)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    image = read_image_file(tmp_path / "cutout.png")
    assert np.array_equal(np.round(image.alpha * 255).astype(np.uint8), rgba[..., 3])
    colours = {}
    for fmt in ("png", "webp", "tif"):
        result = upscale(
            tmp_path / "cutout.png",
            "--checkpoint",
            checkpoint,
            "--out",
            tmp_path / "out",
            "--scale",
            2,
            "--format",
            fmt,
            "--quality",
            100,
        )
        assert result.exit_code == 0, result.output
        with Image.open(tmp_path / "out" / f"cutout_x2.{fmt}") as img:
            assert img.mode == "RGBA" and img.size == (64, 64), fmt
            alpha = np.asarray(img)[..., 3].astype(np.float64) / 255
            colours[fmt] = np.asarray(img)[..., :3]
        source = rgba[..., 3] / 255.0
        assert alpha[28:36, 28:36].min() == 1.0 and alpha[:4, :4].max() == 0.0, fmt  # centre opaque, corners clear
        pooled = alpha.reshape(32, 2, 32, 2).mean(axis=(1, 3))  # back to the input's grid
        assert np.abs(pooled - source).max() < 0.1, fmt
    assert np.array_equal(colours["png"], colours["tif"])  # BGRA (OpenCV) and RGBA (tifffile) in the right order
    visible = alpha > 0  # lossless WebP drops the colour of fully transparent pixels
    assert np.abs(colours["webp"].astype(int) - colours["png"])[visible].max() <= 1
    result = upscale(
        tmp_path / "cutout.png", "--checkpoint", checkpoint, "--out", tmp_path / "jpg", "--scale", 2, "--format", "jpg"
    )
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if "notice:" in line]
    assert len(notices) == 1 and "transparency" in notices[0] and "JPEG" in notices[0], result.output
    with Image.open(tmp_path / "jpg" / "cutout_x2.jpg") as img:
        assert img.mode == "RGB"


def test_webp_round_trip_lossless_lossy_and_with_alpha(tmp_path, photo):
    image = photo("coffee", 100, 250, 40)
    write_image(tmp_path / "lossless.webp", image, quality=100)
    assert np.abs(read_image(tmp_path / "lossless.webp") - image).max() <= 0.5 / 255 + 1e-6
    write_image(tmp_path / "q90.webp", image, quality=90)
    write_image(tmp_path / "q20.webp", image, quality=20)
    errors = [np.sqrt(np.mean((read_image(tmp_path / n) - image) ** 2)) for n in ("q90.webp", "q20.webp")]
    assert 0 < errors[0] < errors[1] < 0.1
    assert (tmp_path / "q20.webp").stat().st_size < (tmp_path / "q90.webp").stat().st_size
    alpha = np.linspace(0, 1, 40)[None, :].repeat(40, axis=0)
    write_image(tmp_path / "alpha.webp", image, alpha=alpha, quality=100)
    back = read_image_file(tmp_path / "alpha.webp")
    assert np.abs(back.alpha - alpha).max() <= 0.5 / 255 + 1e-6


def test_float_tiff_round_trip(tmp_path, photo):
    image = photo("chelsea", 50, 120, 30).astype(np.float32) * np.float32(0.7) + np.float32(1e-4)
    write_image(tmp_path / "float.tif", image, bits=32)
    raw = tifffile.imread(tmp_path / "float.tif")
    assert raw.dtype == np.float32 and raw.shape == (30, 30, 3)
    assert np.array_equal(raw, image)
    back = read_image_file(tmp_path / "float.tif")
    assert back.bits == 32 and np.array_equal(back.rgb, image)
    with pytest.raises(ValueError, match="PNG cannot hold 32-bit"):
        write_image(tmp_path / "float.png", image, bits=32)


def test_16_bit_png_stays_16_bit_through_upscale(tmp_path, photo, checkpoint):
    averaged = photo("astronaut", 10, 100, 48).reshape(24, 2, 24, 2, 3).mean(axis=(1, 3))  # between 8-bit levels
    levels = np.round(averaged * 65535).astype(np.uint16)
    assert np.any(levels % 257)  # not 8-bit values stretched
    cv2.imwrite(str(tmp_path / "deep.png"), np.ascontiguousarray(levels[..., ::-1]))
    image = read_image_file(tmp_path / "deep.png")
    assert image.bits == 16 and np.array_equal(np.round(image.rgb * 65535).astype(np.uint16), levels)
    result = upscale(tmp_path / "deep.png", "--checkpoint", checkpoint, "--out", tmp_path / "out", "--scale", 2)
    assert result.exit_code == 0, result.output
    out = cv2.imread(str(tmp_path / "out" / "deep_x2.png"), cv2.IMREAD_UNCHANGED)
    assert out.dtype == np.uint16 and out.shape == (48, 48, 3)
    assert np.any(out % 257)  # real 16-bit levels, not 8-bit ones scaled up
    result = upscale(
        tmp_path / "deep.png", "--checkpoint", checkpoint, "--out", tmp_path / "jpg", "--scale", 2, "--format", "jpg"
    )
    assert result.exit_code == 0, result.output  # auto: JPEG holds 8 bits only
    result = upscale(
        tmp_path / "deep.png",
        "--checkpoint",
        checkpoint,
        "--out",
        tmp_path / "bad",
        "--scale",
        2,
        "--format",
        "webp",
        "--bits",
        "16",
    )
    assert result.exit_code == 2 and result.output.startswith("error: WebP cannot hold 16-bit"), result.output


def test_header_sizes_of_the_crop_plan_and_datasets_are_upright(tmp_path, photo):
    """Crops and training patches are planned from header sizes: they must be the upright sizes read_image gives."""
    from dgp_fitting.crop_plan import plan_crops

    upright = np.round(photo("coffee", 0, 0, 48)[:20, :36] * 255).astype(np.uint8)
    jpeg_with_orientation(tmp_path / "phone.jpg", upright, 6)
    assert read_image(tmp_path / "phone.jpg").shape[:2] == (20, 36)
    assert probe_image(tmp_path / "phone.jpg").size == (20, 36) == probe_image(tmp_path / "phone.jpg", verify=True).size
    plan = plan_crops([tmp_path], 20, stride=16)  # crops of the upright 20 x 36 image: 1 row of 2
    assert [tuple(box) for box in plan.boxes] == [(0, 0, 20, 20), (0, 16, 20, 20)]
