"""Our checkpoints: plain (weights_only) files that rebuild the same model, carry their dictionary's
provenance, and refuse damaged or foreign files with a clear message."""

import numpy as np
import pytest
import torch

from sr_model.files.checkpoint import (
    CheckpointError,
    checkpoint_payload,
    read_checkpoint,
    save_checkpoint,
    tensor_digest,
)
from sr_model.files.model_files import load_network
from sr_model.files.official_import import OfficialCheckpointError
from sr_model.networks.model import build_model
from sr_model.networks.presets import preset


def lr_image(photo, size=10):
    return torch.from_numpy(photo("rocket", top=100, left=200, size=size * 3)[::3, ::3].copy()).permute(2, 0, 1)[None]


@pytest.fixture
def npy_dictionary(tmp_path):
    rng = np.random.default_rng(0)
    kernels = np.abs(rng.normal(1.0, 0.5, size=(25, 3))).astype(np.float32)
    np.save(tmp_path / "dictionary.npy", kernels)
    return tmp_path / "dictionary.npy"


@pytest.mark.parametrize("overrides", [{}, {"covariance": "free"}, {"positions": "fixed"}])
def test_round_trip_rebuilds_the_same_model(overrides, npy_dictionary, tmp_path, photo):
    torch.manual_seed(1)
    model = build_model(preset("lite", **overrides), npy_dictionary).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(lr_image(photo).float(), scale=2).mean().backward()
    optimizer.step()
    path = save_checkpoint(
        tmp_path / "run" / "last.pt", model, step=7, optimizer=optimizer.state_dict(), history=[{"psnr": 30.5}]
    )
    assert not list(path.parent.glob("*.partial"))
    plain = torch.load(path, weights_only=True)
    assert plain["step"] == 7 and plain["history"] == [{"psnr": 30.5}]
    back = load_network(path)
    assert back.config == model.config and not back.training
    assert back.dictionary_provenance == model.dictionary_provenance
    for (name, a), (name_b, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name
    lr = lr_image(photo).float()
    with torch.no_grad():
        assert torch.equal(model.encode(lr).means, back.encode(lr).means)
        assert torch.equal(model(lr, scale=3), back(lr, scale=3))
    restored = torch.optim.Adam(back.parameters(), lr=1e-3)
    restored.load_state_dict(plain["optimizer"])


def test_dictionary_provenance_is_recorded(npy_dictionary, tmp_path):
    model = build_model(preset("lite"), npy_dictionary)
    data = read_checkpoint(save_checkpoint(tmp_path / "c.pt", model))
    info = data["dictionary"]
    assert info["size"] == 25 and info["reference_scale"] == 4.0
    assert info["provenance"]["method"] == "npy" and info["provenance"]["source"] == str(npy_dictionary)
    assert info["provenance"]["content_hash"].startswith("sha256:")
    assert torch.equal(data["state_dict"]["dictionary"], torch.from_numpy(np.load(npy_dictionary)))


def test_extras_must_be_plain(tmp_path):
    model = build_model(preset("lite"), "official")
    with pytest.raises(TypeError, match="plain"):
        save_checkpoint(tmp_path / "c.pt", model, note=np.zeros(3))
    with pytest.raises(TypeError, match="reserved"):
        checkpoint_payload(model, config={})
    assert not list(tmp_path.iterdir())


def sealed(data: dict) -> dict:
    """`data` with a digest of its present contents, as a file edited by someone who recomputed it."""
    return {**data, "digest": tensor_digest({k: v for k, v in data.items() if k != "digest"})}


def test_damaged_and_foreign_files_are_refused(tmp_path):
    model = build_model(preset("lite"), "official")
    good = save_checkpoint(tmp_path / "good.pt", model)
    (tmp_path / "text.pt").write_text("hello")
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[:5000])
    torch.save({"model": {"name": "continuous-gaussian"}}, tmp_path / "official.pt")
    data = torch.load(good, weights_only=True)
    torch.save({**data, "version": 99}, tmp_path / "newer.pt")
    tampered = {**data, "state_dict": {**data["state_dict"], "dictionary": data["state_dict"]["dictionary"] * 2}}
    torch.save(tampered, tmp_path / "edited.pt")  # its digest no longer matches
    torch.save(sealed(tampered), tmp_path / "tampered.pt")  # edited and given a new digest: the deeper checks
    wrong = {**data, "config": {**data["config"], "cov_dim": 48}}
    torch.save(sealed(wrong), tmp_path / "wrong.pt")
    no_weights = {k: v for k, v in data.items() if k != "state_dict"}
    torch.save(no_weights, tmp_path / "no_weights.pt")
    torch.save({"state_dict": data["state_dict"]}, tmp_path / "bare.pt")
    cases = {
        "text.pt": "not a readable",
        "cut.pt": "not a readable",
        "bare.pt": "not a model file",
        "newer.pt": "newer",
        "edited.pt": "is damaged: its contents do not match the digest",
        "tampered.pt": "hash",
        "wrong.pt": "do not fit",
        "no_weights.pt": "damaged",
    }
    for name, words in cases.items():
        with pytest.raises(CheckpointError, match=words):
            load_network(tmp_path / name)
    with pytest.raises(OfficialCheckpointError, match="unsupported encoder"):  # read as official, and refused
        load_network(tmp_path / "official.pt")
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.pt")
    assert isinstance(CheckpointError("x"), ValueError)  # the CLI turns it into `error: ...`, exit 2


def test_store_dictionary_travels_into_the_checkpoint(tmp_path):
    """A model built from a prior store keeps the store's dictionary and provenance through a checkpoint."""
    from prior_store.dictionary import write_dictionary
    from tests.test_prior_stats import make_store

    store = tmp_path / "prior.zarr"
    make_store(store, crops=4, crop=16, chunk=4)
    kernels = np.array([[1.2, 0.1, 0.9], [0.4, -0.5, 1.6], [2.0, 0.3, 0.2]], dtype=np.float32)
    record = write_dictionary(
        store, kernels, {"method": "grid", "crop_count": 4, "quantiles": [0.01, 0.99], "seed": None}
    )
    model = build_model(preset("lite"), store)
    back = load_network(save_checkpoint(tmp_path / "c.pt", model))
    assert torch.equal(back.dictionary, torch.from_numpy(kernels)) and back.reference_scale == 4.0
    provenance = back.dictionary_provenance
    assert provenance["source"] == str(store) and provenance["method"] == "grid"
    assert provenance["content_hash"] == record["content_hash"] and provenance["crop_count"] == 4
