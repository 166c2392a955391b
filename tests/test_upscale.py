"""`p2g upscale`: one encode per image, outputs per scale, banded writing, and bad input that loses nothing."""

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gaussian_field import band_writer, load_field, render
from gaussian_field.band_writer import OutputTooLargeError, render_to_file
from gaussian_field.image_io import quantize, read_image, write_image
from sr_model.files.checkpoint import save_checkpoint
from sr_model.inference.encode import encode, estimate_encode_bytes
from sr_model.inference.upscale_files import RenderRequest, upscale_files
from sr_model.networks import encoders
from tests.cli_checks import assert_one_line_error
from tests.test_field import random_field
from tests.test_tiling import tiny_model
from workflows.cli import cli


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def upscale(workspace: Path, *args, env=None):
    """`p2g upscale ARGS` with the workspace's checkpoint."""
    return run("upscale", *args, "--checkpoint", workspace / "tiny.pt", env=env)


@pytest.fixture(scope="module")
def model():
    return tiny_model("lite")


@pytest.fixture()
def workspace(tmp_path, photo, model):
    """A checkpoint and two small photos (PNG and JPEG)."""
    save_checkpoint(tmp_path / "tiny.pt", model)
    write_image(tmp_path / "astronaut.png", photo("astronaut", top=40, left=160, size=40)[:, :36])
    write_image(tmp_path / "coffee.jpg", photo("coffee", top=100, left=250, size=30))
    return tmp_path


@pytest.fixture()
def encoder_calls(monkeypatch):
    """Counts trunk calls of the lite encoder (every model built here uses it; every encode starts there)."""
    calls = []
    original = encoders.LiteEncoder.trunk

    def counting(self, x):
        calls.append(tuple(x.shape[-2:]))
        return original(self, x)

    monkeypatch.setattr(encoders.LiteEncoder, "trunk", counting)
    return calls


def all_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------ one encode, many renders
def test_one_encode_per_image_for_every_scale_and_size(workspace, encoder_calls):
    result = upscale(
        workspace,
        workspace / "astronaut.png",
        workspace / "coffee.jpg",
        "--out",
        workspace / "out",
        "--scale",
        2,
        "--scale",
        3.7,
        "--scale",
        "2x3",
        "--scale",
        0.5,
        "--size",
        "50x20",
    )
    assert result.exit_code == 0, result.output
    # the memory estimate's probe (a warm-up, then measured twice; once per loaded model), then one call per image
    # whatever the outputs
    assert encoder_calls == [(16, 16), (128, 128), (128, 128), (40, 36), (30, 30)]
    sizes = {p.name: Image.open(p).size for p in (workspace / "out").iterdir()}
    assert sizes == {
        "astronaut_x2.png": (72, 80),
        "astronaut_x3.7.png": (133, 148),
        "astronaut_x2x3.png": (108, 80),
        "astronaut_x0.5.png": (18, 20),
        "astronaut_50x20.png": (50, 20),
        "coffee_x2.png": (60, 60),
        "coffee_x3.7.png": (111, 111),
        "coffee_x2x3.png": (90, 60),
        "coffee_x0.5.png": (15, 15),
        "coffee_50x20.png": (50, 20),
    }
    lines = result.output.splitlines()
    assert sum("  encode " in line and " ms (1 tile)" in line for line in lines) == 2
    assert sum("  render " in line and " ms, write " in line for line in lines) == 10


def test_outputs_equal_the_in_memory_render(workspace, model):
    result = upscale(
        workspace,
        workspace / "astronaut.png",
        "--out",
        workspace / "out",
        "--scale",
        3.7,
        "--scale",
        "2x3",
        "--save-field",
    )
    assert result.exit_code == 0, result.output
    lr = torch.from_numpy(read_image(workspace / "astronaut.png")).permute(2, 0, 1)[None]
    with torch.no_grad():
        field = model.encode(lr)
    for tag, scale in (("x3.7", 3.7), ("x2x3", (2.0, 3.0))):
        written = np.asarray(Image.open(workspace / "out" / f"astronaut_{tag}.png"))
        assert np.array_equal(written, quantize(render(field, scale=scale)[0], 8))
    # the saved field renders (p2g render) to the same image
    saved = load_field(workspace / "out" / "astronaut_field.npz")
    assert torch.equal(saved.means, field.means) and torch.equal(saved.colors, field.colors)
    again = run("render", workspace / "out" / "astronaut_field.npz", "--scale", 3.7, "--out", workspace / "r")
    assert again.exit_code == 0, again.output
    assert np.array_equal(
        np.asarray(Image.open(workspace / "r" / "astronaut_field_x3.7.png")),
        np.asarray(Image.open(workspace / "out" / "astronaut_x3.7.png")),
    )


def test_tiled_upscale_counts_one_encoder_call_per_tile_and_matches(workspace, model, encoder_calls):
    result = upscale(workspace, workspace / "astronaut.png", "--out", workspace / "tiled", "--scale", 2, "--tile", 16)
    assert result.exit_code == 0, result.output
    assert len(encoder_calls) == 3 + 9 and "(9 tiles)" in result.output  # probe (three runs) + tiles
    encoder_calls.clear()
    assert upscale(workspace, workspace / "astronaut.png", "--out", workspace / "whole", "--scale", 2).exit_code == 0
    assert len(encoder_calls) == 3 + 1
    tiled = np.asarray(Image.open(workspace / "tiled" / "astronaut_x2.png")).astype(int)
    whole = np.asarray(Image.open(workspace / "whole" / "astronaut_x2.png")).astype(int)
    assert np.abs(tiled - whole).max() <= 1  # float32 rounding may flip a level


def test_16_bit_png_and_tiff_and_jpeg(workspace):
    result = upscale(workspace, workspace / "coffee.jpg", "--out", workspace / "o16", "--scale", 2, "--bits", 16)
    assert result.exit_code == 0, result.output
    png16 = read_image(workspace / "o16" / "coffee_x2.png")
    result = upscale(
        workspace, workspace / "coffee.jpg", "--out", workspace / "o16", "--scale", 2, "--bits", 16, "--format", "tif"
    )
    assert result.exit_code == 0, result.output
    assert np.array_equal(read_image(workspace / "o16" / "coffee_x2.tif"), png16)
    with Image.open(workspace / "o16" / "coffee_x2.png") as img:
        assert img.size == (60, 60)
    result = upscale(workspace, workspace / "coffee.jpg", "--out", workspace / "o8", "--scale", 2, "--format", "jpg")
    assert result.exit_code == 0, result.output
    jpeg = read_image(workspace / "o8" / "coffee_x2.jpg")
    assert jpeg.shape == (60, 60, 3) and np.abs(jpeg - png16).mean() < 0.02


# ------------------------------------------------------------------------------------- banded writing
@pytest.mark.parametrize("suffix,bits", [(".png", 8), (".png", 16), (".tif", 8), (".tif", 16)])
def test_banded_memory_mapped_render_equals_the_whole_render(tmp_path, suffix, bits):
    field = random_field(h=9, w=7, dtype=torch.float32)
    path = tmp_path / f"big{suffix}"
    written = render_to_file(
        field, path, scale=(4.5, 3), bits=bits, band_bytes=3 * 21 * 4 * 5, in_memory_bytes=0
    )  # bands of 5 rows, pixels in a scratch file
    assert written.size == (40, 21)
    assert all_files(tmp_path) == [path.name]  # no scratch or partial file left
    want = quantize(render(field, scale=(4.5, 3))[0], bits) / (255.0 if bits == 8 else 65535.0)
    assert np.array_equal(read_image(path), want.astype(np.float32))


def _mapped_kib(path: Path) -> int:
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":  # a mapping's header line: address range ... path
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads the mappings from /proc")
def test_a_memory_mapped_output_drops_its_written_pages_and_keeps_every_pixel(tmp_path):
    """Band by band, the rows written to a scratch file leave the resident set; the file still has them."""
    bands = torch.rand(20, 3, 100, 1000, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "big.png"
    with band_writer.BandedImage(path, (2000, 1000), 8, in_memory_bytes=0) as image:
        assert image.scratch
        for n, band in enumerate(bands):
            image.put(100 * n, band)
        resident = _mapped_kib(image.scratch_path.resolve())
        image.finish()
    assert resident < 0.05 * 2000 * 1000 * 3 / 1024  # of 5.7 MiB of pixels, at most a page per band stays
    want = quantize(torch.cat(list(bands), dim=1), 8) / 255.0
    assert np.array_equal(read_image(path), want.astype(np.float32))


def test_an_error_while_rendering_leaves_no_file(tmp_path, monkeypatch):
    field = random_field(h=6, w=6, dtype=torch.float32)
    calls = []

    def failing(*args, **kwargs):
        calls.append(kwargs["rows"])
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return render(*args, **kwargs)

    monkeypatch.setattr(band_writer, "render", failing)
    with pytest.raises(RuntimeError):
        render_to_file(field, tmp_path / "x.png", scale=4, band_bytes=3 * 24 * 4 * 4, in_memory_bytes=0)
    assert len(calls) == 3 and all_files(tmp_path) == []


def test_outputs_beyond_the_format_or_the_disk_are_refused_before_rendering(tmp_path):
    field = random_field(h=4, w=5, dtype=torch.float32)
    with pytest.raises(OutputTooLargeError, match="JPEG limit of 65500"):
        render_to_file(field, tmp_path / "x.jpg", scale=20000)
    with pytest.raises(OutputTooLargeError, match="free"):
        render_to_file(field, tmp_path / "x.tif", scale=1e6)
    with pytest.raises(ValueError, match="16-bit"):
        render_to_file(field, tmp_path / "x.jpg", scale=2, bits=16)
    assert all_files(tmp_path) == []


# ---------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workspace):
    (workspace / "broken.png").write_bytes((workspace / "astronaut.png").read_bytes()[:200])
    (workspace / "notes.png").write_text("not an image")
    cases = [
        ((workspace / "missing.png", "--scale", 2), ("not found", "missing.png")),
        ((workspace / "broken.png", "--scale", 2), ("broken.png",)),
        ((workspace / "astronaut.png", workspace / "notes.png", "--scale", 2), ("notes.png",)),
        ((workspace / "astronaut.png", "--scale", 0), ("scale",)),
        ((workspace / "astronaut.png", "--scale", "-2"), ("scale",)),
        ((workspace / "astronaut.png", "--scale", 1e6), ("1000000 px",)),
        ((workspace / "astronaut.png", "--scale", 1e5, "--format", "tif"), ("disk",)),
        ((workspace / "astronaut.png", "--scale", 2, "--bits", 16, "--format", "jpg"), ("16-bit",)),
        ((workspace / "astronaut.png",), ("--scale",)),
        ((workspace / "astronaut.png", "--scale", 2, "--tile", -3), ("tile",)),
        ((workspace / "astronaut.png", "--scale", 2, "--backend", "nope"), ("nope",)),
        ((workspace / "astronaut.png", "--scale", 2, "--size", "0x5"), ("size",)),
    ]
    for args, words in cases:
        result = upscale(workspace, *args, "--out", workspace / "out")
        assert_one_line_error(result, *words)
        assert all_files(workspace / "out") == [], args
    result = run(
        "upscale",
        workspace / "astronaut.png",
        "--scale",
        2,
        "--checkpoint",
        workspace / "coffee.jpg",
        "--out",
        workspace / "out",
    )
    assert_one_line_error(result, "checkpoint")
    assert all_files(workspace / "out") == []


def test_over_the_memory_budget_tiles_by_itself_and_says_so(workspace, model):
    budget = str(estimate_encode_bytes(model, 40, 36, (28, 28)))  # room for a 16 px tile and its 6 px context
    assert estimate_encode_bytes(model, 40, 36) > int(budget)
    args = ("--scale", 2, "--out", workspace / "out")
    result = upscale(workspace, workspace / "astronaut.png", *args, "--tile", 0, env={"P2G_MEMORY_BUDGET": budget})
    assert_one_line_error(result, "at once", "memory budget", "--tile 16")
    assert all_files(workspace / "out") == []
    result = upscale(workspace, workspace / "astronaut.png", *args, env={"P2G_MEMORY_BUDGET": budget})
    assert result.exit_code == 0, result.output
    notices = [line for line in result.output.splitlines() if "notice: encoding" in line]
    assert len(notices) == 1 and "in 9 tiles of 16 px (exact with 6 px of context)" in notices[0], result.output
    assert all_files(workspace / "out") == ["astronaut_x2.png"]
    result = upscale(workspace, workspace / "astronaut.png", *args[:2], "--out", workspace / "whole")
    assert (
        read_image(workspace / "out" / "astronaut_x2.png").tolist()
        == read_image(workspace / "whole" / "astronaut_x2.png").tolist()
    )


def test_inputs_with_the_same_name_are_refused(workspace):
    (workspace / "b").mkdir()
    write_image(workspace / "b" / "astronaut.png", np.zeros((8, 8, 3)))
    result = upscale(workspace, workspace / "astronaut.png", workspace / "b", "--scale", 2, "--out", workspace / "out")
    assert_one_line_error(
        result,
        f"inputs {workspace / 'astronaut.png'} and {workspace / 'b' / 'astronaut.png'} would write the same "
        "output names (astronaut_*); rename one or run them separately",
    )
    assert all_files(workspace / "out") == []


def test_library_job_returns_timings_and_reads_folders(workspace, model):
    (workspace / "in").mkdir()
    write_image(workspace / "in" / "a.png", read_image(workspace / "astronaut.png"))
    results = upscale_files(model, [workspace / "in"], workspace / "lib", [RenderRequest("x2", scale=2.0)])
    assert len(results) == 1 and results[0].lr_size == (40, 36) and results[0].tiles == 1
    assert results[0].encode_seconds > 0 and results[0].outputs[0].render_seconds > 0
    assert all_files(workspace / "lib") == ["a_x2.png"]


def test_encode_memory_check_happens_before_the_encoder_runs(encoder_calls):
    from sr_model.inference.encode import EncodeMemoryError

    with pytest.raises(EncodeMemoryError):
        encode(tiny_model("lite"), torch.rand(1, 3, 64, 64), budget=10**6)
    assert encoder_calls == [(16, 16), (128, 128), (128, 128)]  # only the probe of the estimate


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_upscale_matches_cpu(workspace, model):
    from sr_model.inference.encode import memory_budget

    assert memory_budget("cuda") > 0
    for device in ("cpu", "cuda"):
        result = upscale(
            workspace,
            workspace / "astronaut.png",
            "--out",
            workspace / device,
            "--scale",
            3.7,
            "--tile",
            16,
            "--device",
            device,
        )
        assert result.exit_code == 0, result.output
    cpu = np.asarray(Image.open(workspace / "cpu" / "astronaut_x3.7.png")).astype(int)
    gpu = np.asarray(Image.open(workspace / "cuda" / "astronaut_x3.7.png")).astype(int)
    assert np.abs(cpu - gpu).max() <= 1


def test_skip_existing_resumes_a_batch_without_touching_finished_outputs(workspace, encoder_calls):
    out = workspace / "out"
    args = (
        workspace / "astronaut.png",
        workspace / "coffee.jpg",
        "--out",
        out,
        "--scale",
        2,
        "--scale",
        3,
    )

    def encodes():  # encoder calls on the photos themselves (the memory estimate also runs a small probe)
        return encoder_calls.count((40, 36)), encoder_calls.count((30, 30))

    assert upscale(workspace, *args).exit_code == 0
    assert encodes() == (1, 1)
    # as after an interrupt: coffee's x3 never written; astronaut's outputs are complete and must stay as they are
    (out / "coffee_x3.png").unlink()
    kept = (out / "astronaut_x2.png").stat().st_mtime_ns, (out / "astronaut_x3.png").read_bytes()
    result = upscale(workspace, *args, "--skip-existing")
    assert result.exit_code == 0, result.output
    assert encodes() == (1, 2)  # only coffee is encoded again
    assert "1 image(s) encoded" in result.output
    assert ((out / "astronaut_x2.png").stat().st_mtime_ns, (out / "astronaut_x3.png").read_bytes()) == kept
    assert all_files(out) == ["astronaut_x2.png", "astronaut_x3.png", "coffee_x2.png", "coffee_x3.png"]
    assert read_image(out / "coffee_x3.png").shape[:2] == (90, 90)
    # without the flag everything is redone
    assert upscale(workspace, *args).exit_code == 0 and encodes() == (2, 3)


# ------------------------------------------------------------------------------------- refusals of issue 21
def test_out_inside_an_input_folder_never_upscales_earlier_outputs(workspace):
    """`--out` inside an input folder: a rerun (also with --skip-existing) reads only the inputs, not x_x2.png."""
    photos = workspace / "photos"
    photos.mkdir()
    write_image(photos / "a.png", read_image(workspace / "astronaut.png"))
    for extra in ([], ["--skip-existing"], []):
        result = upscale(workspace, photos, "--out", photos / "up", "--scale", 2, *extra)
        assert result.exit_code == 0, result.output
    assert all_files(photos / "up") == ["a_x2.png"]


def test_out_as_the_input_folder_is_refused_in_one_line(workspace):
    photos = workspace / "photos"
    photos.mkdir()
    write_image(photos / "a.png", read_image(workspace / "astronaut.png"))
    result = upscale(workspace, photos, "--out", photos, "--scale", 2)
    assert_one_line_error(result, f"--out {photos} is the input folder", "another folder")
    assert all_files(photos) == ["a.png"]


def test_an_input_folder_inside_out_is_read_whole(workspace):
    """Outputs land beside the input folder, not in it: nothing to leave out."""
    photos = workspace / "photos"
    photos.mkdir()
    write_image(photos / "a.png", read_image(workspace / "astronaut.png"))
    result = upscale(workspace, photos, "--out", workspace, "--scale", 2)
    assert result.exit_code == 0, result.output
    assert (workspace / "a_x2.png").is_file()


@pytest.mark.parametrize("scale", ["1e308", "1e300x2"])
def test_an_overflowing_scale_is_one_line(workspace, scale):
    result = upscale(workspace, workspace / "astronaut.png", "--out", workspace / "out", "--scale", scale)
    assert_one_line_error(result, "over the 4294967295 px a side any output format holds")
    assert all_files(workspace / "out") == []


def test_a_jpeg_the_memory_budget_cannot_hold_is_refused_before_any_work(workspace, monkeypatch):
    """Pillow encodes JPEG and WebP whole (its copy and the pixels together); PNG and TIFF are read in rows."""
    monkeypatch.setenv("P2G_MEMORY_BUDGET", "1M")
    with pytest.raises(OutputTooLargeError, match=r"the JPEG encoder holds the whole image, about 5\.7 MiB"):
        band_writer.check_output(workspace / "big.jpg", 1000, 1000, 8)
    with pytest.raises(OutputTooLargeError, match="WebP encoder"):
        band_writer.check_output(workspace / "big.webp", 1000, 1000, 8)
    band_writer.check_output(workspace / "big.png", 1000, 1000, 8)
    band_writer.check_output(workspace / "big.tif", 1000, 1000, 8)
    monkeypatch.setenv("P2G_MEMORY_BUDGET", "256M")  # the encode fits; the 7200x8000 JPEG (330 MiB twice) does not
    args = ("--out", workspace / "out", "--scale", 200, "--format", "jpg")
    result = upscale(workspace, workspace / "astronaut.png", *args, env={"P2G_MEMORY_BUDGET": "256M"})
    assert_one_line_error(result, "7200x8000 px: the JPEG encoder holds the whole image", "budget of 256.0 MiB")
    assert all_files(workspace / "out") == []


def test_disk_space_messages_never_say_zero_gib(workspace, monkeypatch):
    monkeypatch.setattr(band_writer.shutil, "disk_usage", lambda path: type("U", (), {"free": 3 * 2**20})())
    with pytest.raises(OutputTooLargeError, match=r"needs about 5\.7 MiB on disk, but only 3\.0 MiB is free"):
        band_writer.check_output(workspace / "big.png", 1000, 1000, 16)
