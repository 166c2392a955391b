"""Colour anchoring (`color_anchor="lr"`): a fresh model renders close to bicubic, with no colour bias; the field
of the config is stored in checkpoints, and old checkpoints without it load as the raw-colour model they were."""

from __future__ import annotations

import math

import pytest
import torch

from gaussian_field import GaussianField, render
from gaussian_field.lattice import base_positions
from sr_model.evaluation.evaluate import bicubic_upscale, make_lr, model_upscale, to_uint8
from sr_model.evaluation.metrics import psnr
from sr_model.files.checkpoint import checkpoint_payload, model_from_checkpoint
from sr_model.networks.color_anchor import INSIDE_CUT, anchor_colors, coverage, interpolate_at_bases
from sr_model.networks.model import build_model
from sr_model.networks.presets import PRESETS, ConfigError, ModelConfig, preset
from sr_model.training.validation import channel_bias


def _flat_field(value: torch.Tensor, chol, h: int = 10, w: int = 12) -> GaussianField:
    """An anchored field over a flat LR image of colour `value`, every Gaussian on its base with `chol`."""
    lr = value.view(1, 3, 1, 1).expand(1, 3, h, w).double()
    n = 4 * h * w
    chol_t = torch.tensor(chol, dtype=torch.float64).expand(1, n, 3).clone()
    colors = anchor_colors(lr, chol_t, 2).double()
    return GaussianField(base_positions(h, w, 2).unsqueeze(0), chol_t, colors, h, w, 2)


@pytest.mark.parametrize("chol", [(0.3, 0.0, 0.3), (0.5, 0.2, 0.35), (0.25, -0.1, 0.6)])
@pytest.mark.parametrize("scale", [2.0, 3.7, 8.0])
def test_anchored_flat_image_renders_its_colour(chol, scale):
    """A flat LR image: the anchored field renders that colour (up to the lattice's ripple), and near the border
    too: no darkened frame, within 4 % from the second LR pixel on, within 20 % in it. The outermost LR pixel
    (which the evaluation protocol shaves) is left out: past the last lattice base at w - 1/2 there are no
    Gaussians to sum, which only the learned residual can make up for."""
    value = torch.tensor([0.8, 0.45, 0.1]).double()
    out = render(_flat_field(value, chol), scale=scale)[0]
    interior = out[:, out.shape[1] // 4 : -out.shape[1] // 4, out.shape[2] // 4 : -out.shape[2] // 4]
    torch.testing.assert_close(interior.mean(dim=(1, 2)), value, atol=0.012, rtol=0)
    edge = math.ceil(scale)
    error = (out - value.view(3, 1, 1)).abs() / float(value.max())
    assert float(error[:, 2 * edge : -2 * edge, 2 * edge : -2 * edge].amax()) < 0.04
    assert float(error[:, edge:-edge, edge:-edge].amax()) < 0.2


def test_coverage_is_the_integral_per_cell_inside_and_less_at_the_border():
    chol = torch.tensor([0.4, 0.1, 0.3]).expand(1, 4 * 6 * 6, 3)
    cover = coverage(chol, 2, (12, 12)).view(12, 12)
    integral = 4 * 2 * math.pi * 0.4 * 0.3 * INSIDE_CUT
    assert float(cover[6, 6]) == pytest.approx(integral, rel=1e-4)
    assert float(cover[0, 6]) < 0.8 * integral and float(cover[0, 0]) < float(cover[0, 6])
    with pytest.raises(ValueError, match="lattice"):
        coverage(chol, 2, (12, 10))


def test_dropped_gaussians_get_unit_coverage_and_stay_finite():
    chol = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.0, -0.2], [1e-7, 0.0, 1e-7], [0.3, 0.1, 0.3]]).unsqueeze(0)
    cover = coverage(chol, 2, (2, 2))
    assert torch.isfinite(cover).all() and cover[0, 0] == 1 and cover[0, 1] == 1 and cover[0, 2] > 0


@pytest.mark.parametrize("scale", [2, 4])
def test_fresh_anchored_model_starts_near_bicubic_without_colour_bias(photo, scale):
    """The point of anchoring: before any training the lite model is close to bicubic, the raw one far off."""
    hr, lr = make_lr(photo("coffee", 40, 100, size=96), scale)
    hr8 = to_uint8(hr)
    bicubic = psnr(hr8, to_uint8(bicubic_upscale(lr, scale, hr8.shape[:2])), scale, True)
    scores, biases = {}, {}
    for anchor in ("lr", "none"):
        torch.manual_seed(0)
        model = build_model(preset("lite", color_anchor=anchor), "official").eval()
        sr, _, _ = model_upscale(model, lr, hr8.shape[:2], "cpu")
        scores[anchor], biases[anchor] = psnr(hr8, to_uint8(sr), scale, True), channel_bias(hr8, sr, scale)
    assert scores["lr"] > bicubic - 1.0, (scores, bicubic)
    assert max(abs(b) for b in biases["lr"]) < 2.0, biases
    assert scores["none"] < bicubic - 10.0, (scores, bicubic)


def test_anchored_model_gives_gradients_to_every_head(photo):
    torch.manual_seed(0)
    model = build_model(preset("lite"), "official")
    lr = torch.from_numpy(photo("astronaut", 0, 0, 32)[::4, ::4].copy()).permute(2, 0, 1)[None].float()
    hr = torch.from_numpy(photo("astronaut", 0, 0, 32)).permute(2, 0, 1)[None].float()
    for _ in range(2):  # the zeroed last layers pass gradients on from the second step
        model.zero_grad()
        (model(lr, size=(32, 32)) - hr).abs().mean().backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p -= 1e-3 * p.grad.sign()
    for name in ("color_head", "offset_head", "covariance_head", "encoder"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads), name


def test_config_field_presets_and_refusal():
    assert PRESETS["lite"].color_anchor == "lr"
    assert PRESETS["swinir"].color_anchor == "none" and PRESETS["hat"].color_anchor == "none"
    assert ModelConfig.from_dict(preset("lite").to_dict()) == preset("lite")
    with pytest.raises(ConfigError, match="color_anchor must be one of none, lr"):
        preset("lite", color_anchor="bicubic")


def test_checkpoint_without_the_field_loads_as_the_raw_colour_model(photo):
    """A lite checkpoint written before the field existed: it loads unanchored, rendering what it did."""
    torch.manual_seed(0)
    old = build_model(preset("lite", color_anchor="none"), "official").eval()
    payload = checkpoint_payload(old)
    del payload["config"]["color_anchor"]
    loaded = model_from_checkpoint(payload)
    assert loaded.config.color_anchor == "none"
    lr = torch.from_numpy(photo("chelsea", 50, 50, 12).copy()).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr, scale=3), old(lr, scale=3), atol=0, rtol=0)
    anchored = checkpoint_payload(build_model(preset("lite"), "official"))
    assert model_from_checkpoint(anchored).config.color_anchor == "lr"


def test_interpolation_at_bases_keeps_the_pixels_and_the_dtype(photo):
    """Odd lattice bases sit on LR pixel centres: the interpolation gives the pixels back there."""
    lr = torch.from_numpy(photo("rocket", 100, 100, 9).copy()).permute(2, 0, 1)[None].double()
    values = interpolate_at_bases(lr, 2)
    assert values.dtype == torch.float64
    torch.testing.assert_close(values.view(1, 18, 18, 3)[0, 1::2, 1::2], lr[0].permute(1, 2, 0))
