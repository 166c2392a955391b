"""`p2g eval` and sr_model.evaluation.evaluate: geometry, the bicubic baseline against BasicSR's golden pair, a stand-in
model (one encode per LR, one render at the HR size), the report files, and clear errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gaussian_field import render
from gaussian_field.image_io import read_image, write_image
from gaussian_field.initial import field_from_image
from sr_model.data.datasets import SkippedImageWarning
from sr_model.data.imresize import imresize
from sr_model.evaluation.evaluate import (
    bicubic_upscale,
    evaluate,
    lr_geometry,
    make_lr,
    parse_scales,
    summary_markdown,
    to_uint8,
    write_report,
)
from sr_model.evaluation.metrics import psnr, ssim
from workflows.cli import cli


class StandInModel:
    """Not a trained model: encodes the LR with the untrained `field_from_image`, counting calls."""

    def __init__(self) -> None:
        self.encoded: list[tuple[int, ...]] = []

    def encode(self, lr: torch.Tensor):
        assert lr.dim() == 4 and lr.shape[:2] == (1, 3) and lr.dtype == torch.float32
        self.encoded.append(tuple(lr.shape))
        return field_from_image(lr)


@pytest.fixture
def hr_dir(tmp_path, photo) -> Path:
    folder = tmp_path / "hr"
    (folder / "sub").mkdir(parents=True)
    write_image(folder / "coffee.png", photo("coffee", 90, 180, size=70))
    write_image(folder / "sub" / "chelsea.png", photo("chelsea", 40, 120, size=64)[:, :61])
    return folder


def test_mod_crop_geometry():
    assert lr_geometry((70, 61), 4) == ((17, 15), (68, 60))
    assert lr_geometry((70, 61), 3) == ((23, 20), (69, 60))
    assert lr_geometry((96, 96), 3) == ((32, 32), (96, 96))
    assert lr_geometry((100, 50), 3.7) == ((27, 13), (100, 48))  # round(27 * 3.7) = 100, round(13 * 3.7) = 48
    with pytest.raises(ValueError, match="too small for x12"):
        lr_geometry((11, 40), 12)


def test_lr_is_matlab_bicubic_in_8_bits(photo):
    hr = photo("rocket", 100, 200, size=50)
    cropped, lr = make_lr(hr, 4)
    assert cropped.shape == (48, 48, 3) and lr.shape == (12, 12, 3)
    np.testing.assert_array_equal(cropped, hr[:48, :48])
    exact = imresize(torch.from_numpy(cropped).permute(2, 0, 1), 1 / 4).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(lr, np.round(np.clip(exact, 0, 1) * 255) / 255, atol=1e-12)


def test_bicubic_baseline_reproduces_basicsr_pair(golden_dir):
    """The golden SR is BasicSR imresize x1/4 then x4 of the golden HR: ours gives the same pixels and scores."""
    with np.load(golden_dir / "metrics_images.npz") as data:
        hr8, sr8_golden = data["hr_rgb_uint8"], data["sr_rgb_uint8"]
    results = json.loads((golden_dir / "metrics.json").read_text())["results"]
    hr = hr8.astype(np.float64) / 255
    lr = imresize(torch.from_numpy(hr).permute(2, 0, 1), 1 / 4).permute(1, 2, 0).numpy()  # unquantised, as there
    sr8 = to_uint8(bicubic_upscale(lr, 4, (128, 128)))
    assert np.abs(sr8.astype(int) - sr8_golden).max() <= 1
    assert (sr8 != sr8_golden).mean() < 1e-3
    assert psnr(hr8, sr8, 4, True) == pytest.approx(results["psnr_crop4_y1"], abs=1e-3)
    assert ssim(hr8, sr8, 4, True) == pytest.approx(results["ssim_crop4_y1"], abs=1e-5)


def test_bicubic_only_rows(hr_dir):
    rows = evaluate([hr_dir], [2, 4])
    assert [(Path(r.image).name, r.scale, r.method) for r in rows] == [
        ("coffee.png", 2, "bicubic"),
        ("coffee.png", 4, "bicubic"),
        ("chelsea.png", 2, "bicubic"),
        ("chelsea.png", 4, "bicubic"),
    ]
    coffee_x4 = rows[1]
    assert (coffee_x4.hr_height, coffee_x4.hr_width, coffee_x4.lr_height, coffee_x4.lr_width) == (68, 68, 17, 17)
    assert rows[0].psnr > rows[1].psnr + 1 and rows[2].psnr > rows[3].psnr + 1  # x2 is easier than x4
    assert 20 < rows[1].psnr < 45 and 0.3 < rows[1].ssim < 1
    assert rows[0].encode_ms is None and rows[0].render_ms > 0


def test_protocols_score_differently(hr_dir, photo):
    hr = photo("coffee", 90, 180, size=70).astype(np.float64)
    cropped, lr = make_lr(hr, 4)
    hr8, sr8 = to_uint8(cropped), to_uint8(bicubic_upscale(lr, 4, cropped.shape[:2]))
    bench = evaluate([hr_dir / "coffee.png"], [4], "benchmark")[0]
    div2k = evaluate([hr_dir / "coffee.png"], [4], "div2k")[0]
    assert bench.psnr == pytest.approx(psnr(hr8, sr8, 4, True), abs=1e-9)
    assert div2k.psnr == pytest.approx(psnr(hr8, sr8, 10, False), abs=1e-9)
    assert div2k.ssim == pytest.approx(ssim(hr8, sr8, 10, False), abs=1e-12)
    assert abs(bench.psnr - div2k.psnr) > 0.1


def test_stand_in_model_one_encode_per_lr_and_render_at_hr_size(hr_dir):
    model = StandInModel()
    rows = evaluate([hr_dir], [2, 3], model=model)
    assert model.encoded == [(1, 3, 35, 35), (1, 3, 23, 23), (1, 3, 32, 30), (1, 3, 21, 20)]
    model_rows = [r for r in rows if r.method == "model"]
    assert len(model_rows) == 4 and len(rows) == 8
    first = model_rows[0]  # coffee at x2, scored independently here
    cropped, lr = make_lr(read_image(hr_dir / "coffee.png"), 2)
    field = field_from_image(torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1))
    sr = render(field, size=cropped.shape[:2])[0].permute(1, 2, 0).double().numpy()
    assert first.psnr == pytest.approx(psnr(to_uint8(cropped), to_uint8(sr), 2, True), abs=1e-9)
    assert first.encode_ms > 0 and first.render_ms > 0
    text = summary_markdown(rows, "benchmark")
    assert (
        "| scale | bicubic PSNR | bicubic SSIM | model PSNR | model SSIM | PSNR gain | encode ms | render ms |" in text
    )
    assert text.count("\n| x") == 2


def test_report_files(hr_dir, tmp_path):
    rows = evaluate([hr_dir], [2, 4], model=StandInModel())
    csv_path, md_path = write_report(rows, tmp_path / "report", "benchmark", "stand-in")
    with open(csv_path) as fh:
        records = list(csv.DictReader(fh))
    assert len(records) == 8
    assert records[0]["method"] == "bicubic" and records[0]["encode_ms"] == ""
    assert float(records[1]["psnr"]) == pytest.approx(rows[1].psnr, abs=1e-6)
    assert md_path.read_text().startswith("stand-in: protocol benchmark (Y channel, shave = scale), 2 image(s)")
    assert not list((tmp_path / "report").glob(".*partial"))


def test_broken_image_is_skipped_with_a_warning(hr_dir):
    (hr_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.warns(SkippedImageWarning, match="broken.jpg"):
        rows = evaluate([hr_dir], [2])
    assert len(rows) == 2


def test_two_images_of_one_name_are_refused_where_names_must_differ(hr_dir, tmp_path, photo):
    write_image(hr_dir / "sub" / "coffee.png", photo("coffee", 20, 40, size=64))
    with pytest.raises(ValueError, match=r"coffee.png and .*sub/coffee.png would save the same NAME_xS.png"):
        evaluate([hr_dir], [2], save_dir=tmp_path / "saved")
    lr_dir = tmp_path / "lr"
    lr_dir.mkdir()
    write_image(lr_dir / "coffee_x2.png", photo("coffee", 90, 180, size=35))
    with pytest.raises(ValueError, match=r"HR images .*coffee.png and .*sub/coffee.png have the same name; LR files"):
        evaluate([hr_dir], None, lr_sources=[lr_dir])


def test_cli_bicubic(hr_dir, tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--checkpoint",
            "bicubic",
            "--images",
            str(hr_dir / "coffee.png"),
            str(hr_dir / "sub"),
            "--scales",
            "2,3,4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| scale | bicubic PSNR | bicubic SSIM | bicubic ms |" in result.output
    assert result.output.count("\n| x") == 3
    with open(out / "per_image.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 6  # 2 images x 3 scales
    assert (out / "summary.md").read_text() in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--checkpoint", "missing.pt"], "checkpoint not found: missing.pt"),
        (["--checkpoint", "bicubic", "--scales", "2,x"], "'x' in --scales '2,x' is not a number"),
        (["--checkpoint", "bicubic", "--scales", "0.5"], "must be a finite number >= 1"),
        (["--checkpoint", "bicubic", "--scales", "80"], "coffee.png: an image of 70x70 px is too small for x80"),
        (["--checkpoint", "bicubic", "--scales", "40"], "at x40: a border of 40 px leaves nothing of a 40x40 image"),
    ],
)
def test_cli_errors_are_one_line(hr_dir, tmp_path, args, message):
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["eval", "--images", str(hr_dir), "--out", str(out), *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in result.output
    assert not out.exists()  # nothing half-written


def test_cli_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", "bicubic", "--images", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no images" in result.output


def test_parse_scales():
    assert parse_scales("2,3,4,6,8,12") == [2, 3, 4, 6, 8, 12]
    assert parse_scales(" 3.7 ") == [3.7]


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """A real (untrained) checkpoint: a small `lite` model with the official dictionary."""
    from sr_model.files.checkpoint import save_checkpoint
    from sr_model.networks.model import build_model
    from sr_model.networks.presets import preset

    torch.manual_seed(0)
    model = build_model(preset("lite", lite_channels=8, lite_blocks=1), "official")
    return save_checkpoint(tmp_path / "tiny.pt", model)


def test_cli_with_a_real_checkpoint(hr_dir, tmp_path, tiny_checkpoint):
    from sr_model.files.model_files import load_network

    out = tmp_path / "eval"
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--checkpoint",
            str(tiny_checkpoint),
            "--images",
            str(hr_dir),
            "--scales",
            "2,4",
            "--protocol",
            "div2k",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "model PSNR" in result.output and result.output.count("\n| x") == 2
    with open(out / "per_image.csv") as fh:
        records = list(csv.DictReader(fh))
    model_rows = [r for r in records if r["method"] == "model"]
    assert len(model_rows) == 4 and all(float(r["encode_ms"]) > 0 for r in model_rows)
    # the coffee x4 row, recomputed here from the checkpoint (div2k: RGB, shave 10)
    cropped, lr = make_lr(read_image(hr_dir / "coffee.png"), 4)
    model = load_network(tiny_checkpoint)
    with torch.no_grad():
        field = model.encode(torch.from_numpy(lr.astype(np.float32)).permute(2, 0, 1)[None])
        sr = render(field, size=cropped.shape[:2])[0].permute(1, 2, 0).double().numpy()
    row = next(r for r in model_rows if r["image"].endswith("coffee.png") and r["scale"] == "4")
    assert float(row["psnr"]) == pytest.approx(psnr(to_uint8(cropped), to_uint8(sr), 10, False), abs=1e-5)


def test_cli_damaged_checkpoint_is_one_line(hr_dir, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(bad), "--images", str(hr_dir)])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and "not a readable pixel2gauss checkpoint" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_on_cuda_scores_like_cpu(hr_dir, tiny_checkpoint):
    from sr_model.files.model_files import load_network

    cpu = evaluate([hr_dir], [2, 4], model=load_network(tiny_checkpoint, "cpu"), device="cpu")
    gpu = evaluate([hr_dir], [2, 4], model=load_network(tiny_checkpoint, "cuda"), device="cuda")
    for a, b in zip(cpu, gpu):
        assert (a.image, a.scale, a.method) == (b.image, b.scale, b.method)
        assert a.psnr == pytest.approx(b.psnr, abs=0.01)  # 8-bit rounding may flip a few pixels


def test_a_model_over_the_memory_budget_is_tiled_by_itself_with_a_notice(hr_dir, tmp_path, photo):
    """eval plans every encode as upscale does: over the budget it tiles (exactly), says so once per image and
    scale, and scores what the whole image would."""
    from sr_model.files.checkpoint import save_checkpoint
    from sr_model.inference.encode import estimate_encode_bytes
    from tests.test_model import sharpen
    from tests.test_tiling import tiny_model

    model = sharpen(tiny_model("lite"))
    checkpoint = save_checkpoint(tmp_path / "tiny.pt", model)
    budget = estimate_encode_bytes(model, 35, 35, (25, 25))  # coffee at x2 (35x35 LR): room for 16 px tiles
    args = ["eval", "--checkpoint", str(checkpoint), "--images", str(hr_dir / "coffee.png"), "--scales", "2"]
    tiled = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "tiled")], env={"P2G_MEMORY_BUDGET": str(budget)})
    whole = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "whole")])
    assert tiled.exit_code == 0 and whole.exit_code == 0, tiled.output + whole.output
    notices = [line for line in tiled.output.splitlines() if line.startswith("notice: encoding 35x35 px in")]
    assert len(notices) == 1 and "tiles of 16 px (exact" in notices[0]
    assert "notice:" not in whole.output
    rows = {}
    for name in ("tiled", "whole"):
        with open(tmp_path / name / "per_image.csv") as fh:
            rows[name] = [r for r in csv.DictReader(fh) if r["method"] != "bicubic"]
    assert len(rows["tiled"]) == 1 and abs(float(rows["tiled"][0]["psnr"]) - float(rows["whole"][0]["psnr"])) < 1e-3
