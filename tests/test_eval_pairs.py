"""`p2g eval --lr-images` (existing LR files paired by name, scale from the sizes: the benchmark folders as they
are) and `--save-images` (the super-resolved images that were scored)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gaussian_field.image_io import read_image, write_image
from sr_model.data.datasets import SkippedImageWarning
from sr_model.evaluation.evaluate import bicubic_upscale, evaluate, make_lr, pair_scale, to_uint8
from sr_model.evaluation.metrics import psnr
from tests.test_eval import tiny_checkpoint  # noqa: F401  (fixture)
from workflows.cli import cli


@pytest.fixture
def div2k(tmp_path, photo) -> Path:
    """DIV2K's layout: HR/0801.png, LR_bicubic/X2/0801x2.png, LR_bicubic/X4/0801x4.png (MATLAB bicubic, 8-bit)."""
    root = tmp_path / "DIV2K"
    (root / "HR").mkdir(parents=True)
    for name, crop in (
        ("0801", photo("coffee", 90, 180, size=64)),
        ("0802", photo("chelsea", 40, 120, size=64)[:, :61]),
    ):
        write_image(root / "HR" / f"{name}.png", crop)
        for scale in (2, 4):
            folder = root / "LR_bicubic" / f"X{scale}"
            folder.mkdir(parents=True, exist_ok=True)
            write_image(folder / f"{name}x{scale}.png", make_lr(read_image(root / "HR" / f"{name}.png"), scale)[1])
    return root


def csv_rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def run_eval(*args):
    return CliRunner().invoke(cli, ["eval", *(str(a) for a in args)])


def eval_bicubic_on_lr_files(hr: Path, lr: Path, *args):
    """`p2g eval` of the bicubic baseline on the HR images `hr` and their existing LR files under `lr`."""
    return run_eval("--checkpoint", "bicubic", "--images", hr, "--lr-images", lr, *args)


def test_benchmark_folders_as_they_are_score_like_generated_lr(div2k, tmp_path):
    result = eval_bicubic_on_lr_files(div2k / "HR", div2k / "LR_bicubic", "--out", tmp_path / "report")
    assert result.exit_code == 0, result.output
    assert "LR from the --lr-images files" in result.output and result.output.count("\n| x") == 2
    from_files = {
        (Path(r["image"]).name, r["scale"]): float(r["psnr"]) for r in csv_rows(tmp_path / "report" / "per_image.csv")
    }
    assert set(from_files) == {("0801.png", "2"), ("0801.png", "4"), ("0802.png", "2"), ("0802.png", "4")}
    generated = evaluate([div2k / "HR"], [2, 4])
    for row in generated:  # the LR files hold exactly the LR that eval makes itself: the same scores
        assert from_files[(Path(row.image).name, f"{row.scale:g}")] == pytest.approx(row.psnr, abs=1e-6)
    only_x4 = eval_bicubic_on_lr_files(div2k / "HR", div2k / "LR_bicubic", "--scales", 4)
    assert only_x4.exit_code == 0 and only_x4.output.count("\n| x") == 1 and "| x4 |" in only_x4.output


def test_same_name_lr_and_scale_from_the_sizes(tmp_path, photo):
    """Set5-style LR/X3/baby.png; the HR's 61 px width is mod-cropped to 60 for x3."""
    hr = photo("rocket", 100, 200, size=64)[:, :61]
    (tmp_path / "HR").mkdir()
    write_image(tmp_path / "HR" / "baby.png", hr)
    (tmp_path / "LR" / "X3").mkdir(parents=True)
    cropped, lr = make_lr(read_image(tmp_path / "HR" / "baby.png"), 3)
    write_image(tmp_path / "LR" / "X3" / "baby.png", lr)
    rows = evaluate([tmp_path / "HR"], None, lr_sources=[tmp_path / "LR"])
    assert [(r.scale, r.hr_height, r.hr_width, r.lr_height, r.lr_width) for r in rows] == [(3.0, 63, 60, 21, 20)]
    sr = bicubic_upscale(read_image(tmp_path / "LR" / "X3" / "baby.png"), 3, (63, 60))
    assert rows[0].psnr == pytest.approx(psnr(to_uint8(cropped), to_uint8(sr), 3, True))
    assert pair_scale((63, 61), (21, 20)) == 3.0 and pair_scale((100, 100), (40, 40)) == 2.5


def test_pairing_problems(div2k, tmp_path, photo):
    write_image(div2k / "LR_bicubic" / "X4" / "0999x4.png", photo(size=16))  # no HR of that name: skipped
    with pytest.warns(SkippedImageWarning, match="0999x4.png"):
        rows = evaluate([div2k / "HR"], [4], lr_sources=[div2k / "LR_bicubic" / "X4"])
    assert len(rows) == 2
    (div2k / "LR_bicubic" / "X4" / "0999x4.png").unlink()
    wrong = div2k / "LR_bicubic" / "X4" / "0801x3.png"  # named x3, sized x4
    write_image(wrong, read_image(div2k / "LR_bicubic" / "X4" / "0801x4.png"))
    result = eval_bicubic_on_lr_files(div2k / "HR", div2k / "LR_bicubic" / "X4")
    assert result.exit_code == 2 and result.output.startswith("error: ") and result.output.count("\n") == 1
    assert "0801x3.png" in result.output and "x3 by its name" in result.output
    wrong.unlink()
    result = eval_bicubic_on_lr_files(div2k / "HR", div2k / "LR_bicubic" / "X4", "--scales", 3)
    assert result.exit_code == 2 and "no LR image at x3" in result.output


def test_save_images_keeps_what_was_scored(div2k, tmp_path, tiny_checkpoint):
    saved = tmp_path / "sr"
    result = run_eval(
        "--checkpoint",
        tiny_checkpoint,
        "--images",
        div2k / "HR",
        "--lr-images",
        div2k / "LR_bicubic" / "X4",
        "--save-images",
        saved,
        "--protocol",
        "div2k",
        "--out",
        tmp_path / "report",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in saved.iterdir()) == ["0801_x4.png", "0802_x4.png"]
    rows = [r for r in csv_rows(tmp_path / "report" / "per_image.csv") if r["method"] == "model"]
    for row in rows:
        sr = read_image(saved / f"{Path(row['image']).stem}_x4.png")
        hr = read_image(row["image"])[: int(row["hr_height"]), : int(row["hr_width"])]
        assert sr.shape == hr.shape
        assert float(row["psnr"]) == pytest.approx(psnr(to_uint8(hr), to_uint8(sr), 10, False), abs=1e-5)
    baseline = tmp_path / "bicubic"
    result = run_eval(
        "--checkpoint", "bicubic", "--images", div2k / "HR" / "0801.png", "--scales", 2, "--save-images", baseline
    )
    assert result.exit_code == 0, result.output
    hr, lr = make_lr(read_image(div2k / "HR" / "0801.png"), 2)
    want = to_uint8(bicubic_upscale(lr, 2, hr.shape[:2]))
    assert np.array_equal(np.round(read_image(baseline / "0801_x2.png") * 255).astype(np.uint8), want)
