import numpy as np
import pytest
import torch

from gaussian_field import CUT_MAHALANOBIS_SQ, GaussianField, output_size_for, render
from tests.test_field import random_field


def brute_force(field: GaussianField, scale_hw, size_hw) -> np.ndarray:
    """Every Gaussian at every pixel, numpy float64 with an explicit inverse: the formula of ARCHITECTURE.md."""
    s_h, s_w = scale_hw
    height, width = size_hw
    means = field.means.double().numpy()
    cov = field.covariance().double().numpy()
    colors = field.colors.double().numpy()
    out = np.zeros((field.batch_size, 3, height, width))
    for b in range(field.batch_size):
        inv = np.linalg.inv(cov[b])
        for r in range(height):
            for c in range(width):
                p = np.array([(c + 0.5) / s_w, (r + 0.5) / s_h])
                d = p - means[b]
                maha = np.einsum("ni,nij,nj->n", d, inv, d)
                keep = maha <= CUT_MAHALANOBIS_SQ
                out[b, :, r, c] = (colors[b][keep] * np.exp(-0.5 * maha[keep])[:, None]).sum(0)
    return out


@pytest.mark.parametrize(
    "scale, size",
    [
        ((2.0, 2.0), None),
        ((3.7, 3.7), None),
        ((2.0, 5.0), None),
        ((1.0, 1.0), None),
        (None, (2, 3)),
        ((0.6, 1.3), None),
    ],
)
def test_matches_brute_force_double_loop(scale, size):
    field = random_field(b=2, h=3, w=4, seed=1)
    (s_h, s_w) = scale if scale else (size[0] / 3, size[1] / 4)
    size_hw = size if size else output_size_for((3, 4), scale)
    got = render(field, size=size, scale=scale, backend="torch").numpy()
    want = brute_force(field, (s_h, s_w), size_hw)
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-10


def test_wide_gaussians_are_never_dropped():
    """A field whose covariances reach far beyond the usual neighbourhood still renders exactly."""
    field = random_field(h=4, w=4, seed=2)
    chol = field.chol.clone()
    chol[0, 5] = torch.tensor([3.0, 1.5, 2.5], dtype=chol.dtype)
    wide = GaussianField(field.means, chol, field.colors, 4, 4, 2)
    got = render(wide, scale=1.5, backend="torch").numpy()
    assert np.abs(got - brute_force(wide, (1.5, 1.5), (6, 6))).max() < 1e-10


def _golden_field(case, dtype):
    return GaussianField.from_hr(
        case["mean_hr_px"].to(dtype),
        case["cov_hr_px2"].to(dtype),
        case["color"].to(dtype),
        (case["scale_h"], case["scale_w"]),
        (20, 24, 2),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_golden_renders(golden_model, dtype):
    for name, case in golden_model["scales"].items():
        field = _golden_field(case, dtype)
        got = render(field, scale=(case["scale_h"], case["scale_w"]), backend="torch")[0].double()
        assert tuple(got.shape[-2:]) == (case["H"], case["W"]), name
        diff = (got - case["render"]).abs()
        mask = case["render_near_threshold_mask"]
        outside = 1e-10 if dtype == torch.float64 else 1e-4
        assert float(diff[:, ~mask].max()) < outside, name
        assert float((diff * mask).max()) <= outside + case["render_near_threshold_max_jump"], name


def test_golden_lr_field_reproduces_render(golden_model):
    """The scale-free LR field (means, L = para/4) rendered at each scale gives the official render."""
    lr = golden_model["field_lr"]
    field = GaussianField(lr["mean_lr_px"], lr["L_lr"], lr["color"].double(), 20, 24, 2)
    for name in ("x4", "x2.5", "h3_w5"):
        case = golden_model["scales"][name]
        got = render(field, scale=(case["scale_h"], case["scale_w"]), backend="torch")[0]
        mask = case["render_near_threshold_mask"]
        assert float((got - case["render"]).abs()[:, ~mask].max()) < 1e-5, name


@pytest.mark.parametrize("fine, step", [((3.0, 3.0), (3, 3)), ((5.0, 5.0), (5, 5)), ((3.0, 5.0), (3, 5))])
def test_continuity_subsampling_equals_scale_one(fine, step):
    field = random_field(h=5, w=6, seed=3)
    coarse = render(field, scale=1.0, backend="torch")
    dense = render(field, scale=fine, backend="torch")
    picked = dense[..., step[0] // 2 :: step[0], step[1] // 2 :: step[1]]
    assert picked.shape == coarse.shape
    assert torch.allclose(picked, coarse, atol=1e-12, rtol=0)


def test_rows_band_equals_slice_of_full_render():
    field = random_field(h=6, w=5, seed=4)
    full = render(field, scale=3.3, backend="torch")
    band = render(field, scale=3.3, rows=(7, 13), backend="torch")
    assert torch.allclose(band, full[:, :, 7:13], atol=1e-13)


def test_small_bands_equal_one_band(monkeypatch):
    from gaussian_field import torch_reference

    field = random_field(h=6, w=5, seed=5)
    whole = render(field, scale=2.7, backend="torch")
    monkeypatch.setattr(torch_reference, "BAND_BYTES", 1)
    assert torch.allclose(render(field, scale=2.7, backend="torch"), whole, atol=1e-13)


def test_gradcheck_all_parameter_groups():
    field = random_field(h=2, w=2, seed=6)
    means = field.means.clone().requires_grad_(True)
    chol = field.chol.clone().requires_grad_(True)
    colors = field.colors.clone().requires_grad_(True)

    def fn(m, c, col):
        return render(GaussianField(m, c, col, 2, 2, 2, validate=False), scale=(2.5, 1.5), backend="torch")

    assert torch.autograd.gradcheck(fn, (means, chol, colors), eps=1e-6, atol=1e-6)


def test_float32_and_output_dtype():
    field = random_field(dtype=torch.float32)
    out = render(field, scale=2, backend="torch")
    assert out.dtype == torch.float32 and out.shape == (1, 3, 6, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": 0}, "positive"),
        ({"scale": -2}, "positive"),
        ({"scale": float("nan")}, "positive"),
        ({"scale": float("inf")}, "positive"),
        ({"scale": (2.0, 0.0)}, "positive"),
        ({"size": (0, 5)}, "positive integers"),
        ({}, "size"),
        ({"scale": 2, "backend": "nope"}, "unknown render backend"),
        ({"scale": 2, "rows": (3, 99)}, "rows"),
        ({"scale": 1000.0, "max_output_bytes": 2**20}, "render limit"),
    ],
)
def test_bad_render_requests(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render(random_field(), **kwargs)


def test_default_memory_limit_refuses_huge_output():
    with pytest.raises(ValueError, match="GiB"):
        render(random_field(), scale=1e5)


def test_round_half_to_even_output_size_as_official():
    assert output_size_for((20, 24), 2.5) == (50, 60)
    assert output_size_for((3, 5), 1.5) == (4, 8)  # 4.5 -> 4, 7.5 -> 8 (Python round)
    assert output_size_for((3, 4), (3, 5)) == (9, 20)
