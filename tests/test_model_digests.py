"""Model and field files carry a digest of their contents: 2 KiB overwritten inside a tensor is refused in one line
by every verb that reads the file; files without a digest (official releases, files written before digests) load
with one notice; a forged npy header cannot make a reader allocate; a full disk never spoils the previous file."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

from gaussian_field import load_field, save_field
from gaussian_field.initial import field_from_image
from gaussian_field.integrity import DamagedFileError, SaveError, UnverifiedFileWarning
from sr_model import api, weights
from sr_model.files.checkpoint import (
    CHECKPOINT_VERSION,
    DamagedModelFileError,
    checkpoint_payload,
    read_checkpoint,
    save_checkpoint,
)
from sr_model.files.export import EXPORT_VERSION, METADATA_KEY, read_export
from sr_model.files.model_files import export_file, load_file, load_network
from sr_model.files.official_import import import_official
from sr_model.training.loop import train
from sr_model.training.state import LAST
from tests.cli_checks import one_error_line
from tests.test_official_import import write_official
from tests.test_tiling import tiny_model
from tests.test_training import _config, folders, train_cli_args  # noqa: F401 (folders is a fixture)
from workflows.cli import cli

KIB2 = 2048


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def corrupt_inside(path: Path, inside: bytes, seed: int = 0) -> None:
    """Overwrite 2 KiB of `path` inside the stored bytes `inside` (a tensor's), as a bad disk sector would."""
    data = bytearray(path.read_bytes())
    start = data.find(inside)
    assert start >= 0 and len(inside) >= KIB2 + 64, "the tensor's bytes must be in the file, and large enough"
    noise = np.random.default_rng(seed).integers(0, 256, KIB2, dtype=np.uint8).tobytes()
    data[start + 64 : start + 64 + KIB2] = noise
    assert bytes(data) != path.read_bytes()
    path.write_bytes(bytes(data))


def largest(state: dict) -> bytes:
    tensor = max(state.values(), key=lambda t: t.numel() * t.element_size())
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@pytest.fixture()
def image(tmp_path, photo) -> Path:
    from gaussian_field.image_io import write_image

    path = tmp_path / "coffee.png"
    write_image(path, photo("coffee", top=100, left=250, size=24))
    return path


@pytest.fixture()
def checkpoint(tmp_path) -> Path:
    model = tiny_model("lite", seed=3)
    return save_checkpoint(
        tmp_path / "best.pt", model, step=12, optimizer=torch.optim.Adam(model.parameters()).state_dict()
    )


def damaged_line(result, path: Path) -> str:
    line = one_error_line(result)
    assert line.startswith(f"error: {path} is damaged: its contents do not match the digest it was saved with"), line
    return line


# -------------------------------------------------------------------------------------------- model files
def test_damaged_checkpoint_is_refused_by_every_verb_that_reads_it(checkpoint, image, tmp_path):
    good = read_checkpoint(checkpoint)
    assert good["version"] == CHECKPOINT_VERSION == 2 and good["digest"].startswith("sha256:")
    corrupt_inside(checkpoint, largest(good["state_dict"]))
    # torch itself reads the damaged file without complaint: only the digest tells
    silent = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert any(not torch.equal(silent[k], good["state_dict"][k]) for k in silent)
    damaged_line(run("upscale", image, "--checkpoint", checkpoint, "--out", tmp_path / "up", "--scale", 2), checkpoint)
    damaged_line(run("eval", "--checkpoint", checkpoint, "--images", image, "--scales", 2), checkpoint)
    damaged_line(run("view", image, "--no-browser", "--checkpoint", checkpoint), checkpoint)
    damaged_line(run("export", checkpoint, tmp_path / "out.safetensors"), checkpoint)
    with pytest.raises(DamagedModelFileError, match="is damaged"):
        api.load_model(checkpoint)
    assert not (tmp_path / "up").exists() and not (tmp_path / "out.safetensors").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_damaged_export_is_refused_by_every_verb_that_reads_it(checkpoint, image, tmp_path):
    export = export_file(checkpoint, tmp_path / "model.safetensors").path
    state = read_export(export)["state_dict"]
    corrupt_inside(export, largest(state))
    with safe_open(str(export), "pt") as fh:  # safetensors reads it without complaint
        assert any(not torch.equal(fh.get_tensor(k), state[k]) for k in fh.keys())
    damaged_line(run("upscale", image, "--checkpoint", export, "--out", tmp_path / "up", "--scale", 2), export)
    damaged_line(run("eval", "--checkpoint", export, "--images", image, "--scales", 2), export)
    damaged_line(run("view", image, "--no-browser", "--checkpoint", export), export)
    damaged_line(run("export", export, tmp_path / "again.safetensors"), export)
    with pytest.raises(DamagedModelFileError, match="is damaged"):
        api.load_model(export)
    assert not (tmp_path / "up").exists() and not (tmp_path / "again.safetensors").exists()


def test_damaged_bundled_weights_are_refused(image, tmp_path, monkeypatch):
    copy = tmp_path / "lite.safetensors"
    copy.write_bytes(weights.bundled_path().read_bytes())
    corrupt_inside(copy, largest(read_export(copy)["state_dict"]))
    monkeypatch.setitem(weights.BUNDLED, "lite", str(copy))  # an absolute name replaces the package folder
    damaged_line(run("upscale", image, "--out", tmp_path / "up", "--scale", 2), copy)
    damaged_line(run("eval", "--images", image, "--scales", 2), copy)
    with pytest.raises(DamagedModelFileError, match="is damaged"):
        api.load_model()


def test_bundled_weights_carry_their_digest():
    path = weights.bundled_path()
    with safe_open(str(path), "pt") as fh:
        document = json.loads(fh.metadata()[METADATA_KEY])
    assert document["version"] == EXPORT_VERSION == 2 and document["digest"].startswith("sha256:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # checked, so no notice
        assert load_file(None).bundled


def test_damaged_last_checkpoint_is_refused_by_resume(folders):
    result = train(_config(folders, steps=2, val_every=2), progress=False)
    last = result.last
    corrupt_inside(last, largest(read_checkpoint(last)["state_dict"]))
    before = last.read_bytes()
    resumed = run("train", "--out", last.parent, "--resume", "--steps", 4, "--device", "cpu")
    damaged_line(resumed, last)
    assert last.read_bytes() == before  # left as it was, for the user to look at


def test_a_removed_digest_is_damage_not_an_old_file(checkpoint, tmp_path):
    data = torch.load(checkpoint, weights_only=True)
    del data["digest"]
    torch.save(data, tmp_path / "stripped.pt")
    with pytest.raises(DamagedModelFileError, match="stripped.pt is damaged"):
        load_network(tmp_path / "stripped.pt")
    export = export_file(checkpoint, tmp_path / "model.safetensors").path
    with safe_open(str(export), "pt") as fh:
        tensors = {key: fh.get_tensor(key) for key in fh.keys()}
        document = json.loads(fh.metadata()[METADATA_KEY])
    del document["digest"]
    save_file(tensors, str(tmp_path / "stripped.safetensors"), metadata={METADATA_KEY: json.dumps(document)})
    with pytest.raises(DamagedModelFileError, match="stripped.safetensors is damaged"):
        load_network(tmp_path / "stripped.safetensors")


# ------------------------------------------------------------------------------------- files without a digest
def notices(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UnverifiedFileWarning)]


def test_files_written_before_digests_load_with_one_notice(tmp_path, photo):
    model = tiny_model("lite", seed=3)
    old = {**checkpoint_payload(model), "version": 1}  # format 1: no digest
    torch.save(old, tmp_path / "old.pt")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    export = export_file(save_checkpoint(tmp_path / "new.pt", model), tmp_path / "new.safetensors").path
    with safe_open(str(export), "pt") as fh:
        document = json.loads(fh.metadata()[METADATA_KEY])
    document.pop("digest")
    document["version"] = 1
    save_file(state, str(tmp_path / "old.safetensors"), metadata={METADATA_KEY: json.dumps(document)})
    lr = torch.from_numpy(photo("rocket", 100, 200, 12).copy()).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = model.eval()(lr, scale=2)
    for name in ("old.pt", "old.safetensors"):
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("default")
            loaded = load_network(tmp_path / name)
            load_network(tmp_path / name)  # the same file again: said once
        assert notices(record) == [
            f"{tmp_path / name} carries no digest ({'saved' if name.endswith('.pt') else 'exported'} before "
            "pixel2gauss checked its model files), so damage to its weights cannot be detected; `p2g export` "
            "writes a copy that carries one"
        ]
        with torch.no_grad():
            assert torch.equal(loaded(lr, scale=2), want)
    # exporting an old file gives one that is checked
    export_file(tmp_path / "old.pt", tmp_path / "sealed.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_network(tmp_path / "sealed.safetensors")


def test_official_files_load_with_one_notice(golden_dir, tmp_path):
    golden = torch.load(golden_dir / "continuoussr_swinir_small.pt")
    official = write_official(golden, tmp_path / "ContinuousSR.pth")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        load_network(official)
        load_network(official)
    assert notices(record) == [
        f"{official} is an official ContinuousSR file; released files carry no digest, so damage to its weights "
        "cannot be detected; `p2g export` writes a copy that carries one"
    ]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        imported = import_official(official, tmp_path / "imported.pt").path
        load_network(imported)  # the import carries a digest: no notice for it
    assert len(notices(record)) == 1 and "the imported checkpoint carries one" in notices(record)[0]


def test_the_notice_is_one_line_of_the_cli(tmp_path, image):
    model = tiny_model("lite", seed=3)
    torch.save({**checkpoint_payload(model), "version": 1}, tmp_path / "old.pt")
    result = subprocess.run(
        [sys.executable, "-m", "workflows.cli", "upscale", str(image), "--checkpoint", str(tmp_path / "old.pt")]
        + ["--out", str(tmp_path / "up"), "--scale", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "digest" in line]
    assert lines == [
        f"warning: {tmp_path / 'old.pt'} carries no digest (saved before pixel2gauss checked its model files), so "
        "damage to its weights cannot be detected; `p2g export` writes a copy that carries one"
    ], result.stderr
    assert (tmp_path / "up" / "coffee_x2.png").is_file()


# ------------------------------------------------------------------------------------------------ field files
def a_field(photo):
    lr = torch.from_numpy(photo("astronaut", 40, 160, 32).copy()).permute(2, 0, 1)[None].float()
    return field_from_image(lr)


def rezipped(path: Path) -> Path:
    """The same members in a new zip, so each member's CRC-32 matches its (damaged) bytes: only the digest tells."""
    out = path.with_name(f"rezipped_{path.name}")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            with source.open(info) as fh:
                fh._expected_crc = None  # read the damaged bytes as they are
                target.writestr(info.filename, fh.read())
    return out


def test_damaged_field_is_refused_by_every_verb_that_reads_it(tmp_path, photo):
    field = a_field(photo)
    path = tmp_path / "f.npz"
    save_field(field, path)
    corrupt_inside(path, field.means.numpy().tobytes())
    for damaged_file in (path, rezipped(path)):  # caught by the zip's CRC-32, and by the digest alone
        line = one_error_line(run("render", damaged_file, "--scale", 2, "--out", tmp_path / "o"))
        assert line == (
            f"error: {damaged_file} is damaged: its arrays do not match the digest it was saved with; restore a copy "
            "or write it again with `p2g upscale --save-field` or gaussian_field.save_field"
        )
        assert line == one_error_line(run("view", damaged_file, "--no-browser"))
        with pytest.raises(DamagedFileError, match=f"{damaged_file.name} is damaged"):
            load_field(damaged_file)
    assert not (tmp_path / "o").exists()


def test_field_written_before_digests_loads_with_one_notice(tmp_path, photo):
    field = a_field(photo)
    np.savez(
        tmp_path / "old.npz",
        format="pixel2gauss-field",
        version=np.int64(1),
        lattice=np.array([field.h, field.w, field.k], dtype=np.int64),
        means=field.means.numpy(),
        chol=field.chol.numpy(),
        colors=field.colors.numpy(),
        metadata="{}",
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")
        for _ in range(2):
            back = load_field(tmp_path / "old.npz")
    assert notices(record) == [
        f"{tmp_path / 'old.npz'} carries no digest (written before pixel2gauss checked its field files), so damage "
        "to it cannot be detected; saving it again adds one"
    ]
    assert torch.equal(back.means, field.means) and torch.equal(back.colors, field.colors)


def forged(path: Path, shape: tuple, compressed: bool = False) -> Path:
    """A copy of the field file at `path` whose `means` npy header claims `shape` over a few bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    out = path.with_name(f"forged{'_z' if compressed else ''}.npz")
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w", method) as target:
        for info in source.infolist():
            data = source.read(info) if info.filename != "means.npy" else header.getvalue() + bytes(64)
            target.writestr(info.filename, data)
    return out


@pytest.mark.parametrize("compressed", [False, True])
def test_a_forged_npy_header_is_one_line_before_any_allocation(tmp_path, photo, compressed):
    save_field(a_field(photo), tmp_path / "f.npz")
    path = forged(tmp_path / "f.npz", (5 * 10**11, 2), compressed)  # 10^12 float32: 3.6 TiB
    want = (
        f"error: {path} is damaged: its 'means' array claims 1000000000000 elements of float32 (3.6 TiB) but the file "
        "holds 64 bytes for it; write it again with `p2g upscale --save-field` or gaussian_field.save_field"
    )
    assert one_error_line(run("render", path, "--scale", 2, "--out", tmp_path / "o")) == want
    assert one_error_line(run("view", path, "--no-browser")) == want
    with pytest.raises(DamagedFileError, match="claims 1000000000000 elements"):
        load_field(path)


# ----------------------------------------------------------------------------------------------- a full disk
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def torch_save_on_a_full_disk(payload, fh):
    """What torch.save does when the disk fills: some bytes written, then its own error over the OSError."""
    if isinstance(fh, (str, os.PathLike)):  # given a name, torch opens the file itself
        fh = open(fh, "wb")
    fh.write(b"PK\x03\x04" + bytes(1000))
    try:
        no_space()
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")  # noqa: B904


def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    model = tiny_model("lite", seed=3)
    last = save_checkpoint(tmp_path / "run" / LAST, model, step=1)
    before = last.read_bytes()
    monkeypatch.setattr(torch, "save", torch_save_on_a_full_disk)
    with pytest.raises(SaveError) as caught:
        save_checkpoint(last, model, step=2)
    assert str(caught.value) == (
        f"cannot save {last}: No space left on device; the previous last.pt is intact; free some space on that "
        "disk and run again"
    )
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, OSError)
    assert last.read_bytes() == before and read_checkpoint(last)["step"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == [LAST]  # no partial file left


def test_a_full_disk_during_training_is_one_line_and_keeps_last_pt(folders, monkeypatch):
    out = folders["root"] / "cli"
    real_save, saves = torch.save, []

    def fills_up(payload, fh):
        saves.append(Path(getattr(fh, "name", fh)).name)
        if saves.count(f"{LAST}.partial") >= 2:  # the disk fills after the first last.pt
            return torch_save_on_a_full_disk(payload, fh)
        return real_save(payload, fh)

    monkeypatch.setattr(torch, "save", fills_up)
    result = CliRunner().invoke(cli, train_cli_args(folders, out, 4))
    line = one_error_line(result)
    assert line == (
        f"error: cannot save {out / LAST}: No space left on device; the previous last.pt is intact; free some space "
        "on that disk and run again"
    )
    assert read_checkpoint(out / LAST)["step"] == 2 and not list(out.glob("*.partial"))


@pytest.mark.parametrize("what", ["export", "field"])
def test_exports_and_fields_on_a_full_disk_keep_the_previous_file(what, checkpoint, tmp_path, photo, monkeypatch):
    if what == "export":
        path = export_file(checkpoint, tmp_path / "model.safetensors").path
        again = ("export", checkpoint, path, "--force")
    else:
        path = tmp_path / "f.npz"
        save_field(a_field(photo), path)
        again = None
    before = path.read_bytes()
    monkeypatch.setattr("os.fsync", no_space)  # some file systems report a full disk only when flushing
    if again is not None:
        line = one_error_line(run(*again))
    else:
        with pytest.raises(SaveError) as caught:
            save_field(a_field(photo), path)
        line = f"error: {caught.value}"
    assert line == (
        f"error: cannot save {path}: No space left on device; the previous {path.name} is intact; free some space on "
        "that disk and run again"
    )
    assert path.read_bytes() == before and not list(tmp_path.glob("*.partial"))
