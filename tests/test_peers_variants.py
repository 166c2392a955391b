"""The ablation variants of benchmarks/peers/variants.py: same parameters as the public model, other maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.peers.variants import (
    VARIANTS,
    AbsolutePositionsSR,
    RawFreeCovarianceHead,
    absolute_positions,
    grid_dictionary,
    raw_covariance,
)
from sr_model.networks.model import build_model
from sr_model.networks.presets import preset

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def test_crude_dictionaries_span_their_range(tmp_path):
    kernels = np.load(grid_dictionary(tmp_path / "K2.npy", 10.0))
    assert kernels.shape == (729, 3)
    assert kernels.min() == 0.0 and kernels.max() == 10.0
    assert sorted(set(kernels[:, 1].tolist())) == pytest.approx([1.25 * i for i in range(9)])


def test_absolute_positions_spread_over_the_image_without_a_lattice_start():
    torch.manual_seed(0)
    model = absolute_positions(build_model(preset("lite"), "official")).eval()
    assert isinstance(model, AbsolutePositionsSR)
    lr = torch.rand(1, 3, 6, 10)
    with torch.no_grad():
        field = model.encode(lr)
        offsets = model.gaussians(lr)["offset"]
    expected = (offsets + 1) * 0.5 * torch.tensor([10.0, 6.0])
    torch.testing.assert_close(field.means, expected)
    assert model(lr, scale=2).shape == (1, 3, 12, 20)


def test_raw_covariance_head_drops_the_softplus():
    torch.manual_seed(0)
    model = build_model(preset("lite", covariance="free"))
    feat = torch.randn(1, 256, 4, 4)
    with torch.no_grad():
        soft = model.covariance_head(feat)
        raw = raw_covariance(model).covariance_head(feat)
    assert isinstance(model.covariance_head, RawFreeCovarianceHead)
    torch.testing.assert_close(torch.nn.functional.softplus(raw[..., 0]), soft[..., 0])
    torch.testing.assert_close(raw[..., 1], soft[..., 1])
    assert bool((raw[..., 0] < 0).any())  # the raw diagonal takes either sign


def test_every_variant_builds_from_the_public_preset():
    for name, variant in VARIANTS.items():
        config = preset("lite", **variant.overrides)
        model = build_model(config, "official" if variant.dictionary else None)
        if variant.specialise:
            model = variant.specialise(model)
        assert model(torch.rand(1, 3, 4, 4), scale=2).shape == (1, 3, 8, 8), name
