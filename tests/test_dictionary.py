"""The covariance dictionary: grid and sample methods, store I/O with provenance, .npy export, and the model's
loader reading both."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dgp_fitting.dictionary_sampling import (
    DictionaryRequestError,
    build_dictionary,
    ellipse_axes,
    grid_dictionary,
    grid_side,
    sample_dictionary,
)
from dgp_fitting.prior_plots import write_plots
from dgp_fitting.prior_stats import compute_statistics
from prior_store import StoreError, open_store
from prior_store.dictionary import (
    REQUIRED_PROVENANCE,
    DictionaryMissingError,
    content_hash,
    dictionary_line,
    dictionary_summary,
    export_npy,
    read_dictionary,
    write_dictionary,
)
from sr_model.networks.covariance_dictionary import content_hash as model_content_hash
from sr_model.networks.covariance_dictionary import load_dictionary
from tests.test_prior_stats import make_store
from workflows.cli import cli


@pytest.fixture(scope="module")
def store_and_stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("dict") / "prior.zarr"
    make_store(path, crops=12, crop=64, chunk=4, seed=7)
    stats = compute_statistics(path)
    stats.write(path)
    return path, stats


@pytest.mark.parametrize("size", [730, 344, 28])
def test_grid_has_the_requested_size_and_spans_the_quantile_interval(store_and_stats, size):
    _, stats = store_and_stats
    kernels, provenance = grid_dictionary(stats, size=size, quantiles=(0.01, 0.98), spacing="quantile")
    n = grid_side(size)
    assert kernels.shape == (size, 3) and kernels.dtype == np.float32
    np.testing.assert_array_equal(kernels[-1], [0, 0, 0])  # the zero kernel, last, as upstream
    body = kernels[:-1].reshape(n, n, n, 3)
    for i, name in enumerate(("l11", "l21", "l22")):
        values = np.unique(kernels[:-1, i])
        assert values.size == n
        lo, hi = stats.quantiles(name, (0.01, 0.98))
        assert values[0] == np.float32(lo) and values[-1] == np.float32(hi)
        # quantile spacing: the values sit at evenly spaced probability levels
        np.testing.assert_allclose(values, np.float32(stats.quantiles(name, np.linspace(0.01, 0.98, n))))
        assert provenance["values"][name] == [float(v) for v in values]
    # itertools.product order: l11 slowest, l22 fastest
    assert (body[:, 0, 0, 0] == np.unique(kernels[:-1, 0])).all()
    assert (body[0, 0, :, 2] == np.unique(kernels[:-1, 2])).all()
    assert (body[n - 1, :, 1, 0] == body[n - 1, 0, 0, 0]).all()
    assert provenance["method"] == "grid" and provenance["quantiles"] == [0.01, 0.98]
    assert provenance["seed"] is None and provenance["crop_count"] == 12


def test_linear_grid_spacing_is_even_in_value(store_and_stats):
    _, stats = store_and_stats
    kernels, _provenance = grid_dictionary(stats, size=126)  # linear is the default
    for i, name in enumerate(("l11", "l21", "l22")):
        values = np.unique(kernels[:-1, i]).astype(np.float64)
        np.testing.assert_allclose(np.diff(values), np.diff(values).mean(), rtol=1e-5)
        np.testing.assert_allclose(values[[0, -1]], stats.quantiles(name, (0.005, 0.995)), rtol=1e-6)


def test_bad_requests_are_clear_errors(store_and_stats):
    _, stats = store_and_stats
    with pytest.raises(DictionaryRequestError, match="n\\^3 \\+ 1.*try 344, 513, 730"):
        grid_dictionary(stats, size=500)
    with pytest.raises(DictionaryRequestError, match="0 <= low < high <= 1"):
        build_dictionary(stats, "grid", 730, quantiles=(0.9, 0.1))
    with pytest.raises(DictionaryRequestError, match="method"):
        build_dictionary(stats, "kmeans")
    with pytest.raises(DictionaryRequestError, match="at least one"):
        sample_dictionary(stats, size=0)


def test_sampled_kernels_are_valid_seeded_and_follow_the_fitted_normal(store_and_stats):
    _, stats = store_and_stats
    kernels, provenance = sample_dictionary(stats, size=4000, quantiles=(0.005, 0.995), seed=11)
    assert kernels.shape == (4000, 3) and kernels.dtype == np.float32
    lower = np.zeros((4000, 2, 2))
    lower[:, 0, 0], lower[:, 1, 0], lower[:, 1, 1] = kernels[:, 0], kernels[:, 1], kernels[:, 2]
    sigma = lower @ lower.transpose(0, 2, 1)
    assert (np.linalg.eigvalsh(sigma) > 0).all()  # positive (semi-)definite, every one
    for i, name in enumerate(("l11", "l21", "l22")):
        lo, hi = stats.quantiles(name, (0.005, 0.995))
        assert kernels[:, i].min() >= np.float32(lo) and kernels[:, i].max() <= np.float32(hi)
    mean, cov = stats.cholesky_normal_hr()
    np.testing.assert_allclose(kernels.mean(axis=0), mean, atol=0.05 * np.sqrt(np.diag(cov)).max())
    assert np.corrcoef(kernels.T.astype(np.float64))[0, 2] == pytest.approx(
        cov[0, 2] / np.sqrt(cov[0, 0] * cov[2, 2]), abs=0.05
    )
    again, _ = sample_dictionary(stats, size=4000, quantiles=(0.005, 0.995), seed=11)
    other, _ = sample_dictionary(stats, size=4000, quantiles=(0.005, 0.995), seed=12)
    assert again.tobytes() == kernels.tobytes() and other.tobytes() != kernels.tobytes()
    assert provenance["seed"] == 11 and 0.9 < provenance["acceptance"] <= 1.0
    with pytest.raises(DictionaryRequestError, match="widen --quantiles"):
        sample_dictionary(stats, size=10, quantiles=(0.5, 0.5000001))


def test_store_round_trip_provenance_and_the_models_loader(store_and_stats, tmp_path):
    path, stats = store_and_stats
    kernels, provenance = grid_dictionary(stats)
    record = write_dictionary(path, kernels, provenance)
    back, prov = read_dictionary(path)
    assert back.dtype == np.float32 and back.shape == (730, 3) and back.tobytes() == kernels.tobytes()
    assert all(key in prov for key in REQUIRED_PROVENANCE) and prov == record
    assert prov["reference_scale"] == 4 and prov["size"] == 730 and prov["method"] == "grid"
    assert prov["content_hash"] == content_hash(kernels, 4) == model_content_hash(torch.from_numpy(kernels), 4.0)

    model_dict = load_dictionary(path)  # the model engineer's loader, store branch
    assert torch.equal(model_dict.kernels, torch.from_numpy(kernels)) and model_dict.reference_scale == 4.0
    assert model_dict.provenance["content_hash"] == prov["content_hash"]

    npy, sidecar = export_npy(path, tmp_path / "exported" / "dict.npy")
    from_file = load_dictionary(npy)  # .npy branch: HR px at x4 by default
    assert torch.equal(from_file.kernels, model_dict.kernels)
    assert from_file.provenance["content_hash"] == prov["content_hash"]
    assert json.loads(sidecar.read_text())["reference_scale"] == 4

    summary = dictionary_summary(path)
    assert summary["ranges"]["l11"] == [0.0, float(kernels[:, 0].max())]
    line = dictionary_line(summary)
    assert line.startswith("grid, 730 kernels (HR px at x4: l11 0.00..") and "from 12 crops" in line


def test_export_converts_another_reference_scale_to_x4(tmp_path):
    path = tmp_path / "x2.zarr"
    make_store(path, crops=4, crop=32, chunk=2, reference_scale=2)
    stats = compute_statistics(path)
    kernels, provenance = sample_dictionary(stats, size=50, seed=1)
    assert provenance["reference_scale"] == 2
    write_dictionary(path, kernels, provenance)
    assert load_dictionary(path).reference_scale == 2.0
    npy, sidecar = export_npy(path, tmp_path / "d.npy")
    exported = load_dictionary(npy)
    # the same Gaussians in LR px: kernels / 2 == exported / 4
    np.testing.assert_allclose(exported.kernels.numpy() / 4, kernels / 2, rtol=1e-6)
    assert json.loads(sidecar.read_text())["store_reference_scale"] == 2
    with pytest.raises(ValueError, match="reference scale"):
        write_dictionary(path, kernels, dict(provenance, reference_scale=4))


def test_missing_damaged_and_stale_dictionaries(tmp_path):
    path = tmp_path / "prior.zarr"
    make_store(path, crops=4, crop=32, chunk=2)
    with pytest.raises(DictionaryMissingError, match="has no covariance dictionary yet; run `p2g prior-stats"):
        read_dictionary(path)
    assert dictionary_summary(path) is None and dictionary_line(None) == "not computed yet"
    stats = compute_statistics(path)
    stats.write(path)
    kernels, provenance = grid_dictionary(stats, size=28)
    write_dictionary(path, kernels, provenance)
    open_store(path, mode="r+").group["stats/dictionary/kernels"][0, 0] = 9.0  # edited behind our back
    with pytest.raises(StoreError, match="does not match its content hash"):
        read_dictionary(path)
    write_dictionary(path, kernels, provenance)
    stats.write(path)  # new statistics: the dictionary derived from the old ones goes
    with pytest.raises(DictionaryMissingError):
        read_dictionary(path)
    with pytest.raises(ValueError, match="provenance lacks"):
        write_dictionary(path, kernels, {"method": "grid"})
    with pytest.raises(StoreError, match="l11 and l22 must be >= 0"):
        write_dictionary(path, -kernels, provenance)


def test_bad_cli_requests_leave_the_store_untouched(tmp_path):
    path = tmp_path / "prior.zarr"
    make_store(path, crops=4, crop=32, chunk=2)
    runner = CliRunner()
    out = tmp_path / "out"
    assert runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(out), "--size", "28"]).exit_code == 0
    before = read_dictionary(path)
    info = runner.invoke(cli, ["info", str(path)])
    assert info.exit_code == 0 and "dictionary  grid, 28 kernels (HR px at x4: l11 0.00.." in info.output
    assert "from 4 crops, " + before[1]["content_hash"][:19] in info.output
    info = json.loads(runner.invoke(cli, ["info", str(path), "--json"]).output)
    assert info["dictionary_summary"]["content_hash"] == before[1]["content_hash"]
    for args, words in (
        (["--size", "500"], "try 344, 513, 730"),
        (["--quantiles", "99,1"], "low < high"),
        (["--quantiles", "a,b"], "two percentages"),
    ):
        result = runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(out), *args])
        assert result.exit_code == 2 and words in result.output, result.output
    after = read_dictionary(path)
    assert after[0].tobytes() == before[0].tobytes() and after[1] == before[1]
    (tmp_path / "file").write_text("x")
    result = runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output


def test_ellipse_axes_and_plots(store_and_stats, tmp_path):
    _path, stats = store_and_stats
    kernels = np.array([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    major, minor, angle = ellipse_axes(kernels)
    np.testing.assert_allclose([major[0], minor[0], angle[0]], [2.0, 1.0, 0.0], atol=1e-12)
    sigma = np.array([[1.0, 1.0], [1.0, 2.0]])  # L L^T of the second kernel
    np.testing.assert_allclose(sorted([major[1] ** 2, minor[1] ** 2]), np.linalg.eigvalsh(sigma))
    assert major[2] == minor[2] == 0
    grid, provenance = grid_dictionary(stats, size=28)
    files = write_plots(stats, grid, dict(provenance, reference_scale=4), np.linspace(25, 35, 12), tmp_path)
    from PIL import Image

    for file in files:
        with Image.open(file) as image:
            assert image.format == "PNG" and image.size[0] > 500
