"""The encode's fast path: the fused dictionary mix equals the written-out softmax (values and gradients), and the
tail and heads run on pieces of the lattice without changing a number."""

import numpy as np
import pytest
import torch

import sr_model.networks.model as model_module
from sr_model.networks.heads import mix_dictionary, mix_dictionary_reference
from sr_model.networks.model import build_model
from sr_model.networks.presets import preset
from tests.test_model import SMALL, sharpen

HEAD_SMALL = dict(cov_dim=16, cov_hidden=(16,), color_hidden=(16,), offset_hidden=(16,))


@pytest.mark.parametrize("embed, entries, batch", [(32, 730, 2), (512, 126, 1), (2, 9, 3)])
def test_fused_mix_equals_the_softmax_written_out(embed, entries, batch):
    generator = torch.Generator().manual_seed(embed)
    query = torch.randn(batch, 1000, embed, generator=generator, requires_grad=True)
    keys = (torch.randn(entries, embed, generator=generator) * 0.5).requires_grad_()
    values = torch.rand(entries, 3, generator=generator).requires_grad_()
    fused, reference = mix_dictionary(query, keys, values), mix_dictionary_reference(query, keys, values)
    torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5)
    upstream = torch.randn(fused.shape, generator=generator)
    grads = torch.autograd.grad((fused * upstream).sum(), (query, keys, values))
    expected = torch.autograd.grad((reference * upstream).sum(), (query, keys, values))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * max(1.0, float(want.abs().max())))


def test_the_head_uses_the_fused_mix_never_the_weights(monkeypatch, photo):
    """The (K, N) weights are for analysis: an encode that builds them would fail here."""
    model = sharpen(build_model(preset("lite"), "official"))

    def forbidden(*args, **kwargs):
        raise AssertionError("the encode built the K x N mixing weights")

    monkeypatch.setattr(type(model.covariance_head), "weights", forbidden)
    monkeypatch.setattr("sr_model.networks.heads.mix_dictionary_reference", forbidden)
    lr = torch.from_numpy(np.ascontiguousarray(photo("coffee", size=40))).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        assert model.encode(lr).num_gaussians == 4 * 40 * 40


def _models():
    torch.manual_seed(0)
    return {
        "lite": sharpen(build_model(preset("lite"), "official")),
        "swinir": sharpen(build_model(preset("swinir", **SMALL, **HEAD_SMALL), "official")),
        "hat": sharpen(build_model(preset("hat", **SMALL, **HEAD_SMALL, squeeze_factor=6), "official")),
    }


@pytest.mark.parametrize("name", ["lite", "swinir", "hat"])
def test_pieces_equal_the_whole_image(name, photo, monkeypatch):
    """Without gradients the tail and heads run on pieces (here 8 px, edges and window padding included); with
    gradients on one piece through the 4x features as upstream computes them."""
    model = _models()[name]
    lr = torch.from_numpy(np.ascontiguousarray(photo("astronaut", top=40, left=100, size=64)[:27, :35]))
    lr = lr.permute(2, 0, 1)[None].float()
    whole = {key: value.detach() for key, value in model.gaussians(lr).items()}  # gradients on: one piece
    monkeypatch.setattr(model_module, "HEAD_PIECE", 8)
    with torch.no_grad():
        pieces = model.gaussians(lr)
        upstream = model.covariance_head(model.features(lr), model.dictionary)
    for key in whole:
        torch.testing.assert_close(pieces[key], whole[key], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pieces["mixed"], upstream, rtol=1e-5, atol=1e-5)


def test_lattice_piece_is_a_crop_of_the_lattice_features():
    model = _models()["swinir"]
    lr = torch.rand(1, 3, 13, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        trunk = model.encoder.trunk(lr)
        assert trunk.shape[-2:] == (16, 12)  # padded to the window grid
        whole = model.encoder.lattice_features(trunk)[..., :26, :20]
        for box in [(0, 0, 13, 10), (0, 0, 4, 4), (4, 4, 8, 8), (8, 3, 13, 10), (12, 9, 13, 10)]:
            feat, (rows, cols) = model.encoder.lattice_piece(trunk, (13, 10), box)
            top, left, bottom, right = box
            want = whole[..., 2 * top : 2 * bottom, 2 * left : 2 * right]
            torch.testing.assert_close(feat[..., rows, cols], want, rtol=1e-5, atol=1e-6)
            assert feat.shape[-2] == min(26, 2 * bottom + 1) - max(0, 2 * top - 1)
