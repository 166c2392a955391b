"""PSNR/SSIM against BasicSR's values stored in tests/golden/metrics.json (reference README s.4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sr_model.evaluation.metrics import protocol_settings, psnr, rgb_to_y, ssim

PSNR_ATOL = 1e-4  # dB
SSIM_ATOL = 1e-6


@pytest.fixture(scope="module")
def golden(golden_dir):
    with np.load(golden_dir / "metrics_images.npz") as data:
        images = {k: data[k] for k in data.files}
    results = json.loads((golden_dir / "metrics.json").read_text())["results"]
    return images, results


@pytest.mark.parametrize("crop", (0, 4))
@pytest.mark.parametrize("y_channel", (0, 1))
def test_basicsr_values(golden, crop, y_channel):
    images, results = golden
    hr, sr = images["hr_rgb_uint8"], images["sr_rgb_uint8"]
    key = f"crop{crop}_y{y_channel}"
    assert psnr(hr, sr, crop, bool(y_channel)) == pytest.approx(results[f"psnr_{key}"], abs=PSNR_ATOL)
    assert ssim(hr, sr, crop, bool(y_channel)) == pytest.approx(results[f"ssim_{key}"], abs=SSIM_ATOL)


def test_protocols_at_scale_4(golden):
    """benchmark = Y with shave 4 (BasicSR); div2k = RGB with shave 10 (ContinuousSR's calc_psnr)."""
    images, results = golden
    hr, sr = images["hr_rgb_uint8"], images["sr_rgb_uint8"]
    border, y = protocol_settings("benchmark", 4)
    assert (border, y) == (4, True)
    assert psnr(hr, sr, border, y) == pytest.approx(results["psnr_crop4_y1"], abs=PSNR_ATOL)
    assert ssim(hr, sr, border, y) == pytest.approx(results["ssim_crop4_y1"], abs=SSIM_ATOL)
    border, y = protocol_settings("div2k", 4)
    assert (border, y) == (10, False)
    assert psnr(hr, sr, border, y) == pytest.approx(results["continuoussr_utils_calc_psnr_div2k_scale4"], abs=PSNR_ATOL)
    # ContinuousSR's Y-like benchmark PSNR agrees with BasicSR's to ~1e-5 dB (README s.4)
    assert psnr(hr, sr, 4, True) == pytest.approx(
        results["continuoussr_utils_calc_psnr_benchmark_scale4"], abs=PSNR_ATOL
    )


def test_channel_order_matters(golden):
    """Feeding BGR where RGB is expected gives BasicSR's documented wrong value, not the right one."""
    images, results = golden
    hr, sr = images["hr_rgb_uint8"], images["sr_rgb_uint8"]
    wrong = psnr(hr[..., ::-1], sr[..., ::-1], 4, True)
    assert wrong == pytest.approx(results["psnr_crop4_y1_RGB_FED_AS_BGR_wrong"], abs=PSNR_ATOL)
    assert abs(wrong - results["psnr_crop4_y1"]) > 0.1


def test_y_channel_matches_basicsr(golden):
    images, _ = golden
    for name in ("hr", "sr"):
        np.testing.assert_allclose(rgb_to_y(images[f"{name}_rgb_uint8"]), images[f"{name}_y_basicsr_f32"], atol=3e-5)


def test_identical_images_and_float_input(photo):
    image = np.round(photo("coffee", size=48) * 255)
    assert psnr(image, image) == float("inf")
    assert ssim(image, image, 4, True) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 5, image.shape), 0, 255)
    assert 25 < psnr(image, noisy) < 40  # 5 DN noise: about 34 dB
    assert psnr(image, noisy) == pytest.approx(psnr(image.astype(np.uint8), noisy), abs=1e-9)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: psnr(a, a[:-1]), "shapes differ"),
        (lambda a: psnr(a, a, crop_border=20), "leaves nothing"),
        (lambda a: ssim(a[:12, :12], a[:12, :12], crop_border=1), "11x11"),
        (lambda a: psnr(a, a, crop_border=-1), "non-negative"),
        (lambda a: protocol_settings("set5", 2), "unknown protocol"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.zeros((32, 32, 3)))
