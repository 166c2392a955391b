"""`p2g bench` and gaussian_field.speed on tiny sizes: the report's shape, honest ratios, targets, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from gaussian_field import render, speed
from gaussian_field.initial import field_from_image
from workflows import bench_cmd, bench_report
from workflows.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["bench", *[str(a) for a in args]])


def test_bench_json_has_every_figure():
    result = run(
        "--size", 8, "--scale", 2, "--scale", 3.3, "--repeats", 1, "--no-multi-scale", "--no-gradients", "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["device"] == "cpu" and report["field"]["lr"] == [8, 8]
    assert [e["scale"] for e in report["scales"]] == [2.0, 3.3]
    for entry in report["scales"]:
        assert entry["out"] == list(speed.output_size_for((8, 8), entry["scale"]))
        cpu = entry["backends"]["cpu"]
        assert cpu["max_abs_diff_to_reference"] < 1e-5
        assert cpu["mpix_per_s"] > 0 and entry["reference"]["mpix_per_s"] > 0 and entry["bicubic"]["mpix_per_s"] > 0
        assert cpu["x_reference"] == pytest.approx(cpu["mpix_per_s"] / entry["reference"]["mpix_per_s"])
        assert cpu["x_bicubic"] == pytest.approx(cpu["mpix_per_s"] / entry["bicubic"]["mpix_per_s"])
    assert "skipped" in report["multi_scale"]


def test_bench_text_report():
    import numba

    threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    try:
        result = run("--size", 8, "--scale", 4, "--repeats", 1, "--no-multi-scale", "--no-gradients", "--threads", 1)
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(numba_threads)
    assert result.exit_code == 0, result.output
    assert "1 torch threads, 1 numba threads" in result.output
    assert "x4 -> 32x32" in result.output and "x reference" in result.output
    assert "target: cpu backend >= 20x reference at x4" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("--device", "cuda:0"), "no CUDA device"),
        (("--device", "tpu"), "cpu or cuda"),
        (("--size", 2), "--size"),
        (("--repeats", 0), "--repeats"),
        (("--threads", 0), "--threads"),
    ],
)
def test_bench_bad_input_is_one_line_error(args, message):
    if args[0] == "--device" and args[1].startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run(*args, "--no-multi-scale", "--no-gradients")
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_reference_is_timed_on_a_band_when_the_output_is_large():
    field = speed.benchmark_field(8)
    entry = speed.render_speed(field, [4.0], repeats=1, reference_max_mpix=200 / 1e6)[0]
    assert entry["reference"]["rows"] == [0, 200 // 32]
    assert entry["backends"]["cpu"]["max_abs_diff_to_reference"] < 1e-5


def test_multi_scale_counts_one_encode_against_one_per_scale():
    calls = []

    def encode(lr):
        calls.append(1)
        return field_from_image(lr[0])

    lr = torch.rand(1, 3, 6, 6)
    result = speed.multi_scale_speed(encode, lr, scales=(1.5, 2.0, 3.0))
    assert len(calls) == 1 + 1 + 3  # warm-up, ours, one per scale
    assert result["scales"] == 3 and result["ratio"] == pytest.approx(
        result["encode_per_scale_s"] / result["one_encode_s"]
    )


def test_lite_multi_scale_runs_the_model():
    result = bench_cmd.lite_multi_scale(torch.device("cpu"), 8, scales=(1.1, 2.0))
    if "skipped" in result:
        pytest.skip(result["skipped"])
    assert result["scales"] == 2 and result["lr"] == [8, 8] and result["ratio"] > 0


def test_gradient_figure_compares_with_reference_autograd():
    field = speed.benchmark_field(4, batch=2)
    result = speed.gradient_speed(field, 2.0, repeats=1)
    assert set(result["backends"]) >= {"torch", "cpu"}
    assert result["backends"]["cpu"]["max_rel_grad_diff"] < 1e-4


def test_target_checks():
    report = {
        "field": {"lr": [256, 256]},
        "device": "cpu",
        "scales": [
            {"scale": 4.0, "backends": {"cpu": {"x_reference": 25.0, "median_s": 0.06}}},
            {"scale": 2.0, "backends": {"cpu": {"x_reference": 5.0, "median_s": 0.01}}},
        ],
    }
    checks = {c["what"]: c["met"] for c in bench_report.target_checks(report)}
    assert checks == {"cpu backend >= 20x reference at x4": True, "cpu backend 256x256 -> 1024x1024 <= 50 ms": False}


def test_benchmark_field_is_the_reference_benchmark_recipe():
    """Same generator draws as benchmarks/render_reference.py, so the two benchmarks time the same field."""
    field = speed.benchmark_field(4, seed=3)
    assert field.means.shape == (1, 64, 2) and field.dtype == torch.float32
    assert render(field, scale=1.0).shape == (1, 3, 4, 4)


def test_fitting_step_figure_times_forward_and_backward_apart(monkeypatch):
    field = speed.benchmark_field(4, batch=3)
    result = speed.training_step_speed(field, 4.0, repeats=2)
    assert result["backend"] == "cpu" and result["batch"] == 3 and result["out"] == [16, 16]
    assert result["pixels"] == 3 * 16 * 16 and result["forward_s"] > 0 and result["backward_s"] > 0
    assert result["step_mpix_per_s"] == pytest.approx(
        result["pixels"] / (result["forward_s"] + result["backward_s"]) / 1e6
    )
    monkeypatch.setattr(bench_cmd, "STEP_CROP", 16)
    out = run("--size", 8, "--scale", 2, "--repeats", 1, "--no-multi-scale", "--step-batch", 2)
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if x.startswith("fitting step at a device-filling size"))
    assert "2 crops of 16x16" in line and "forward" in line and "backward" in line
    bad = run("--step-batch", 0, "--no-multi-scale")
    assert bad.exit_code == 2 and bad.output.startswith("error: ") and "--step-batch" in bad.output
