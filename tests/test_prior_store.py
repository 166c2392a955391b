"""The prior store: layout readable by plain zarr and dask, whole-chunk writes, status counts, refusals."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from prior_store import (
    SCHEMA_VERSION,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_PENDING,
    StoreConfig,
    StoreError,
    StoreMismatchError,
    create_store,
    describe_store,
    open_or_create,
    open_store,
)
from prior_store.file_record import read_file_record
from prior_store.migrate import migrate_store
from prior_store.schema import ARRAYS
from prior_store.statistics import read_statistics
from prior_store.store import RESULT_ARRAYS, LegacyStoreError, array_at, group_at, plan_digest

FITTING = {"steps": 10, "lr": 0.01, "loss": "l2", "seed": 0}


def plan(count: int = 5):
    sources = [f"photos/img{i // 2}.png" for i in range(count)]
    boxes = np.array([[8 * i, 0, 32, 32] for i in range(count)], dtype=np.int32)
    return sources, boxes


def chunk_values(store, index: int, status: int = STATUS_DONE, seed: int = 0) -> dict:
    start, stop = store.chunk_bounds(index)
    n, g = stop - start, store.config.num_gaussians
    rng = np.random.default_rng(seed + index)
    return {
        "field/means": rng.random((n, g, 2), dtype=np.float32),
        "field/chol": rng.random((n, g, 3), dtype=np.float32) + 0.1,
        "field/colors": rng.random((n, g, 3), dtype=np.float32),
        "crops/content_hash": [f"hash{start + i}" for i in range(n)],
        "crops/reason": [""] * n,
        "crops/psnr": np.linspace(30, 31, n, dtype=np.float32),
        "crops/iterations": np.full(n, 10, np.int32),
        "crops/status": np.full(n, status, np.int8),
    }


@pytest.fixture
def config() -> StoreConfig:
    return StoreConfig(crop_size=32, chunk_size=2, fitting=FITTING)


def test_layout_matches_schema_and_is_readable_with_plain_zarr_and_dask(tmp_path, config):
    sources, boxes = plan(5)
    store = create_store(tmp_path / "p.zarr", config, sources, boxes)
    assert (store.num_crops, store.num_chunks) == (5, 3)
    assert store.chunk_bounds(2) == (4, 5)
    for index in range(store.num_chunks):
        store.write_chunk(index, chunk_values(store, index))

    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    attrs = dict(root.attrs)
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert (attrs["crop_size"], attrs["reference_scale"], attrs["k"]) == (32, 4, 2)
    assert attrs["lattice"] == [8, 8, 2]
    assert attrs["fitting"] == FITTING
    assert attrs["package_version"] and attrs["created"]
    assert root["field/chol"].shape == (5, 8 * 8 * 4, 3)
    assert root["field/chol"].chunks == (2, 256, 3)
    assert root["crops/box"].dtype == np.int32 and root["crops/status"].dtype == np.int8
    assert list(root["crops/source"][:]) == sources
    np.testing.assert_array_equal(root["crops/box"][:], boxes)

    chol = da.from_zarr(str(tmp_path / "p.zarr"), component="field/chol")
    assert chol.chunks[0] == (2, 2, 1)
    expected = np.concatenate([chunk_values(store, i)["field/chol"] for i in range(3)])
    np.testing.assert_array_equal(chol.compute(), expected)


def test_status_counts_and_psnr_summary(tmp_path, config):
    sources, boxes = plan(5)
    status = np.array([0, 0, 0, 0, STATUS_FAILED], np.int8)
    reasons = ["", "", "", "", "image 16x16 is smaller than the 32 px crop"]
    store = create_store(tmp_path / "p.zarr", config, sources, boxes, status, reasons)
    assert store.status_counts() == {"pending": 4, "done": 0, "failed": 1}
    store.write_chunk(1, chunk_values(store, 1))
    store = open_store(tmp_path / "p.zarr")
    assert store.status_counts() == {"pending": 2, "done": 2, "failed": 1}
    np.testing.assert_array_equal(store.chunk_status_counts(), [[2, 0, 0], [0, 2, 0], [0, 0, 1]])
    summary = store.psnr_summary()
    assert summary["count"] == 2 and summary["median"] == pytest.approx(30.5)
    assert store.failure_reasons() == {reasons[-1]: 1}
    info = describe_store(tmp_path / "p.zarr")
    assert info["status"] == {"pending": 2, "done": 2, "failed": 1}
    assert info["chunks"] == {"total": 3, "finished": 1, "with_pending": 1, "with_failed": 1}
    assert info["statistics"] == [] and info["dictionary"] == []


def test_chunk_write_is_whole_chunk_and_round_trips(tmp_path, config):
    store = create_store(tmp_path / "p.zarr", config, *plan(5))
    values = chunk_values(store, 0)
    store.write_chunk(0, values)
    back = open_store(tmp_path / "p.zarr").read_chunk(0)
    for path in RESULT_ARRAYS:
        if isinstance(values[path], list):
            assert back[path] == values[path]
        else:
            np.testing.assert_array_equal(back[path], values[path])
    assert back["crops/source"] == ["photos/img0.png", "photos/img0.png"]
    # untouched chunks keep their fill values
    assert np.isnan(store.read("crops/psnr", 2, 4)).all()

    with pytest.raises(ValueError, match="shape"):
        store.write_chunk(2, chunk_values(store, 1))  # two crops for a one-crop chunk
    partial = chunk_values(store, 0)
    del partial["crops/status"]
    with pytest.raises(ValueError, match="missing"):
        store.write_chunk(0, partial)
    with pytest.raises(IndexError):
        store.write_chunk(3, chunk_values(store, 0))


def test_reopening_with_another_config_or_plan_is_refused(tmp_path, config):
    sources, boxes = plan(5)
    path = tmp_path / "p.zarr"
    store, created = open_or_create(path, config, sources, boxes)
    assert created
    store.write_chunk(0, chunk_values(store, 0))
    again, created = open_or_create(path, config, sources, boxes)
    assert not created and again.status_counts()["done"] == 2

    with pytest.raises(StoreMismatchError, match="crop_size 32, not 64"):
        open_or_create(path, StoreConfig(crop_size=64, chunk_size=2, fitting=FITTING), sources, boxes)
    with pytest.raises(StoreMismatchError, match="reference_scale 4, not 2"):
        open_or_create(
            path, StoreConfig(crop_size=32, chunk_size=2, reference_scale=2, fitting=FITTING), sources, boxes
        )
    with pytest.raises(StoreMismatchError, match="lattice"):
        open_or_create(path, StoreConfig(crop_size=32, chunk_size=2, k=3, fitting=FITTING), sources, boxes)
    with pytest.raises(StoreMismatchError, match="steps 10"):
        open_or_create(path, StoreConfig(crop_size=32, chunk_size=2, fitting={**FITTING, "steps": 20}), sources, boxes)
    with pytest.raises(StoreMismatchError, match="another crop plan"):
        open_or_create(path, config, sources[::-1], boxes)
    # the refusals changed nothing
    assert open_store(path).status_counts() == {"pending": 3, "done": 2, "failed": 0}


def test_newer_schema_and_foreign_folders_are_refused(tmp_path, config):
    path = tmp_path / "p.zarr"
    create_store(path, config, *plan(3))
    zarr.open_group(str(path), mode="r+").attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match="newer pixel2gauss"):
        open_store(path)

    with pytest.raises(FileNotFoundError, match="not found"):
        open_store(tmp_path / "missing.zarr")
    other = zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    other.create_array("x", shape=(3,), dtype="f4")
    with pytest.raises(StoreError, match="no schema_version"):
        open_store(tmp_path / "other.zarr")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="not"):
        open_store(tmp_path / "plain")


def test_damaged_layout_is_named(tmp_path, config):
    path = tmp_path / "p.zarr"
    create_store(path, config, *plan(3))
    root = zarr.open_group(str(path), mode="r+")
    del root["field/colors"]
    with pytest.raises(StoreError, match="field/colors is missing"):
        open_store(path)


def test_members_and_attributes_of_the_wrong_kind_are_named(tmp_path, config):
    """Where the layout has an array, a group, or a JSON object, something else is a damaged store, not a crash."""
    store = create_store(tmp_path / "p.zarr", config, *plan(3))
    store.group.create_group("stats").attrs["summary"] = [1, 2]
    store.group.create_array("integrity", shape=(1,), dtype="i4").attrs["files"] = "a.png"
    with pytest.raises(StoreError, match="stats is a group where the prior store layout has an array"):
        array_at(store.group, "stats")
    with pytest.raises(StoreError, match="crops/status is an array"):
        group_at(store.group, "crops/status")
    with pytest.raises(StoreError, match="the statistics summary is not a JSON object"):
        read_statistics(store.path)
    with pytest.raises(StoreError, match="the file record is not a JSON object"):
        read_file_record(store)


def test_create_refuses_existing_path_and_bad_config(tmp_path, config):
    path = tmp_path / "p.zarr"
    create_store(path, config, *plan(3))
    with pytest.raises(FileExistsError, match="already exists"):
        create_store(path, config, *plan(3))
    with pytest.raises(ValueError, match="not a multiple of the reference scale"):
        StoreConfig(crop_size=30, chunk_size=2)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        StoreConfig(crop_size=32, chunk_size=0)
    with pytest.raises(ValueError, match="empty"):
        create_store(tmp_path / "empty.zarr", config, [], np.zeros((0, 4)))


def test_shards_hold_whole_chunks_and_keys_name_their_crops(tmp_path):
    config = StoreConfig(crop_size=32, chunk_size=2, fitting=FITTING, shard_size=4)
    store = create_store(tmp_path / "p.zarr", config, *plan(9))
    assert (store.num_chunks, store.num_shards, store.shard_size) == (5, 3, 4)
    assert [list(store.shard_chunks(i)) for i in range(3)] == [[0, 1], [2, 3], [4]]
    assert [store.shard_of_chunk(c) for c in range(5)] == [0, 0, 1, 1, 2]
    assert store.shard_bounds(2) == (8, 9)
    with pytest.raises(IndexError, match="shard 3 out of range: the store has 3 shards"):
        store.shard_bounds(3)
    with pytest.raises(IndexError, match="chunk -1 out of range: the store has 5 chunks"):
        store.chunk_bounds(-1)
    for index in (3, 0, 4):  # chunk writes into shards in any order keep the other chunks of the shard
        store.write_chunk(index, chunk_values(store, index))
    back = open_store(tmp_path / "p.zarr")
    written = chunk_values(store, 0)["field/chol"]
    np.testing.assert_array_equal(back.read("field/chol", 0, 4), np.concatenate([written, np.zeros_like(written)]))
    np.testing.assert_array_equal(back.read("field/chol", 6, 8), chunk_values(store, 3)["field/chol"])
    np.testing.assert_array_equal(back.status(), [1, 1, 0, 0, 0, 0, 1, 1, 1])

    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert root["field/chol"].shards == (4, 64 * 4, 3) and root["field/chol"].chunks == (2, 64 * 4, 3)
    assert root["crops/status"].chunks == (4,) and root["crops/status"].shards is None
    data = [p for p in (tmp_path / "p.zarr").rglob("*") if p.is_file() and p.name != "zarr.json"]
    assert len(data) <= 10 * store.num_shards  # one file per array per shard, whatever the chunk count
    keys = store.shard_keys(1)
    assert "field/chol/c/1/0/0" in keys and "crops/status/c/1" in keys and len(keys) == 10
    assert all(store.key_crop_range(key) == (4, 8) for key in keys)
    assert store.key_crop_range("crops/psnr/c/2") == (8, 9)
    for bad in ("field/chol/c/1", "crops/nope/c/0", "field/chol/c/9/0/0"):
        with pytest.raises((ValueError, IndexError)):
            store.key_crop_range(bad)
    with pytest.raises(ValueError, match="not a multiple of the chunk size"):
        StoreConfig(crop_size=32, chunk_size=2, shard_size=5)


def test_auto_shard_size_bounds_the_file_count():
    from prior_store.schema import auto_shard_size

    assert auto_shard_size(12, 3) == 3  # small stores: one chunk per shard, as many tasks as chunks
    assert auto_shard_size(10**6, 8) == 1000  # a million crops: 1000 shards
    assert auto_shard_size(1_600_000, 8) == 1600
    assert -(-1_600_000 // auto_shard_size(1_600_000, 8)) <= 1000
    assert auto_shard_size(5, 8) == 8


def test_every_array_has_dimension_names_and_units_and_xarray_reads_the_store(tmp_path, config):
    xr = pytest.importorskip("xarray")
    sources, boxes = plan(5)
    store = create_store(tmp_path / "p.zarr", config, sources, boxes)
    for index in range(store.num_chunks):
        store.write_chunk(index, chunk_values(store, index))
    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    for spec in ARRAYS:
        array = root[spec.path]
        assert array.metadata.dimension_names[0] == "crop", spec.path
        assert "units" in array.attrs and array.attrs["long_name"], spec.path

    field = xr.open_zarr(str(tmp_path / "p.zarr"), group="field", consolidated=False)
    assert dict(field.sizes) == {"crop": 5, "gaussian": 256, "xy": 2, "cholesky": 3, "rgb": 3}
    assert field["chol"].attrs["units"] == "LR px"
    expected = np.concatenate([chunk_values(store, i)["field/chol"] for i in range(3)])
    np.testing.assert_array_equal(field["chol"].values, expected)
    crops = xr.open_zarr(str(tmp_path / "p.zarr"), group="crops", consolidated=False)
    assert list(crops["source"].values) == sources
    assert crops["status"].dtype == np.int8 and (crops["status"].values == STATUS_DONE).all()
    assert crops["psnr"].attrs["units"] == "dB"
    np.testing.assert_array_equal(crops["box"].values, boxes)


def write_schema1_store(path, config: StoreConfig, count: int = 5):
    """A store in the old layout (one file per chunk, no dimension names), as pixel2gauss wrote it."""
    sources, boxes = plan(count)
    group = zarr.open_group(str(path), mode="w-")
    for spec in ARRAYS:
        tail = config.tail_shape(spec)
        group.create_array(
            spec.path, shape=(count,) + tail, chunks=(config.chunk_size,) + tail, dtype=spec.dtype, fill_value=spec.fill
        )
    group["crops/source"][:] = np.asarray(sources, dtype=np.dtypes.StringDType())
    group["crops/box"][:] = boxes
    rng = np.random.default_rng(3)
    chol = rng.random((count, config.num_gaussians, 3), dtype=np.float32)
    group["field/chol"][:] = chol
    group["crops/psnr"][:] = np.arange(count, dtype=np.float32) + 30
    group["crops/status"][:] = np.array([STATUS_DONE] * (count - 1) + [STATUS_PENDING], np.int8)
    group.attrs.update(
        {
            "schema_version": 1,
            **{k: v for k, v in config.attrs().items() if k != "shard_size"},
            "plan_digest": plan_digest(sources, boxes),
            "package_version": "0.1",
            "created": "x",
        }
    )
    return sources, boxes, chol


def test_schema_1_stores_are_refused_with_the_migration_command_and_migrate(tmp_path, config):
    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    sources, boxes, chol = write_schema1_store(old, config)
    with pytest.raises(LegacyStoreError, match=r"schema 1 .*p2g migrate-store .*old.zarr NEW_STORE"):
        open_store(old)
    with pytest.raises(LegacyStoreError):
        open_or_create(old, config, sources, boxes)
    before = {p: p.read_bytes() for p in old.rglob("*") if p.is_file()}

    store = migrate_store(old, new)
    assert {p: p.read_bytes() for p in old.rglob("*") if p.is_file()} == before  # the old store is untouched
    store = open_store(new)
    assert store.attrs["schema_version"] == SCHEMA_VERSION and store.attrs["migrated_from"]["schema_version"] == 1
    assert store.attrs["plan_digest"] == plan_digest(sources, boxes)
    assert store.status_counts() == {"pending": 1, "done": 4, "failed": 0}
    np.testing.assert_array_equal(store.read("field/chol"), chol)
    assert store.read("crops/source") == sources
    np.testing.assert_array_equal(store.read("crops/psnr"), np.arange(5, dtype=np.float32) + 30)
    _again, created = open_or_create(new, config, sources, boxes)  # the job resumes the migrated store
    assert not created

    with pytest.raises(FileExistsError, match="already exists"):
        migrate_store(old, new)
    with pytest.raises(StoreError, match="only schema 1 stores need migrating"):
        migrate_store(new, tmp_path / "again.zarr")


def test_cli_names_the_migration_and_migrates(tmp_path, config):
    from click.testing import CliRunner

    from workflows.cli import cli

    old, new = tmp_path / "old.zarr", tmp_path / "new.zarr"
    write_schema1_store(old, config)
    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(old)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error: ") and f"p2g migrate-store {old} NEW_STORE" in result.output
    result = runner.invoke(cli, ["migrate-store", str(old), str(new)])
    assert result.exit_code == 0, result.output
    assert "5 crops (4 done, 0 failed, 1 pending) in 3 shards of 2 crops" in result.output
    result = runner.invoke(cli, ["info", str(new)])
    assert result.exit_code == 0 and "shards      3 of 2 crops" in result.output
    result = runner.invoke(cli, ["migrate-store", str(old), str(new)])
    assert result.exit_code == 2 and "already exists" in result.output
