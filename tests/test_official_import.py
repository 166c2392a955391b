"""Official checkpoints: importing the golden models' state dicts reproduces their Gaussians and renders."""

import math

import pytest
import torch
from click.testing import CliRunner

from sr_model.files.checkpoint import read_checkpoint
from sr_model.files.model_files import load_network
from sr_model.files.official_import import OfficialCheckpointError, import_official
from sr_model.networks.covariance_dictionary import official_kernels
from workflows.cli import cli

#: The scales stored per golden file, as our API takes them: s or (s_h, s_w).
SCALES = {"x4": 4.0, "x2.5": 2.5, "h3_w5": (3.0, 5.0)}


def write_official(golden: dict, path, **changes):
    """The golden model in the released checkpoint layout: {'model': {'name', 'args', 'sd'}}."""
    spec = {**golden["model_spec"], "sd": golden["state_dict"], **changes}
    torch.save({"model": spec, "epoch": 1000}, path)
    return path


@pytest.fixture(scope="module")
def imported(golden_model, tmp_path_factory):
    """(golden dict, our model imported from it, the checkpoint dict) per golden file."""
    tmp = tmp_path_factory.mktemp("official")
    out = import_official(write_official(golden_model, tmp / "official.pth"), tmp / "ours.pt").path
    return golden_model, load_network(out), read_checkpoint(out)


@pytest.fixture(scope="module")
def encoded(imported):
    """The imported model's field of the golden LR image (encoded once per golden file)."""
    golden, model, _ = imported
    with torch.no_grad():
        return model.encode(golden["lr"])


def test_golden_heads_and_encoder(imported):
    golden, model, _ = imported
    with torch.no_grad():
        encoded = model.encoder(golden["lr"])
        parts = model.gaussians(golden["lr"])
    assert tuple(encoded.shape) == golden["encoder_out_shape"]
    torch.testing.assert_close(encoded[:, :, 64:80, 80:96], golden["encoder_out_crop"], atol=2e-6, rtol=0)
    torch.testing.assert_close(parts["mixed"][0], golden["para"], atol=5e-5, rtol=0)
    torch.testing.assert_close(parts["offset"][0], golden["offset_tanh"], atol=1e-5, rtol=0)
    torch.testing.assert_close(parts["color"][0], golden["color"], atol=1e-5, rtol=0)


def test_golden_field_in_lr_pixels(imported, encoded):
    golden, field = imported[0], encoded
    lr = golden["field_lr"]
    assert (field.h, field.w, field.k) == (20, 24, 2)
    torch.testing.assert_close(field.base_positions().double(), lr["base_lr_px"], atol=0, rtol=0)
    torch.testing.assert_close(field.means[0].double(), lr["mean_lr_px"], atol=2e-5, rtol=0)
    torch.testing.assert_close(field.chol[0].double(), lr["L_lr"], atol=2e-5, rtol=0)
    torch.testing.assert_close(field.covariance()[0].double(), lr["cov_lr_px2"], atol=2e-5, rtol=0)


@pytest.mark.parametrize("name", sorted(SCALES))
def test_golden_rasterizer_inputs_every_scale(imported, encoded, name):
    """Our LR field, mapped to each scale, gives the official per-scale Gaussians (HEAD scaling S L)."""
    golden, field = imported[0], encoded
    case = golden["scales"][name]
    s_h, s_w = case["scale_h"], case["scale_w"]
    means, chol = field.means[0].double(), field.chol[0].double()
    mean_hr = means * torch.tensor([s_w, s_h], dtype=torch.float64)
    l_hr = chol * torch.tensor([s_w, s_h, s_h], dtype=torch.float64)
    xys_norm = (
        2 * means / torch.tensor([24.0, 20.0], dtype=torch.float64)
        - 1
        - torch.tensor([1 / case["W"], 1 / case["H"]], dtype=torch.float64)
    )
    sigma = (
        field.covariance()[0].double()
        * torch.tensor([s_w, s_h], dtype=torch.float64)[:, None]
        * torch.tensor([s_w, s_h], dtype=torch.float64)[None, :]
    )
    torch.testing.assert_close(mean_hr, case["mean_hr_px"], atol=5e-5, rtol=0)
    torch.testing.assert_close(xys_norm, case["xys_norm"].double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(l_hr, case["L_elements"].double(), atol=5e-5, rtol=0)
    torch.testing.assert_close(sigma, case["cov_hr_px2"], atol=5e-5, rtol=0)
    torch.testing.assert_close(field.colors[0], case["colors"], atol=1e-5, rtol=0)


def test_legacy_anisotropic_scaling_is_not_ours(imported, encoded):
    """482ec14 scaled l21 by s_w; HEAD (and we) by s_h. They differ at 3x5 by up to 5/3 on l21."""
    golden = imported[0]
    legacy = golden["scales"]["h3_w5_legacy_l21_times_scale_w"]["L_elements"]
    head = golden["scales"]["h3_w5"]["L_elements"]
    l21_hr = encoded.chol[0, :, 1] * 3.0
    assert float((l21_hr - head[:, 1]).abs().max()) < 5e-5
    assert float((l21_hr - legacy[:, 1]).abs().max()) > 0.1


@pytest.mark.parametrize("name", sorted(SCALES))
def test_golden_render_every_scale(imported, encoded, name):
    """The reference render, from the encoded field (x4 also through model(lr, scale), the one-call path)."""
    golden, model, _ = imported
    case = golden["scales"][name]
    with torch.no_grad():
        got = (model(golden["lr"], scale=4.0) if name == "x4" else encoded.render(scale=SCALES[name]))[0].double()
    assert tuple(got.shape[-2:]) == (case["H"], case["W"])
    diff = (got - case["render"]).abs()
    mask = case["render_near_threshold_mask"]
    assert float(diff[:, ~mask].max()) < 1e-4
    assert float((diff * mask).max()) <= 1e-4 + case["render_near_threshold_max_jump"]


def test_leaky_relu_offset_variant_matches_upstream_head(golden_model, tmp_path):
    source = write_official(golden_model, tmp_path / "official.pth")
    model = load_network(import_official(source, tmp_path / "ours.pt", offset_input="leaky_relu").path)
    assert model.config.offset_input == "leaky_relu"
    with torch.no_grad():
        offset = model.gaussians(golden_model["lr"])["offset"][0]
    torch.testing.assert_close(offset, golden_model["offset_tanh_head_variant"], atol=1e-5, rtol=0)
    assert float((offset - golden_model["offset_tanh"]).abs().max()) > 0.1


def test_imported_checkpoint_records_dictionary_and_source(imported):
    golden, model, data = imported
    assert torch.equal(model.dictionary, official_kernels())
    assert torch.equal(golden["gau_dict"], official_kernels())
    assert model.reference_scale == 4.0 and data["dictionary"]["provenance"]["method"] == "official"
    assert data["imported_from"]["file"] == "official.pth" and len(data["imported_from"]["sha256"]) == 64
    assert data["imported_from"]["dropped_keys"] == ["encoder.conv_last.weight", "encoder.conv_last.bias"]
    assert data["config"]["encoder"] == golden["encoder_spec"]["name"]
    for key in ("embed_dim", "window_size", "mlp_ratio"):
        assert math.isclose(data["config"][key], golden["encoder_spec"]["args"][key])
    assert data["config"]["depths"] == tuple(golden["encoder_spec"]["args"]["depths"])
    assert data["config"]["offset_input"] == "raw"


def test_encoder_settings_come_from_the_weights_not_the_args(golden_model, tmp_path):
    """Upstream's swinir factory ignores its args; a misleading spec still imports the real network."""
    spec = {
        **golden_model["model_spec"]["args"],
        "encoder_spec": {"name": golden_model["encoder_spec"]["name"], "args": {"embed_dim": 180}},
    }
    source = write_official(golden_model, tmp_path / "official.pth", args=spec)
    model = load_network(import_official(source, tmp_path / "ours.pt").path)
    assert model.config.embed_dim == 60
    with torch.no_grad():
        torch.testing.assert_close(
            model.gaussians(golden_model["lr"])["color"][0], golden_model["color"], atol=1e-5, rtol=0
        )


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_imports_and_keeps_existing_output(golden_dir, tmp_path):
    golden = torch.load(golden_dir / "continuoussr_hat_small.pt")
    source = write_official(golden, tmp_path / "ContinuousSR.pth")
    result = run("import-official", source, "--out", tmp_path / "hat.pt")
    assert result.exit_code == 0, result.output
    assert "hat encoder (embed 60, depths 2x2, window 8)" in result.output and "offset head input: raw" in result.output
    before = (tmp_path / "hat.pt").read_bytes()
    again = run("import-official", source, "--out", tmp_path / "hat.pt", "--offset-input", "leaky_relu")
    assert again.exit_code == 2 and again.output.startswith("error: ") and "--force" in again.output
    assert (tmp_path / "hat.pt").read_bytes() == before
    forced = run("import-official", source, "--out", tmp_path / "hat.pt", "--offset-input", "leaky_relu", "--force")
    assert forced.exit_code == 0, forced.output
    assert load_network(tmp_path / "hat.pt").config.offset_input == "leaky_relu"


def test_foreign_files_are_refused_with_one_line(golden_dir, tmp_path):
    golden = torch.load(golden_dir / "continuoussr_swinir_small.pt")
    hat = torch.load(golden_dir / "continuoussr_hat_small.pt")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    torch.save({"state_dict": golden["state_dict"]}, tmp_path / "bare.pth")
    torch.save({"model": {"name": "liif", "args": {}, "sd": {}}}, tmp_path / "liif.pth")
    write_official(golden, tmp_path / "edsr.pth", args={"encoder_spec": {"name": "edsr-baseline", "args": {}}})
    write_official(golden, tmp_path / "mislabelled.pth", sd=hat["state_dict"])
    write_official(golden, tmp_path / "nosd.pth", sd={})
    heads_cut = {k: v for k, v in golden["state_dict"].items() if not k.startswith("mlp_offset.")}
    write_official(golden, tmp_path / "cut.pth", sd=heads_cut)
    cases = {
        "missing.pth": "not found",
        "text.pth": "not a readable",
        "bare.pth": "not a ContinuousSR",
        "liif.pth": "not a ContinuousSR",
        "edsr.pth": "unsupported encoder",
        "mislabelled.pth": "not a swinir",
        "nosd.pth": "no state dict",
        "cut.pth": "do not fit",
    }
    for name, words in cases.items():
        out = tmp_path / f"out_{name}.pt"
        result = run("import-official", tmp_path / name, "--out", out)
        assert result.exit_code == 2, (name, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], (name, result.output)
        assert not out.exists() and not list(tmp_path.glob("*.partial"))
    with pytest.raises(OfficialCheckpointError):
        import_official(tmp_path / "liif.pth", tmp_path / "x.pt")
