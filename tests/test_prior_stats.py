"""Prior statistics: recovered from a synthetic store of known distribution, independent of chunking, only
over the selected crops, deterministic through the CLI, and clear refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats as scipy_stats

from dgp_fitting.prior_stats import (
    ELEMENTS,
    PAPER_RANGES_HR_X4,
    QUANTILE_BINS,
    QUANTILES,
    NoDoneCropsError,
    compute_statistics,
    elements_lr,
    histogram_quantiles,
    load_statistics,
    quantile_key,
)
from gaussian_field.initial import field_from_image
from prior_store import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, StoreConfig, create_store, open_store
from prior_store.statistics import StatisticsMissingError
from workflows.cli import cli

#: The known distribution (LR px): l11 ~ N(0.30, 0.05), l21 ~ N(0.05, 0.10), l22 = 0.25 + 0.4 (l11 - 0.3) + N(0, 0.04)
MEAN = np.array([0.30, 0.05, 0.25])
COV = np.array([[0.05**2, 0.0, 0.4 * 0.05**2], [0.0, 0.10**2, 0.0], [0.4 * 0.05**2, 0.0, 0.4**2 * 0.05**2 + 0.04**2]])


def known_chol(rng: np.random.Generator, n: int, g: int) -> np.ndarray:
    return rng.multivariate_normal(MEAN, COV, size=(n, g)).astype(np.float32)


def make_store(
    path,
    crops: int = 12,
    crop: int = 64,
    chunk: int = 4,
    seed: int = 0,
    status=None,
    psnr=None,
    draw=known_chol,
    reference_scale: int = 4,
    colors=None,
    shard: int | None = None,
):
    """A store of `crops` crops whose Cholesky triplets come from `draw` (no fitting: fast)."""
    config = StoreConfig(
        crop_size=crop, chunk_size=chunk, reference_scale=reference_scale, fitting={"synthetic": 1}, shard_size=shard
    )
    store = create_store(
        path, config, [f"img{i}.png" for i in range(crops)], np.array([[0, 0, crop, crop]] * crops, np.int32)
    )
    rng = np.random.default_rng(seed)
    g = config.num_gaussians
    status = np.full(crops, STATUS_DONE, np.int8) if status is None else np.asarray(status, np.int8)
    psnr = np.linspace(25, 35, crops, dtype=np.float32) if psnr is None else np.asarray(psnr, np.float32)
    for index in range(store.num_chunks):
        a, b = store.chunk_bounds(index)
        n = b - a
        store.write_chunk(
            index,
            {
                "field/means": np.zeros((n, g, 2), np.float32),
                "field/chol": draw(rng, n, g),
                "field/colors": rng.random((n, g, 3), dtype=np.float32) if colors is None else colors[a:b],
                "crops/content_hash": [""] * n,
                "crops/reason": ["" if s != STATUS_FAILED else "synthetic failure" for s in status[a:b]],
                "crops/psnr": np.where(status[a:b] == STATUS_DONE, psnr[a:b], np.nan).astype(np.float32),
                "crops/iterations": np.zeros(n, np.int32),
                "crops/status": status[a:b],
            },
        )
    return store


def assert_quantiles_bracketed(lr: dict, values: np.ndarray) -> None:
    """Each quantile q lies between the order statistics around rank q*n, give or take one fine bin."""
    ordered = np.sort(values)
    n, width = ordered.size, (lr["max"] - lr["min"]) / QUANTILE_BINS
    for q in QUANTILES:
        rank = q * n
        below = ordered[max(math.floor(rank) - 1, 0)]
        above = ordered[min(math.ceil(rank), n - 1)]
        assert below - width - 1e-12 <= lr["quantiles"][quantile_key(q)] <= above + width + 1e-12, q


def stored_elements(path, crops) -> np.ndarray:
    chol = np.asarray(open_store(path).group["field/chol"][...])[crops]
    return elements_lr(chol)


@pytest.fixture(scope="module")
def known_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("known") / "prior.zarr"
    make_store(path, crops=24, seed=3)
    return path


def test_recovers_the_known_distribution_and_matches_numpy(known_store):
    stats = compute_statistics(known_store)
    s = stats.summary
    e = stored_elements(known_store, slice(None))
    n = e.shape[0]
    assert s["selection"]["gaussians"] == n == 24 * 1024 and s["selection"]["crop_count"] == 24
    # exact against numpy on the same data
    for i, name in enumerate(ELEMENTS):
        lr, hr = s["elements"][name]["lr"], s["elements"][name]["hr"]
        assert lr["mean"] == pytest.approx(e[:, i].mean(), rel=1e-12, abs=1e-15)
        assert lr["std"] == pytest.approx(e[:, i].std(), rel=1e-9)
        assert (lr["min"], lr["max"]) == (e[:, i].min(), e[:, i].max())
        loc, scale = scipy_stats.norm.fit(e[:, i])
        assert (lr["normal"]["mean"], lr["normal"]["std"]) == pytest.approx((loc, scale), rel=1e-9)
        assert_quantiles_bracketed(lr, e[:, i])
        factor = 4 ** (1 if name in ("l11", "l21", "l22") else 2)
        assert hr["mean"] == pytest.approx(lr["mean"] * factor, rel=1e-12)
        assert hr["quantiles"]["99"] == pytest.approx(lr["quantiles"]["99"] * factor, rel=1e-12)
    np.testing.assert_allclose(np.array(s["correlation"]["matrix"], dtype=float), np.corrcoef(e.T), atol=1e-9)
    # against the distribution it was drawn from (sampling error: n = 24576)
    std = np.sqrt(np.diag(COV))
    for i, name in enumerate(("l11", "l21", "l22")):
        lr = s["elements"][name]["lr"]
        assert abs(lr["mean"] - MEAN[i]) < 5 * std[i] / math.sqrt(n)
        assert lr["std"] == pytest.approx(std[i], rel=0.03)
        for q in (0.01, 0.5, 0.99):
            assert lr["quantiles"][quantile_key(q)] == pytest.approx(
                MEAN[i] + std[i] * scipy_stats.norm.ppf(q), abs=0.06 * std[i] + 0.002
            )
        assert s["elements"][name]["normal_ks_distance"] < 0.02  # it is normal
    assert s["correlation"]["matrix"][0][2] == pytest.approx(COV[0, 2] / std[0] / std[2], abs=0.03)
    # covariance entries: E[l11^2] = mu^2 + sigma^2
    assert s["elements"]["sxx"]["lr"]["mean"] == pytest.approx(MEAN[0] ** 2 + COV[0, 0], rel=0.01)
    # the paper's ranges, in LR px = range / 4
    inside = np.ones(n, bool)
    for i, (name, (lo, hi)) in enumerate(PAPER_RANGES_HR_X4.items()):
        within = (e[:, i] >= lo / 4) & (e[:, i] <= hi / 4)
        inside &= within
        assert s["paper_ranges"]["inside"][name] == pytest.approx(within.mean(), abs=1e-12)
    assert s["paper_ranges"]["inside"]["all"] == pytest.approx(inside.mean(), abs=1e-12)
    # histograms count every value once (inside the fixed range or in the outside counts)
    for i, name in enumerate(ELEMENTS):
        out = s["elements"][name]["outside_histogram_range"]
        assert stats.arrays["histograms"][i].sum() + out["below"] + out["above"] == n
        assert stats.arrays["quantile_histograms"][i].sum() == n


def test_chunking_does_not_change_the_result(known_store, tmp_path):
    """The same crops stored with another chunk size (other blocks and reduction tree) give the same numbers."""
    other = tmp_path / "other.zarr"
    chol = np.asarray(open_store(known_store).group["field/chol"][...])
    make_store(
        other,
        crops=24,
        chunk=5,
        draw=_replay(chol),
        colors=np.asarray(open_store(known_store).group["field/colors"][...]),
    )
    a, b = compute_statistics(known_store).summary, compute_statistics(other).summary
    for name in ELEMENTS:
        for key in ("mean", "std", "min", "max"):
            assert a["elements"][name]["lr"][key] == pytest.approx(b["elements"][name]["lr"][key], rel=1e-12)
        assert a["elements"][name]["lr"]["quantiles"] == b["elements"][name]["lr"]["quantiles"]
    assert a["by_content"] == b["by_content"]


def test_blocks_and_a_dask_scheduler_do_not_change_the_result(known_store, tmp_path, monkeypatch):
    """The same crops in shards of 3 chunks, read in blocks smaller than a shard, on local threads and on a
    Dask cluster reached by its address, give the numbers of the one-chunk-per-shard store."""
    from distributed import LocalCluster

    from dgp_fitting import prior_stats

    other = tmp_path / "sharded.zarr"
    source = open_store(known_store)
    chol, colors = np.asarray(source.group["field/chol"][...]), np.asarray(source.group["field/colors"][...])
    store = make_store(other, crops=24, chunk=2, shard=6, draw=_replay(chol), colors=colors)
    keep = np.ones(24, bool)
    assert prior_stats.store_blocks(store, keep) == [(0, 6), (6, 12), (12, 18), (18, 24)]
    monkeypatch.setattr(prior_stats, "BLOCK_BYTES", 2 * 2 * 1024 * 6 * 4)  # two chunks per block
    assert prior_stats.store_blocks(store, keep)[:3] == [(0, 4), (4, 6), (6, 10)]
    keep[6:12] = False
    assert (6, 10) not in prior_stats.store_blocks(store, keep)

    expected = compute_statistics(known_store)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        results = [compute_statistics(other, threads=1), compute_statistics(other, scheduler=cluster.scheduler_address)]
    for got in results:
        for name in ELEMENTS:
            for key in ("mean", "std", "min", "max"):
                assert got.summary["elements"][name]["lr"][key] == pytest.approx(
                    expected.summary["elements"][name]["lr"][key], rel=1e-12
                )
            assert (
                got.summary["elements"][name]["lr"]["quantiles"]
                == expected.summary["elements"][name]["lr"]["quantiles"]
            )
        np.testing.assert_array_equal(got.arrays["per_crop"], expected.arrays["per_crop"])
        np.testing.assert_array_equal(got.arrays["joint_histograms"], expected.arrays["joint_histograms"])

    monkeypatch.setattr(prior_stats, "CONNECT_TIMEOUT", "1s")
    result = CliRunner().invoke(
        cli, ["prior-stats", "--store", str(other), "--out", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:9"]
    )
    assert result.exit_code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in result.output
    assert not (tmp_path / "o").exists()


def _replay(chol: np.ndarray):
    state = {"at": 0}

    def draw(rng, n, g):
        out = chol[state["at"] : state["at"] + n]
        state["at"] += n
        return out

    return draw


def test_only_done_crops_above_the_floor_are_used(tmp_path):
    status = [
        STATUS_DONE,
        STATUS_PENDING,
        STATUS_DONE,
        STATUS_FAILED,
        STATUS_DONE,
        STATUS_DONE,
        STATUS_DONE,
        STATUS_PENDING,
    ]
    psnr = [30, 0, 22, 0, 31, 27, 40, 0]
    path = tmp_path / "mixed.zarr"
    make_store(path, crops=8, crop=32, chunk=3, status=status, psnr=psnr)
    stats = compute_statistics(path, min_psnr=26.5)
    used = [0, 4, 5, 6]
    e = stored_elements(path, used)
    s = stats.summary
    assert (s["selection"]["crop_count"], s["selection"]["done"], s["selection"]["below_min_psnr"]) == (4, 5, 1)
    assert s["selection"]["gaussians"] == e.shape[0]
    assert s["elements"]["l22"]["lr"]["mean"] == pytest.approx(e[:, 2].mean(), rel=1e-12)
    table = stats.arrays["per_crop"]
    np.testing.assert_array_equal(table[:, 0], used)
    np.testing.assert_allclose(table[:, 1], [30, 31, 27, 40])
    chol = np.asarray(open_store(path).group["field/chol"][...])
    np.testing.assert_allclose(table[:, 3], chol[used, :, 0].astype(np.float64).mean(axis=1) * 4, rtol=1e-12)
    assert s["psnr"]["used"]["min"] == 27 and s["psnr"]["done"]["count"] == 5


def test_gradient_energy_ranks_crops_like_the_photos(tmp_path, photo):
    """The content measure, from the stored field only, orders real photo crops like their image gradients."""
    crops = [
        photo("astronaut", 0, 0, 64),
        photo("astronaut", 150, 20, 64),
        photo("coffee", 0, 0, 64),
        photo("chelsea", 100, 150, 64),
        photo("rocket", 0, 0, 64),
        photo("immunohistochemistry", 100, 100, 64),
        photo("hubble_deep_field", 200, 200, 64),
        photo("coffee", 200, 250, 64),
    ]
    lr = [c.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)) for c in crops]
    fields = [field_from_image(torch.from_numpy(x).permute(2, 0, 1).float()) for x in lr]
    colors = np.stack([f.colors[0].numpy() for f in fields]).astype(np.float32)
    chol = np.stack([f.chol[0].numpy() for f in fields]).astype(np.float32)
    path = tmp_path / "photos.zarr"
    make_store(path, crops=len(crops), crop=64, chunk=3, draw=_replay(chol), colors=colors)
    table = compute_statistics(path).arrays["per_crop"]
    truth = [np.mean(np.sum(np.diff(x, axis=0) ** 2, -1)) + np.mean(np.sum(np.diff(x, axis=1) ** 2, -1)) for x in lr]
    assert np.ptp(truth) > 10 * min(truth)  # the crops really differ in content
    assert scipy_stats.spearmanr(table[:, 2], truth).statistic > 0.9


def test_no_done_crops_and_too_high_floor_are_clear_errors(tmp_path):
    path = tmp_path / "empty.zarr"
    make_store(path, crops=4, crop=32, status=[STATUS_PENDING, STATUS_FAILED, STATUS_PENDING, STATUS_PENDING])
    with pytest.raises(NoDoneCropsError, match="no done crops"):
        compute_statistics(path)
    runner = CliRunner()
    result = runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert result.output.startswith("error: prior store") and "fit-prior" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()

    done = tmp_path / "done.zarr"
    make_store(done, crops=4, crop=32)
    result = runner.invoke(cli, ["prior-stats", "--store", str(done), "--out", str(tmp_path / "o"), "--min-psnr", "99"])
    assert result.exit_code == 2 and "reaches --min-psnr 99 dB" in result.output and "lower the floor" in result.output
    result = runner.invoke(cli, ["prior-stats", "--store", str(tmp_path / "missing.zarr"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not found" in result.output

    broken = tmp_path / "broken.zarr"
    make_store(broken, crops=4, crop=32, chunk=2)
    open_store(broken, mode="r+").group["field/chol"][3, 5, 1] = np.nan
    result = runner.invoke(cli, ["prior-stats", "--store", str(broken), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "field/chol/c/1/0/0 (crops 2-3): non-finite values for done crop(s) 3" in result.output
    assert "rerun the p2g fit-prior command" in result.output


def test_cli_reruns_are_byte_identical(tmp_path):
    path = tmp_path / "prior.zarr"
    make_store(path, crops=9, crop=32, chunk=4, seed=5)
    runner = CliRunner()
    outs = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        result = runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(out), "--min-psnr", "26"])
        assert result.exit_code == 0, result.output
        assert "inside the paper's" in result.output and "dictionary: grid, 730 kernels" in result.output
        outs.append(out)
    for name in ("summary.json", "summary.md", "dictionary.npy", "dictionary.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    summary = json.loads((outs[0] / "summary.json").read_text())
    assert summary["selection"]["crop_count"] == 8 and summary["config"]["min_psnr"] == 26
    assert summary["dictionary"]["size"] == 730
    stored = load_statistics(path)
    assert stored.summary == {k: v for k, v in summary.items() if k != "dictionary"}
    for name in ("element_histograms", "joint_densities", "dictionary", "psnr", "per_crop"):
        assert (outs[1] / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reuse_stats_needs_current_statistics(tmp_path):
    path = tmp_path / "prior.zarr"
    make_store(path, crops=6, crop=32, chunk=2)
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(out), "--reuse-stats"])
    assert result.exit_code == 2 and "has no statistics yet" in result.output
    with pytest.raises(StatisticsMissingError):
        load_statistics(path)
    assert runner.invoke(cli, ["prior-stats", "--store", str(path), "--out", str(out)]).exit_code == 0
    first = (out / "summary.json").read_bytes()
    result = runner.invoke(
        cli,
        [
            "prior-stats",
            "--store",
            str(path),
            "--out",
            str(out),
            "--reuse-stats",
            "--method",
            "sample",
            "--size",
            "100",
            "--seed",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["dictionary"]["method"] == "sample"
    assert json.loads(first)["elements"] == json.loads((out / "summary.json").read_text())["elements"]
    result = runner.invoke(
        cli, ["prior-stats", "--store", str(path), "--out", str(out), "--reuse-stats", "--min-psnr", "30"]
    )
    assert result.exit_code == 2 and "out of date" in result.output


def test_histogram_quantiles_interpolates_within_bins():
    counts = np.array([0, 10, 0, 10])  # values uniform in [1, 2) and [3, 4]
    assert histogram_quantiles(counts, 0.0, 4.0, [0.0, 0.25, 0.5, 0.75, 1.0]) == pytest.approx(
        [1.0, 1.5, 2.0, 3.5, 4.0]
    )
    assert histogram_quantiles(np.array([5]), 2.0, 2.0, [0.1, 0.9]) == [2.0, 2.0]


def test_statistics_of_a_store_fitted_by_the_real_job(tmp_path, photo):
    """One small run of the stage-1 job on real photo crops: statistics match the stored fields, stay inside the
    fitter's bounds, and the content measure ranks crops like their images' gradients."""
    prior_job = pytest.importorskip("dgp_fitting.prior_job")
    from PIL import Image

    from dgp_fitting.fitting import FitConfig
    from dgp_fitting.job_plan import JobPlan

    spec = [
        ("astronaut", 0, 0),
        ("astronaut", 150, 20),
        ("coffee", 0, 0),
        ("chelsea", 100, 150),
        ("rocket", 0, 0),
        ("immunohistochemistry", 100, 100),
        ("hubble_deep_field", 200, 200),
        ("coffee", 200, 250),
    ]
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (name, top, left) in enumerate(spec):
        pixels = (photo(name, top, left, 32) * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}_{name}.png")
    fit = FitConfig(steps=25)
    store = prior_job.prepare_store(JobPlan([folder], tmp_path / "prior.zarr", crop=32, fit=fit), batch=4)
    for index in range(store.num_chunks):
        prior_job.fit_chunk(str(tmp_path / "prior.zarr"), index, root=str(tmp_path), device="cpu")
    stats = compute_statistics(tmp_path / "prior.zarr")
    s = stats.summary
    e = stored_elements(tmp_path / "prior.zarr", slice(None))
    assert (s["selection"]["crop_count"], s["selection"]["gaussians"]) == (8, e.shape[0]) == (8, 8 * 256)
    for i, name in enumerate(("l11", "l21", "l22")):
        assert s["elements"][name]["lr"]["mean"] == pytest.approx(e[:, i].mean(), rel=1e-12, abs=1e-15)
        assert_quantiles_bracketed(s["elements"][name]["lr"], e[:, i])
        assert -fit.chol_max <= s["elements"][name]["lr"]["min"] <= s["elements"][name]["lr"]["max"] <= fit.chol_max
    assert s["elements"]["l11"]["lr"]["min"] >= fit.chol_min
    table = stats.arrays["per_crop"]
    stored = open_store(tmp_path / "prior.zarr")
    np.testing.assert_allclose(table[:, 1], stored.read("crops/psnr"))
    truth = []
    for source in stored.read("crops/source"):
        lr = np.asarray(Image.open(source), dtype=np.float64).reshape(8, 4, 8, 4, 3).mean(axis=(1, 3)) / 255
        truth.append(np.mean(np.sum(np.diff(lr, axis=0) ** 2, -1)) + np.mean(np.sum(np.diff(lr, axis=1) ** 2, -1)))
    assert scipy_stats.spearmanr(table[:, 2], truth).statistic > 0.6  # measured 0.81


def test_compiled_block_passes_match_their_numpy_definitions():
    """The numba kernels against the numpy definitions, on values inside, outside and at the edges of the
    histogram ranges: identical counts and extremes, sums equal up to rounding."""
    from dgp_fitting import prior_stats

    rng = np.random.default_rng(7)
    chol = rng.normal([0.3, 0.0, 0.3], [0.4, 0.6, 0.4], size=(6, 64, 3)).astype(np.float32)
    chol[0, :4] = [[0.0, -1.0, 0.0], [1.0, 1.0, 1.0], [0.6, 0.375, 0.55], [0.0, -0.225, 0.0]]  # range edges
    colors = rng.random((6, 64, 3), dtype=np.float32)
    paper = np.array([[lo / 4, hi / 4] for lo, hi in PAPER_RANGES_HR_X4.values()])
    want = prior_stats._moments_of(elements_lr(chol), paper)
    got = prior_stats.block_moments(chol, paper)
    assert got["n"] == want["n"] == 6 * 64
    for key in ("min", "max", "hist", "joint", "inside"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert want["hist"][:, [0, -1]].sum() > 0 and want["inside"][3] > 0  # both sides of the ranges are hit
    np.testing.assert_allclose(got["mean"], want["mean"], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got["m2"], want["m2"], rtol=1e-12, atol=1e-12)

    lo, hi = want["min"], want["max"]
    e = elements_lr(chol)
    fine = np.stack(
        [
            np.bincount(prior_stats.bin_index(e[:, i], lo[i], hi[i], QUANTILE_BINS), minlength=QUANTILE_BINS)
            for i in range(len(ELEMENTS))
        ]
    )
    np.testing.assert_array_equal(prior_stats.fine_histogram(chol, lo, hi), fine)

    rows = np.empty((6, 8))
    prior_stats.kernels.per_crop_rows(chol, colors, 4, 4, 2, rows)
    np.testing.assert_allclose(rows, prior_stats._per_crop_rows(chol, colors, (4, 4, 2)), rtol=1e-12, atol=1e-15)

    chol[3, 5, 1] = np.inf
    with pytest.raises(prior_stats.NonFiniteFieldError, match="NaN or inf"):
        prior_stats.block_moments(chol, paper)
