"""MATLAB-style bicubic imresize against BasicSR's outputs (tests/golden/matlab_imresize.npz, reference README s.3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_model.data.imresize import imresize, output_size, resize_weights

TAGS = ("x1_2", "x1_3", "x1_4", "x1_3.7", "x4")
IMAGES = ("astronaut", "coffee")


@pytest.fixture(scope="module")
def golden(golden_dir):
    with np.load(golden_dir / "matlab_imresize.npz") as data:
        return {k: data[k] for k in data.files}


def _chw(array: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).to(dtype)


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).double().numpy()


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("tag", TAGS)
def test_matches_basicsr(golden, image, tag):
    scale = float(golden[f"scale_{tag}"])
    source = _chw(golden[f"{image}_in"])
    expected = golden[f"{image}_{tag}_out"]  # BasicSR's float32 arithmetic
    out64 = _hwc(imresize(source, scale))
    assert out64.shape == expected.shape
    np.testing.assert_allclose(out64, expected, rtol=0, atol=5e-6)
    out32 = imresize(source.float(), scale)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(_hwc(out32), expected, rtol=0, atol=5e-6)
    exact = golden.get(f"{image}_{tag}_out_f64arith")
    if exact is not None:  # stored for downscales only
        np.testing.assert_allclose(out64, exact, rtol=0, atol=1e-10)


def test_batched_equals_one_by_one(golden):
    a = _chw(golden["astronaut_in"])[:, :90, :90]
    b = _chw(golden["coffee_in"])
    batch = torch.stack([a, b]).unsqueeze(0)  # (1, 2, 3, 90, 90): any leading dimensions
    out = imresize(batch, 1 / 3.7)
    assert out.shape == (1, 2, 3, 25, 25)
    torch.testing.assert_close(out[0, 0], imresize(a, 1 / 3.7), rtol=0, atol=1e-14)
    torch.testing.assert_close(out[0, 1], imresize(b, 1 / 3.7), rtol=0, atol=1e-14)


def test_anisotropic_is_two_separable_passes(photo):
    image = torch.from_numpy(photo("chelsea", size=60)).permute(2, 0, 1)
    both = imresize(image, (0.5, 1.5))
    assert both.shape[-2:] == (30, 90)
    height_only = imresize(image, (0.5, 1.0))
    torch.testing.assert_close(both, imresize(height_only, (1.0, 1.5)), rtol=0, atol=1e-12)


def test_output_size_rules(photo):
    image = torch.from_numpy(photo("rocket", size=50)).permute(2, 0, 1)
    assert imresize(image, 1 / 3.7).shape[-2:] == output_size((50, 50), 1 / 3.7) == (14, 14)  # ceil(13.51)
    explicit = imresize(image, 1 / 3.7, size=(13, 13))  # the kernel of 1/3.7, the size asked
    assert explicit.shape[-2:] == (13, 13)
    by_size = imresize(image, size=(25, 100))  # scale implied: (0.5, 2)
    torch.testing.assert_close(by_size, imresize(image, (0.5, 2.0)), rtol=0, atol=1e-12)


def test_weights_sum_to_one_and_constant_stays_constant():
    for in_len, out_len, scale in ((97, 26, 1 / 3.7), (10, 40, 4.0), (33, 11, 1 / 3)):
        weights, indices = resize_weights(in_len, out_len, scale)
        torch.testing.assert_close(weights.sum(1), torch.ones(out_len, dtype=torch.float64))
        assert indices.min() >= 0 and indices.max() < in_len
    flat = torch.full((3, 37, 41), 0.3, dtype=torch.float64)
    torch.testing.assert_close(imresize(flat, 1 / 3.7), torch.full((3, 10, 12), 0.3, dtype=torch.float64))


def test_scale_one_is_identity_and_tiny_inputs_work(photo):
    image = torch.from_numpy(photo("coffee", size=20)).permute(2, 0, 1)
    torch.testing.assert_close(imresize(image, 1.0), image, rtol=0, atol=1e-12)
    tiny = imresize(image[:, :3, :3], 1 / 8)  # kernel width 32 on a 3-pixel image: mirrored repeatedly
    assert tiny.shape == (3, 1, 1)
    assert image[:, :3, :3].amin() - 1e-9 <= tiny.min() and tiny.max() <= image[:, :3, :3].amax() + 1e-9


def test_downscale_is_antialiased():
    """A 1-pixel checkerboard averages out (antialiasing); without it, aliasing keeps large swings."""
    board = (torch.arange(64)[:, None] + torch.arange(64)[None, :]) % 2
    board = board.double().expand(3, 64, 64)
    smooth = imresize(board, 1 / 3)  # without antialiasing, 1/3 samples the pixels themselves
    assert (smooth - 0.5)[:, 3:-3, 3:-3].abs().max() < 0.01  # the mirrored border breaks the pattern
    aliased = imresize(board, 1 / 3, antialiasing=False)
    assert (aliased - 0.5).abs().max() > 0.4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": 0.0}, "positive finite"),
        ({"scale": float("nan")}, "positive finite"),
        ({"size": (0, 4)}, "positive integers"),
        ({"size": (2.5, 4)}, "positive integers"),
        ({}, "scale or an output size"),
        ({"scale": (1, 2, 3)}, "pair"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        imresize(torch.zeros(3, 8, 8), **kwargs)


def test_integer_input_is_refused():
    with pytest.raises(ValueError, match="floating-point"):
        imresize(torch.zeros(3, 8, 8, dtype=torch.uint8), 0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(golden):
    source = _chw(golden["astronaut_in"])
    for scale in (1 / 3.7, 4.0):
        for dtype in (torch.float32, torch.float64):
            cpu = imresize(source.to(dtype), scale)
            gpu = imresize(source.to(dtype).cuda(), scale)
            assert gpu.is_cuda
            torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-12)
