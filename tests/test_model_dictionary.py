"""The covariance dictionary: the official constant and `load_dictionary` sources."""

import sys
import types

import numpy as np
import pytest
import torch

from sr_model.networks.covariance_dictionary import (
    DictionaryError,
    content_hash,
    load_dictionary,
    official_dictionary,
    official_kernels,
)


def test_official_dictionary_is_the_upstream_constant(golden_model):
    kernels = official_kernels()
    assert kernels.shape == (730, 3) and kernels.dtype == torch.float32
    assert torch.equal(kernels, golden_model["gau_dict"])
    assert kernels[0].tolist() == pytest.approx([0.0, -0.86, 0.0])
    assert kernels[81].tolist() == pytest.approx([0.41, -0.86, 0.0])  # cho1 varies slowest
    assert kernels[-1].tolist() == [0.0, 0.0, 0.0]
    official = load_dictionary("official")
    assert official.reference_scale == 4.0 and official.size == 730
    assert official.provenance == official_dictionary().provenance
    assert official.provenance["method"] == "official"


def test_npy_source(tmp_path):
    kernels = np.array([[1.0, 0.2, 0.9], [0.5, -0.3, 1.5]], dtype=np.float64)
    np.save(tmp_path / "d.npy", kernels)
    loaded = load_dictionary(tmp_path / "d.npy", reference_scale=2)
    assert loaded.kernels.dtype == torch.float32 and torch.equal(loaded.kernels, torch.tensor(kernels).float())
    assert loaded.reference_scale == 2.0 and loaded.provenance["source"] == str(tmp_path / "d.npy")
    assert loaded.provenance["content_hash"] == content_hash(loaded.kernels, 2.0)
    assert content_hash(loaded.kernels, 2.0) != content_hash(loaded.kernels, 4.0)
    assert load_dictionary(str(tmp_path / "d.npy")).reference_scale == 4.0


def test_bad_sources_are_clear_errors(tmp_path):
    np.save(tmp_path / "flat.npy", np.ones(6, dtype=np.float32))
    np.save(tmp_path / "nan.npy", np.array([[1.0, 0.0, np.nan]], dtype=np.float32))
    np.save(tmp_path / "neg.npy", np.array([[-1.0, 0.0, 1.0]], dtype=np.float32))
    np.save(tmp_path / "zero.npy", np.zeros((4, 3), dtype=np.float32))
    np.save(tmp_path / "int.npy", np.ones((4, 3), dtype=np.int64))
    (tmp_path / "d.txt").write_text("1 2 3")
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    cases = {
        "flat.npy": "shape",
        "nan.npy": "NaN",
        "neg.npy": ">= 0",
        "zero.npy": "positive diagonal",
        "int.npy": "floats",
        "d.txt": ".npy",
        "broken.npy": "not a readable",
    }
    for name, words in cases.items():
        with pytest.raises(DictionaryError, match=words):
            load_dictionary(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="official"):
        load_dictionary(tmp_path / "missing.npy")
    np.save(tmp_path / "good.npy", np.ones((2, 3), dtype=np.float32))
    with pytest.raises(DictionaryError, match="reference scale"):
        load_dictionary(tmp_path / "good.npy", reference_scale=-1)


def test_store_source_goes_through_read_dictionary(tmp_path, monkeypatch):
    """The store branch calls prior_store.dictionary.read_dictionary (stubbed here: the stage-2 reader's contract)."""
    calls = []

    def read_dictionary(path):
        calls.append(path)
        return np.array([[1.0, 0.1, 1.2], [0.6, 0.0, 0.7]], dtype=np.float32), {
            "reference_scale": np.float64(3.0),
            "method": "kmeans",
            "content_hash": "abc",
            "crops": np.int64(12),
        }

    stub = types.ModuleType("prior_store.dictionary")
    stub.read_dictionary = read_dictionary
    monkeypatch.setitem(sys.modules, "prior_store.dictionary", stub)
    store = tmp_path / "prior.zarr"
    store.mkdir()
    loaded = load_dictionary(store)
    assert calls == [store] and loaded.size == 2 and loaded.reference_scale == 3.0
    assert loaded.provenance == {
        "reference_scale": 3.0,
        "method": "kmeans",
        "content_hash": "abc",
        "crops": 12,
        "source": str(store),
    }
    assert all(type(v) in (str, float, int) for v in loaded.provenance.values())
    with pytest.raises(DictionaryError, match="reference scale 3"):
        load_dictionary(store, reference_scale=4)
