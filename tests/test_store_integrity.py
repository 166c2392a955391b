"""Damaged stores: `p2g info --verify` finds missing, undecodable and non-finite keys by crop range, fit-prior
mends them bit for bit, prior-stats refuses them and writes nothing; resume notices changed images; one
fit-prior per store. Every fault is injected here (a key deleted, overwritten, truncated, an image rewritten)."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from PIL import Image

from dgp_fitting.corpus_check import CorpusChangedError
from dgp_fitting.fitting import FitConfig
from dgp_fitting.prior_job import run_prior_job
from prior_store import STATUS_DONE, STATUS_PENDING, open_store
from prior_store.integrity import StoreDamagedError, require_intact, verify_store
from prior_store.lock import StoreLockedError, store_lock
from prior_store.schema import ARRAYS, RESULT_ARRAYS
from workflows.cli import cli

CROP = 32
FIT = FitConfig(steps=8)
PHOTOS = (("astronaut", 10, 180), ("coffee", 100, 250))  # 2 x 64 px = 8 crops of 32 px, 4 chunks of 2


@pytest.fixture(scope="module")
def client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as client:
        yield client


def write_corpus(folder: Path, photo) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, top, left in PHOTOS:
        Image.fromarray((photo(name, top, left, 64) * 255).round().astype(np.uint8)).save(folder / f"{name}.png")
    return folder


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, photo, client) -> tuple[Path, Path]:
    """(corpus, store) of an undamaged run; tests damage copies of the store."""
    root = tmp_path_factory.mktemp("fitted")
    corpus = write_corpus(root / "photos", photo)
    store = root / "prior.zarr"
    summary = run_prior_job([corpus], store, crop=CROP, fit=FIT, batch=2, client=client, progress=False)
    assert (summary.done, summary.pending, summary.failed) == (8, 0, 0)
    return corpus, store


def copy_store(store: Path, tmp_path: Path) -> Path:
    target = tmp_path / "prior.zarr"
    shutil.copytree(store, target)
    return target


def overwrite_random(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    for spec in ARRAYS:
        va, vb = sa.read(spec.path), sb.read(spec.path)
        if isinstance(va, list):
            assert va == vb, spec.path
        else:
            assert va.dtype == vb.dtype and va.tobytes() == vb.tobytes(), spec.path


def test_verify_reports_each_kind_of_damage_by_crop_range(fitted, tmp_path):
    _, original = fitted
    assert verify_store(original).ok
    store = copy_store(original, tmp_path)
    (store / "field/chol/c/1/0/0").unlink()  # crops 2-3
    overwrite_random(store / "field/colors/c/2/0/0")  # crops 4-5
    truncate(store / "crops/status/c/3")  # crops 6-7
    open_store(store, mode="r+").group["crops/psnr"][0] = np.nan  # a valid key holding a NaN PSNR (done crop 0)
    report = verify_store(store)
    found = {(d.key, d.start, d.stop): d.problem for d in report.damage}
    assert set(found) == {
        ("crops/psnr/c/0", 0, 2),
        ("field/chol/c/1/0/0", 2, 4),
        ("field/colors/c/2/0/0", 4, 6),
        ("crops/status/c/3", 6, 8),
    }
    assert found[("field/chol/c/1/0/0", 2, 4)] == "missing (should hold values of 2 done crop(s))"
    assert found[("field/colors/c/2/0/0", 4, 6)].startswith("undecodable")
    assert found[("crops/status/c/3", 6, 8)].startswith("undecodable")
    assert found[("crops/psnr/c/0", 0, 2)] == "non-finite values for done crop(s) 0"
    assert report.crop_ranges() == [(0, 8)] and report.keys_checked == len(ARRAYS) * 4

    runner = CliRunner()
    result = runner.invoke(cli, ["info", str(store), "--verify"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == f"damaged {store}: 4 of 40 storage keys, 8 crops"
    assert "  field/chol/c/1/0/0 (crops 2-3): missing (should hold values of 2 done crop(s))" in result.output
    assert "rerun the p2g fit-prior command" in result.output
    as_json = json.loads(runner.invoke(cli, ["info", str(store), "--verify", "--json"]).output)
    assert as_json["ok"] is False and as_json["damaged_crop_ranges"] == [[0, 8]]
    assert runner.invoke(cli, ["info", str(original), "--verify"]).output.startswith(f"verified {original}: 40")

    # plain `p2g info` of a store whose status key is truncated: one line naming the keys, not a traceback
    result = runner.invoke(cli, ["info", str(store)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith(f"error: store {store} has 4 damaged storage key(s): crops/psnr/c/0")


def test_verify_in_an_old_store_judges_only_arrays_that_cannot_hold_fill_values(fitted, tmp_path):
    """Stores made before chunk writes kept fill-only keys: a missing colours key may be a black crop."""
    _, original = fitted
    store = copy_store(original, tmp_path)
    zarr.open_group(str(store), mode="r+")["integrity"].attrs.update({"every_chunk_stored": False})
    (store / "field/colors/c/1/0/0").unlink()
    (store / "crops/box/c/2/0").unlink()
    assert [d.key for d in verify_store(store).damage] == ["crops/box/c/2/0"]


def test_fit_prior_mends_damaged_keys_bit_for_bit(fitted, client, tmp_path):
    corpus, original = fitted
    store = copy_store(original, tmp_path)
    (store / "field/means/c/0/0/0").unlink()
    truncate(store / "crops/psnr/c/2")
    overwrite_random(store / "crops/source/c/3")
    messages = []
    summary = run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False, echo=messages.append)
    assert messages[0].startswith("mending: 3 damaged storage key(s)") and "6 crops marked pending" in messages[0]
    assert (summary.done, summary.fitted, summary.chunks_run) == (8, 6, 3)
    assert verify_store(store).ok
    assert_same_store(store, original)


def test_prior_stats_refuses_a_damaged_store_and_writes_nothing(fitted, tmp_path):
    _, original = fitted
    store = copy_store(original, tmp_path)
    (store / "field/chol/c/2/0/0").unlink()
    out = tmp_path / "stats"
    result = CliRunner().invoke(cli, ["prior-stats", "--store", str(store), "--out", str(out), "--size", "28"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "field/chol/c/2/0/0 (crops 4-5): missing" in result.output
    assert "rerun the p2g fit-prior command that made it" in result.output
    assert not (store / "stats").exists() and not out.exists()
    with pytest.raises(StoreDamagedError):
        require_intact(store)


def test_prior_stats_is_all_or_nothing(fitted, tmp_path, monkeypatch):
    from dgp_fitting import prior_report

    _, original = fitted
    store = copy_store(original, tmp_path)
    out = tmp_path / "stats"
    runner = CliRunner()
    first = runner.invoke(cli, ["prior-stats", "--store", str(store), "--out", str(out), "--size", "28"])
    assert first.exit_code == 0, first.output
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    stored = {p.relative_to(store): p.read_bytes() for p in (store / "stats").rglob("*") if p.is_file()}

    def broken_plots(*args, **kwargs):
        raise ValueError("plotting failed")

    monkeypatch.setattr(prior_report, "write_plots", broken_plots)
    result = runner.invoke(cli, ["prior-stats", "--store", str(store), "--out", str(out), "--size", "9"])
    assert result.exit_code == 2 and result.output == "error: plotting failed\n"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # no new file, no staging folder
    assert {p.relative_to(store): p.read_bytes() for p in (store / "stats").rglob("*") if p.is_file()} == stored


def _rewrite(path: Path) -> None:
    pixels = np.asarray(Image.open(path))
    Image.fromarray(np.ascontiguousarray(pixels[::-1])).save(path)  # same size, other contents


def test_resume_refuses_changed_images_or_refits_them(photo, client, tmp_path):
    corpus = write_corpus(tmp_path / "photos", photo)
    store = tmp_path / "prior.zarr"
    run_prior_job([corpus], store, crop=CROP, fit=FIT, batch=2, client=client, progress=False)
    # touched but the same bytes: resumes without a word
    os.utime(corpus / "coffee.png", ns=(1, 1))
    assert run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False).fitted == 0

    _rewrite(corpus / "coffee.png")
    with pytest.raises(CorpusChangedError) as err:
        run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False)
    assert str(err.value) == (
        f"1 image(s) changed since their crops were fitted into {store}: "
        f"{corpus / 'coffee.png'}; restore them, or rerun with --refit-changed to refit their "
        "crops"
    )
    result = CliRunner().invoke(
        cli, ["fit-prior", str(corpus), "--store", str(store), "--crop", "32", "--steps", "8", "--no-progress"]
    )
    assert result.exit_code == 2 and result.output.startswith("error: 1 image(s) changed since")

    summary = run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False, refit_changed=True)
    assert summary.fitted == 4 and summary.done == 8
    opened = open_store(store)
    digest = __import__("hashlib").sha256((corpus / "coffee.png").read_bytes()).hexdigest()
    coffee = [i for i, s in enumerate(opened.read("crops/source")) if s.endswith("coffee.png")]
    assert {opened.read("crops/content_hash")[i] for i in coffee} == {digest}
    assert run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False).fitted == 0


def test_a_second_fit_prior_on_a_store_is_refused_naming_the_first(fitted, client, tmp_path):
    corpus, original = fitted
    store = copy_store(original, tmp_path)
    with store_lock(store, "fit-prior"):
        with pytest.raises(StoreLockedError) as err:
            run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False)
        result = CliRunner().invoke(cli, ["prior-stats", "--store", str(store), "--out", str(tmp_path / "o")])
    assert str(err.value) == (
        f"another p2g fit-prior is running on store {store} (pid {os.getpid()}, host "
        f"{socket.gethostname()}); wait for it to finish, or stop it"
    )
    assert result.exit_code == 2 and result.output.startswith("error: another p2g fit-prior is running on store")
    assert not Path(str(store) + ".lock").exists()  # released and removed
    assert run_prior_job([corpus], store, crop=CROP, fit=FIT, client=client, progress=False).fitted == 0


def test_a_status_key_lost_alone_is_damage(fitted, tmp_path):
    _, original = fitted
    store = copy_store(original, tmp_path)
    (store / "crops/status/c/1").unlink()  # crops 2-3 read as pending while their fields are stored
    report = verify_store(store)
    assert [(d.key, d.problem) for d in report.damage] == [
        ("crops/status/c/1", "missing (other arrays hold fitted results for these crops)")
    ]
    assert open_store(store).status()[2:4].tolist() == [STATUS_PENDING] * 2
    assert open_store(original).status()[2:4].tolist() == [STATUS_DONE] * 2


class DiskFull:
    """Files opened for writing under `root` fail with ENOSPC half-way through their first write (`builtins.open`
    and `io.open`, which `Path.open` calls): all of them (`full`), those of `crops/status` keys (`status_only`), or
    all of them once `after` files (of status keys only, with `counting="status"`) have been written."""

    STATUS = f"{os.sep}crops{os.sep}status{os.sep}"

    def __init__(self, monkeypatch, root: Path, full=False, after=None, counting="status", status_only=False) -> None:
        self.root, self.full, self.after, self.status_only = str(root) + os.sep, full, after, status_only
        self.counting, self.real = counting, io.open
        monkeypatch.setattr(io, "open", self)
        monkeypatch.setattr(builtins, "open", self)

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = self.real(file, mode, *args, **kwargs)
        path = os.path.abspath(os.fspath(file)) if not isinstance(file, int) else ""
        if not path.startswith(self.root) or not set(mode) & set("wxa+"):
            return handle
        if self.full or (self.status_only and self.STATUS in path):
            return _HalfWritten(handle)
        if self.after is not None and (self.counting == "all" or self.STATUS in path):
            self.after -= 1
            self.full = self.after == 0  # this write lands; every later one fails
        return handle


class _HalfWritten:
    """A file on a full disk: half of the first write lands, then ENOSPC."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._handle.write(view[: len(view) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def store_files(store: Path) -> dict[Path, bytes]:
    return {p.relative_to(store): p.read_bytes() for p in store.rglob("*") if p.is_file()}


def test_a_full_disk_mid_job_ends_in_one_line_and_keeps_what_was_written(fitted, client, tmp_path, monkeypatch):
    """Workers' chunk writes hit ENOSPC after two chunks: one line, exit 2, no retry, the store intact (its two
    chunks done, the rest pending); once space is back the same command finishes a store equal to an
    uninterrupted one."""
    corpus, original = fitted
    store = tmp_path / "prior.zarr"
    args = ["fit-prior", str(corpus), "--store", str(store), "--crop", "32", "--steps", "8", "--batch", "2"]
    args += ["--scheduler", client.scheduler.address, "--no-progress"]  # workers in this process: fsync patched
    full = DiskFull(monkeypatch, store, after=2)  # two chunks written, then the disk is full
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[0].startswith("dashboard: ")  # the job had started
    assert result.output.splitlines()[1:] == [
        f"error: the disk of store {store} is full ({free_space(store)} free): 4 crops are done and kept, 4 left to "
        "fit (about 33.1 KiB more); free space and rerun the same command to fit the rest"
    ]
    assert full.full and verify_store(store).ok
    assert open_store(store).status_counts() == {"pending": 4, "done": 4, "failed": 0}
    assert not [p for p in store.rglob("*") if p.name.endswith(".p2g-partial")]
    monkeypatch.undo()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "8 crops: 8 done, 0 failed, 0 pending; 4 skipped" in result.output
    assert_same_store(store, original)


def free_space(store: Path) -> str:
    from dgp_fitting.job_limits import free_disk, memory_size

    return memory_size(free_disk(store))


def test_mending_on_a_full_disk_deletes_nothing_and_loses_no_fit(fitted, tmp_path, monkeypatch):
    """Mending rewrites whole storage keys: on a full disk each keeps its previous version (no key is deleted
    first) and the refusal is one line; a mend cut short after its first write leaves the mended crops pending
    (never done over reset values), and the rerun makes the store equal to an undamaged one."""
    corpus, original = fitted
    store = copy_store(original, tmp_path)
    (store / "field/means/c/1/0/0").unlink()  # crops 2-3 to mend
    before = store_files(store)
    args = ["fit-prior", str(corpus), "--store", str(store), "--crop", "32", "--steps", "8", "--no-progress"]
    DiskFull(monkeypatch, store, full=True)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert store_files(store) == before  # every key still there, with its bytes
    assert result.output.splitlines() == [
        f"error: the disk of store {store} is full ({free_space(store)} free) before fitting began: no fitted crop "
        "was lost (crops being mended stay pending); free space and rerun the same command"
    ]
    monkeypatch.undo()
    DiskFull(monkeypatch, store, after=3, counting="all")  # the mend's first three writes land, then no more
    assert CliRunner().invoke(cli, args).exit_code == 2
    monkeypatch.undo()
    assert open_store(store).status().tolist() == [STATUS_DONE] * 2 + [STATUS_PENDING] * 2 + [STATUS_DONE] * 4
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert_same_store(store, original)


def test_store_writes_replace_whole_files_whatever_zarr_writes(fitted, tmp_path, monkeypatch):
    """zarr before 3.1.3 truncated a key's file and wrote it in place (`_put`): on a full disk the key was lost.
    The store's own writes never go through it, and a failed write keeps the previous bytes."""
    import zarr.storage._local as zarr_local

    _, original = fitted
    store = copy_store(original, tmp_path)

    def in_place(path, value, *args, **kwargs):
        path.write_bytes(b"")  # truncated, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(zarr_local, "_put", in_place)
    opened = open_store(store, mode="r+")
    values = opened.read_chunk(1, RESULT_ARRAYS)
    values["crops/psnr"] = values["crops/psnr"] + 1  # something to write
    DiskFull(monkeypatch, store, full=True)
    before = store_files(store)
    with pytest.raises(OSError) as err:
        opened.write_chunk(1, values)
    assert err.value.errno == errno.ENOSPC
    assert store_files(store) == before
    monkeypatch.undo()
    assert verify_store(store).ok
    assert_same_store(store, original)


def test_a_chunk_write_that_fails_before_its_status_leaves_no_damage(fitted, tmp_path, monkeypatch):
    """Status is written last; a new store stores every status key, so a write that fails on the status (after the
    fields) leaves the chunk pending with its previous status, which verification does not call damage."""
    from dgp_fitting.job_plan import JobPlan
    from dgp_fitting.prior_job import fit_chunk, prepare_store

    corpus, _ = fitted
    store = tmp_path / "prior.zarr"
    prepare_store(JobPlan([corpus], store, crop=CROP, fit=FIT), batch=2)
    assert sorted(p.name for p in (store / "crops/status/c").iterdir()) == ["0", "1", "2", "3"]
    DiskFull(monkeypatch, store, status_only=True)  # the fields land, the status write fails
    with pytest.raises(OSError):
        fit_chunk(str(store), 1, device="cpu")
    monkeypatch.undo()
    assert (store / "field/chol/c/1/0/0").exists()  # the fields were written before the status failed
    assert verify_store(store).ok
    assert open_store(store).status_counts() == {"pending": 8, "done": 0, "failed": 0}


def test_a_run_whose_every_crop_fails_while_fitting_is_an_error(client, photo, tmp_path):
    """Headers that read (so the crops are planned) over bodies that do not decode: the run ends in one line,
    not in a summary with exit 0; the store keeps the failures for `p2g info` and a rerun retries them."""
    from dgp_fitting.prior_job import NothingToFitError

    corpus = write_corpus(tmp_path / "photos", photo)
    for path in corpus.iterdir():
        path.write_bytes(path.read_bytes()[:200])  # the PNG header survives, the pixels do not
    store = tmp_path / "prior.zarr"
    with pytest.raises(NothingToFitError) as err:
        run_prior_job([corpus], store, crop=CROP, fit=FIT, batch=2, client=client, progress=False)
    assert str(err.value).startswith(f"no crop of store {store} could be fitted: all 8 failed (4 x ")
    assert str(err.value).endswith(f"; `p2g info {store}` lists the reasons")
    assert open_store(store).status_counts() == {"pending": 0, "done": 0, "failed": 8}
