"""The model: official head layout, the field it encodes (bounded offsets, mixes inside the dictionary hull),
the ablations, the API and its errors."""

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from gaussian_field import GaussianField
from gaussian_field.lattice import base_positions
from sr_model.files.official_import import OFFICIAL_KEY_MAP
from sr_model.networks.covariance_dictionary import load_dictionary, official_kernels
from sr_model.networks.model import ContinuousSR, build_model
from sr_model.networks.presets import ConfigError, ModelConfig, preset

#: Small transformer encoders for fast tests (the golden files use the same sizes).
SMALL = dict(embed_dim=30, depths=(1,), num_heads=(2,), window_size=4, img_size=16)


def lr_batch(photo, size=12, names=("astronaut", "coffee")):
    crops = [photo(name, top=60, left=90, size=size * 4)[::4, ::4] for name in names]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().contiguous()


def sharpen(model: ContinuousSR, seed: int = 0) -> ContinuousSR:
    """Random init gives near-uniform mixes and tiny offsets; scale the last layers (as the golden files did)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        model.covariance_head.mlp_vector.layers[-1].weight.mul_(128)
        if model.offset_head is not None:
            last = model.offset_head.mlp.layers[-1]
            if not last.weight.any():  # an anchored model starts with zero offsets (sr_model.networks.color_anchor)
                last.reset_parameters()
            last.weight.mul_(64)
    return model.eval()


@pytest.fixture(scope="module")
def swinir_preset_model():
    torch.manual_seed(0)
    return build_model(preset("swinir"), "official")


def test_swinir_preset_heads_equal_official_shapes_and_counts(swinir_preset_model, golden_dir):
    official = torch.load(golden_dir / "continuoussr_swinir_small.pt")["state_dict"]
    ours = swinir_preset_model.state_dict()
    heads = [k for k in official if not k.startswith("encoder.")]
    assert len(heads) == 2 + 10 + 12 + 12
    counts = {}
    for key in heads:
        mapped = next(new + key[len(old) :] for old, new in OFFICIAL_KEY_MAP if key.startswith(old))
        assert tuple(ours[mapped].shape) == tuple(official[key].shape), key
        counts[key.split(".")[0]] = counts.get(key.split(".")[0], 0) + official[key].numel()
    assert counts == {"conv1": 1_180_160, "mlp_vector": 920_576, "mlp": 960_643, "mlp_offset": 960_578}
    model = swinir_preset_model
    assert sum(p.numel() for p in model.covariance_head.parameters()) == 1_180_160 + 920_576
    assert sum(p.numel() for p in model.color_head.parameters()) == 960_643
    assert sum(p.numel() for p in model.offset_head.parameters()) == 960_578


def test_swinir_preset_encoder_is_classical_swinir_x4(swinir_preset_model):
    """SwinIR classical x4 (embed 180, 6x6, window 8) has 11.9M parameters, conv_last included; ours drops it."""
    enc = swinir_preset_model.encoder
    n = sum(p.numel() for p in enc.parameters())
    assert not hasattr(enc, "conv_last")
    assert round((n + 64 * 3 * 9 + 3) / 1e6, 2) == 11.90
    assert enc.layers[0].residual_group.blocks[1].attn_mask.shape == (36, 64, 64)  # img_size 48, as upstream


@pytest.mark.parametrize("encoder", ["lite", "swinir", "hat"])
def test_encode_layout_and_bounded_offsets(encoder, photo):
    config = preset(encoder, **({} if encoder == "lite" else SMALL))
    model = sharpen(build_model(config, "official"))
    lr = lr_batch(photo, size=10)
    with torch.no_grad():
        field = model.encode(lr)
        parts = model.gaussians(lr)
    assert isinstance(field, GaussianField)
    assert (field.h, field.w, field.k, field.batch_size, field.num_gaussians) == (10, 10, 2, 2, 400)
    offsets = field.means - base_positions(10, 10, 2, dtype=torch.float32)
    assert torch.equal(offsets, field.means - field.base_positions())
    assert float(offsets.abs().max()) <= 1.0
    assert float(offsets.abs().max()) > 0.05  # the sharpened head really drifts
    torch.testing.assert_close(field.chol, parts["mixed"] / 4.0)


def test_mixed_cholesky_stays_inside_dictionary_hull(tmp_path, photo):
    rng = np.random.default_rng(3)
    kernels = np.abs(rng.normal(1.0, 0.6, size=(40, 3))).astype(np.float32)
    kernels[:, 1] -= 0.8
    np.save(tmp_path / "dict.npy", kernels)
    model = sharpen(build_model(preset("lite"), tmp_path / "dict.npy"))
    with torch.no_grad():
        mixed = model.gaussians(lr_batch(photo))["mixed"].reshape(-1, 3).double().numpy()
    hull = ConvexHull(kernels.astype(np.float64))
    inside = hull.equations[:, :3] @ mixed.T + hull.equations[:, 3:4]
    assert inside.max() <= 1e-5
    spread = mixed.max(0) - mixed.min(0)
    assert (spread > 0.3).all()  # sharp mixes spread over the hull, not one averaged triplet


def test_mixing_weights_are_a_softmax_over_the_dictionary(photo):
    model = sharpen(build_model(preset("lite"), "official"))
    with torch.no_grad():
        feat = model.features(lr_batch(photo))
        weights = model.covariance_head.weights(feat, model.dictionary)
        mixed = model.covariance_head(feat, model.dictionary)
    assert weights.shape == (2, 730, feat.shape[-2] * feat.shape[-1])
    assert float(weights.min()) >= 0
    torch.testing.assert_close(weights.sum(1), torch.ones_like(weights[:, 0]))
    torch.testing.assert_close(mixed, weights.transpose(1, 2) @ official_kernels())


def test_fixed_centres_ablation(photo):
    model = build_model(preset("lite", positions="fixed"), "official").eval()
    assert model.offset_head is None
    with torch.no_grad():
        field = model.encode(lr_batch(photo))
    assert torch.equal(field.means[0], field.base_positions())


def test_free_covariance_ablation_has_no_dictionary(photo):
    model = build_model(preset("lite", covariance="free"), "official").eval()
    assert model.dictionary is None and "dictionary" not in model.state_dict()
    with torch.no_grad():
        field = model.encode(lr_batch(photo))
    field.check()  # positive diagonals by construction
    assert float(field.chol[..., 1].abs().max()) > 0


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("lite", {}),
        ("lite", {"positions": "fixed"}),
        ("lite", {"covariance": "free"}),
        ("swinir", SMALL),
        ("hat", SMALL),
    ],
)
def test_every_parameter_gets_a_gradient(name, overrides, photo):
    """No dead parameters (DDP needs none unused): an L1 loss on a render reaches every weight."""
    model = build_model(preset(name, **overrides), "official").train()
    hr = torch.from_numpy(photo("chelsea", top=40, left=60, size=24)).permute(2, 0, 1)[None].float()
    lr = torch.nn.functional.avg_pool2d(hr, 3)
    loss = (model(lr, scale=3) - hr).abs().mean()
    loss.backward()
    if model.config.color_anchor == "lr":  # zeroed last layers: the layers before them see gradients from step 2
        with torch.no_grad():
            for p in model.parameters():
                p -= 1e-3 * p.grad.sign()
        model.zero_grad()
        (model(lr, scale=3) - hr).abs().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    if name == "lite":  # (HAT's 1-channel channel-attention squeeze may sit in a dead ReLU at random init)
        assert all(float(p.grad.abs().sum()) > 0 for p in model.parameters())


@pytest.mark.parametrize("offset_input", ["raw", "leaky_relu"])
def test_batch_items_are_independent(offset_input, photo):
    """Upstream's refactor mixed images across the batch in the offset head; ours must not."""
    model = sharpen(build_model(preset("hat", offset_input=offset_input, **SMALL), "official"))
    lr = lr_batch(photo, size=9)
    with torch.no_grad():
        both = model.encode(lr)
        one = model.encode(lr[1:])
    torch.testing.assert_close(both.means[1], one.means[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(both.colors[1], one.colors[0], atol=2e-6, rtol=0)


def test_forward_renders_scale_size_and_anisotropic(photo):
    model = build_model(preset("lite"), "official").eval()
    lr = lr_batch(photo, size=8)
    with torch.no_grad():
        assert model(lr, scale=2.5).shape == (2, 3, 20, 20)
        assert model(lr, scale=(2, 3)).shape == (2, 3, 16, 24)
        assert model(lr, size=(11, 13)).shape == (2, 3, 11, 13)
        field = model.encode(lr)
        torch.testing.assert_close(model(lr, scale=3), field.render(scale=3))


@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (1, 3, 2, 3), (2, 3, 9, 4)])
def test_transformer_encoders_take_any_size(shape):
    """Reflect padding to the window (replicate when the image is smaller than the pad)."""
    model = build_model(preset("swinir", **SMALL), "official").eval()
    lr = torch.rand(shape)
    with torch.no_grad():
        feat = model.encoder(lr)
        field = model.encode(lr)
    assert feat.shape == (shape[0], 64, 4 * shape[2], 4 * shape[3])
    assert field.num_gaussians == 4 * shape[2] * shape[3]


def test_bad_inputs_are_clear_errors():
    model = build_model(preset("lite"), "official")
    cases = [
        (torch.rand(3, 8, 8), "(B, 3, h, w)"),
        (torch.rand(1, 1, 8, 8), "(B, 3, h, w)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float"),
        (torch.rand(1, 3, 0, 8), "empty"),
        (torch.full((1, 3, 4, 4), float("nan")), "NaN"),
    ]
    for lr, words in cases:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            model.encode(lr)
    with pytest.raises(ValueError, match="scale"):
        model(torch.rand(1, 3, 4, 4), scale=0)


def test_presets_and_config_errors():
    assert preset("lite").encoder == "lite" and preset("hat").window_size == 16
    cfg = preset("swinir", positions="fixed", depths=[2, 2], num_heads=[6, 6])
    assert cfg.depths == (2, 2) and ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("edsr")
    with pytest.raises(ConfigError, match="unknown model config fields"):
        preset("lite", widht=3)
    with pytest.raises(ConfigError, match="offset_input"):
        preset("lite", offset_input="relu")
    with pytest.raises(ConfigError, match="same length"):
        preset("swinir", depths=(6, 6), num_heads=(6,))
    with pytest.raises(ConfigError, match="HAT needs"):
        preset("hat", embed_dim=24, num_heads=(6,) * 6)
    with pytest.raises(ConfigError, match="needs a dictionary"):
        ContinuousSR(preset("lite"), None)
    with pytest.raises(ConfigError, match="newer"):
        ModelConfig.from_dict({**cfg.to_dict(), "future_field": 1})


def test_build_model_reads_a_dictionary_source(tmp_path):
    np.save(tmp_path / "d.npy", official_kernels().numpy()[:10] + 0.5)
    model = build_model(preset("lite"), tmp_path / "d.npy")
    assert model.dictionary.shape == (10, 3) and model.reference_scale == 4.0
    assert model.dictionary_provenance["method"] == "npy"
    assert model.dictionary_provenance["content_hash"] == load_dictionary(tmp_path / "d.npy").provenance["content_hash"]
