"""Model files: safetensors exports (bit-exact, no pickle), the bundled default weights, official .pth files
given straight to the verbs, and one loader for all of them."""

import json
import pickle
import socket

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from gaussian_field.image_io import read_image, write_image
from sr_model import api, weights
from sr_model.files.checkpoint import read_checkpoint, save_checkpoint
from sr_model.files.export import METADATA_KEY, ExportError, export_digest, is_safetensors
from sr_model.files.model_files import export_file, load_file, load_network
from sr_model.files.official_import import import_official
from sr_model.networks.presets import ConfigError
from tests.cli_checks import one_error_line
from tests.test_official_import import write_official
from tests.test_tiling import tiny_model
from workflows.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def crop_tensor(photo, name="astronaut", size=(20, 24)):
    crop = photo(name, top=60, left=200, size=max(size))[: size[0], : size[1]]
    return torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).permute(2, 0, 1)[None]


@pytest.fixture()
def trained_checkpoint(tmp_path):
    """A checkpoint as training writes it: weights plus step, optimiser state and a training config."""
    model = tiny_model("lite", seed=3)
    optimizer = torch.optim.Adam(model.parameters())
    return save_checkpoint(
        tmp_path / "best.pt",
        model,
        step=1200,
        optimizer=optimizer.state_dict(),
        train_config={"images": [str(tmp_path / "photos")], "steps": 3000},
    )


def test_export_round_trips_bit_for_bit(trained_checkpoint, tmp_path):
    result = run("export", trained_checkpoint, tmp_path / "lite.safetensors")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{tmp_path / 'lite.safetensors'}  from checkpoint best.pt")
    saved = read_checkpoint(trained_checkpoint)["state_dict"]
    loaded = load_network(trained_checkpoint).state_dict()
    with safe_open(str(tmp_path / "lite.safetensors"), "pt") as fh:
        exported = {key: fh.get_tensor(key) for key in fh.keys()}
        document = json.loads(fh.metadata()[METADATA_KEY])
    assert sorted(exported) == sorted(saved) == sorted(loaded)
    for key, tensor in loaded.items():  # same dtype, shape and bits as the loaded model; no optimiser state
        assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key
        assert torch.equal(exported[key], saved[key].to(tensor.dtype)), key
    back = load_network(tmp_path / "lite.safetensors")
    assert all(v.dtype == loaded[k].dtype and torch.equal(v, loaded[k]) for k, v in back.state_dict().items())
    assert back.config == load_network(trained_checkpoint).config
    assert document["config"]["lite_channels"] == back.config.lite_channels
    assert document["dictionary"]["provenance"]["method"] == "official" and document["dictionary"]["size"] == 730
    source = document["source"]
    assert source["kind"] == "checkpoint" and source["file"] == "best.pt" and source["step"] == 1200
    assert len(source["sha256"]) == 64 and "optimizer" not in source
    assert source["train_config"]["images"] == ["photos"]  # absolute paths reduced to their last part
    # exporting the export again gives the same bytes (one metadata document, sorted keys)
    export_file(tmp_path / "lite.safetensors", tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == (tmp_path / "lite.safetensors").read_bytes()


def test_export_loads_without_unpickling(trained_checkpoint, tmp_path, photo, monkeypatch):
    export_file(trained_checkpoint, tmp_path / "lite.safetensors")
    lr = crop_tensor(photo)
    with torch.no_grad():
        want = load_network(trained_checkpoint)(lr, scale=2.5)

    def refuse(*args, **kwargs):
        raise AssertionError("an export must load without torch.load or pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert is_safetensors(tmp_path / "lite.safetensors") and not is_safetensors(trained_checkpoint)
    with torch.no_grad():
        got = load_network(tmp_path / "lite.safetensors")(lr, scale=2.5)
    assert torch.equal(got, want)


def _rewrite(source, target, change):
    """A copy of an export with its metadata document changed by `change(document)` and its digest recomputed
    (as by a tool that knows the format), so the checks behind the digest are reached."""
    with safe_open(str(source), "pt") as fh:
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}
        document = json.loads(fh.metadata()[METADATA_KEY])
    change(document)
    document["digest"] = export_digest(tensors, document)
    save_file(tensors, str(target), metadata={METADATA_KEY: json.dumps(document)})
    return target


def test_foreign_and_damaged_exports_are_refused(trained_checkpoint, tmp_path):
    good = export_file(trained_checkpoint, tmp_path / "good.safetensors").path
    unknown = _rewrite(good, tmp_path / "unknown.safetensors", lambda d: d["config"].update(colour_anchor="lr"))
    with pytest.raises(ConfigError, match="colour_anchor"):  # never dropped silently
        load_network(unknown)
    cases = {
        "newer": (lambda d: d.update(version=99), "newer pixel2gauss"),
        "extra": (lambda d: d.update(card="x"), "unknown export metadata field 'card'"),
        "nosource": (lambda d: d.pop("source"), "no 'source' entry"),
        "notours": (lambda d: d.update(format="other"), "not a pixel2gauss-export"),
        "weights": (lambda d: d["config"].update(lite_channels=16), "do not fit"),
    }
    for name, (change, words) in cases.items():
        with pytest.raises(ExportError if name != "weights" else ValueError, match=words):
            load_network(_rewrite(good, tmp_path / f"{name}.safetensors", change))
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:4000])
    for name, words in (("plain", "without pixel2gauss metadata"), ("cut", "not a readable safetensors file")):
        result = run(
            "upscale",
            tmp_path / "img.png",
            "--checkpoint",
            tmp_path / f"{name}.safetensors",
            "--out",
            tmp_path / "out",
            "--scale",
            2,
        )
        assert words in one_error_line(result), name
    assert "exists" in one_error_line(run("export", trained_checkpoint, good))
    assert ".safetensors" in one_error_line(run("export", trained_checkpoint, tmp_path / "x.pt"))
    assert "not found" in one_error_line(run("export", tmp_path / "missing.pt", tmp_path / "y.safetensors"))
    assert not list(tmp_path.glob("*.partial"))


# ------------------------------------------------------------------------------------------- bundled weights
@pytest.fixture()
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("no network access allowed")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_bundled_model_loads_without_network_and_renders(no_network, photo, caplog):
    path = weights.bundled_path()
    assert path.parent == weights.WEIGHTS_DIR and path.stat().st_size < 8 * 2**20
    with caplog.at_level("INFO", logger="sr_model.api"):
        model = api.load_model()
    assert "using the bundled lite weights, sr_model/weights/lite.safetensors" in caplog.text
    assert "bundled lite weights" in repr(model) and model.model.config.preset == "lite"
    lr = crop_tensor(photo, "coffee")
    sr = model(lr, scale=3.7)
    assert sr.shape == (1, 3, 74, 89) and sr.dtype == torch.float32
    assert float(sr.min()) >= 0 and float(sr.max()) <= 1
    # it is a model of the image: the render, shrunk back, is near the input
    back = torch.nn.functional.interpolate(sr, size=(20, 24), mode="area")
    assert float((back - lr).abs().mean()) < 0.1


def test_verbs_use_the_bundled_model_and_say_so(tmp_path, photo):
    write_image(tmp_path / "coffee.png", photo("coffee", top=100, left=250, size=24))
    result = run("upscale", tmp_path / "coffee.png", "--out", tmp_path / "up", "--scale", 2)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "weights" in line]
    assert notes == ["no checkpoint named: using the bundled lite weights, sr_model/weights/lite.safetensors"]
    want = api.load_model().upscale(read_image(tmp_path / "coffee.png").astype(np.float32), 2)
    assert np.abs(read_image(tmp_path / "up" / "coffee_x2.png") - want).max() <= 0.5 / 255 + 1e-6
    evaluated = run("eval", "--images", tmp_path / "coffee.png", "--scales", 2)
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.output.startswith("no checkpoint named: using the bundled lite weights")
    assert "bundled lite weights, sr_model/weights/lite.safetensors vs bicubic" in evaluated.output


def test_missing_bundled_weights_are_one_line_errors(tmp_path, photo, monkeypatch):
    monkeypatch.setitem(weights.BUNDLED, "lite", "absent.safetensors")
    write_image(tmp_path / "coffee.png", photo("coffee", size=16))
    for args in (
        ("upscale", tmp_path / "coffee.png", "--out", tmp_path / "up", "--scale", 2),
        ("eval", "--images", tmp_path / "coffee.png", "--scales", 2),
    ):
        line = one_error_line(run(*args))
        assert "bundled lite weights are missing" in line and "--checkpoint" in line, line
    with pytest.raises(weights.BundledWeightsMissingError):
        api.load_model()
    assert not (tmp_path / "up").exists()


# ------------------------------------------------------------------------------------ official files directly
def test_official_pth_given_straight_to_upscale_matches_the_imported_model(golden_dir, tmp_path, photo):
    """One golden model (SwinIR) suffices here: both encoders' conversions are checked in test_official_import."""
    golden = torch.load(golden_dir / "continuoussr_swinir_small.pt")
    official = write_official(golden, tmp_path / "ContinuousSR.pth")
    imported = import_official(official, tmp_path / "imported.pt").path
    write_image(tmp_path / "rocket.png", photo("rocket", top=120, left=220, size=16)[:, :12])
    outputs = {}
    for name, model_file in (("direct", official), ("imported", imported)):
        result = run(
            "upscale",
            tmp_path / "rocket.png",
            "--checkpoint",
            model_file,
            "--out",
            tmp_path / name,
            "--scale",
            3.7,
            "--size",
            "30x20",
        )
        assert result.exit_code == 0, result.output
        outputs[name] = {p.name: p.read_bytes() for p in sorted((tmp_path / name).iterdir())}
    assert len(outputs["direct"]) == 2 and outputs["direct"] == outputs["imported"]
    # exported from the .pth directly: the imported model's weights, the import recorded
    exported = load_file(export_file(official, tmp_path / "official.safetensors").path)
    kept = load_network(imported).state_dict()
    assert exported.record["kind"] == "official" and exported.record["imported_from"]["file"] == "ContinuousSR.pth"
    assert exported.record["imported_from"]["sha256"] == read_checkpoint(imported)["imported_from"]["sha256"]
    assert all(torch.equal(v, kept[k]) for k, v in exported.model.state_dict().items())
