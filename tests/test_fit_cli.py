"""`p2g fit-prior` and `p2g info` end to end: summary lines, JSON, resume, and one-line refusals."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from PIL import Image

from workflows.cli import cli


def test_fit_prior_then_info(tmp_path, photo):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray((photo("rocket", 150, 260, 64) * 255).round().astype(np.uint8)).save(photos / "rocket.png")
    (photos / "readme.png").write_text("not an image")
    store = tmp_path / "prior.zarr"
    runner = CliRunner()
    args = [
        "fit-prior",
        str(photos),
        "--store",
        str(store),
        "--crop",
        "32",
        "--steps",
        "15",
        "--batch",
        "2",
        "--workers",
        "1",
        "--no-progress",
    ]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "5 crops: 4 done, 1 failed, 0 pending; 0 skipped" in result.output
    assert "this run: 4 crops in 3 chunks" in result.output and "crops/s" in result.output
    assert "PSNR of done crops: median" in result.output and "5th percentile" in result.output

    result = runner.invoke(cli, ["info", str(store), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["status"] == {"pending": 0, "done": 4, "failed": 1}
    assert info["crop_size"] == 32 and info["lattice"] == [8, 8, 2] and info["fitting"]["steps"] == 15
    assert info["psnr"]["count"] == 4 and info["psnr"]["median"] > 20
    assert list(info["failure_reasons"].values()) == [1]
    assert info["statistics"] == [] and info["dictionary"] == []

    result = runner.invoke(cli, ["info", str(store)])
    assert result.exit_code == 0
    assert "status      4 done, 1 failed, 0 pending" in result.output
    assert "dictionary  not computed yet" in result.output and "not a recognised image" in result.output

    # the same command again: nothing left to fit, no cluster started
    result = runner.invoke(cli, args)
    assert result.exit_code == 0 and "4 skipped (already done)" in result.output
    assert "this run: 0 crops in 0 chunks (3 chunks skipped)" in result.output

    # another crop size on the same store is refused in one line, and the store is unchanged
    result = runner.invoke(cli, args[:5] + ["64"] + args[6:])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: store {store} was made with crop_size 32, not 64; use the same --crop to resume it, or a new --store"
    ]
    assert json.loads(runner.invoke(cli, ["info", str(store), "--json"]).output)["status"]["done"] == 4


def test_info_and_fit_prior_refuse_bad_paths(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 2 and result.output.startswith("error: prior store not found")
    result = runner.invoke(cli, ["fit-prior", str(tmp_path / "no-photos"), "--store", str(tmp_path / "s.zarr")])
    assert result.exit_code == 2 and "error: image path not found" in result.output
    assert not (tmp_path / "s.zarr").exists()
    result = runner.invoke(cli, ["fit-prior", str(tmp_path), "--store", str(tmp_path / "s.zarr"), "--crop", "30"])
    assert result.exit_code == 2 and "error: no image files found" in result.output


def test_fit_prior_batch_takes_a_number_or_auto(tmp_path):
    runner = CliRunner()
    for value, message in (("many", "neither a number of crops nor 'auto'"), ("0", "at least 1 crop")):
        result = runner.invoke(cli, ["fit-prior", str(tmp_path), "--store", str(tmp_path / "s.zarr"), "--batch", value])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "s.zarr").exists()
