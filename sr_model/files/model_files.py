"""Every file a model can come from, read by one function: `load_network(path)` -> ContinuousSR.

- our safetensors export (`p2g export`, `sr_model.files.export`), including the bundled weights;
- our training checkpoints (`best.pt`, `last.pt`, `p2g import-official` output; `sr_model.files.checkpoint`);
- official ContinuousSR `.pth` files, converted in memory by `sr_model.files.official_import` (the code of
  `p2g import-official`, which stays for saving the conversion).

The kind is read from the file's contents, not its name. `path=None` means the bundled `lite` weights.
`sr_model.api.load_model` wraps the result for images and tensors; this module gives the torch module itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from sr_model import weights
from sr_model.files.checkpoint import (
    CheckpointError,
    check_checkpoint,
    is_checkpoint,
    model_from_checkpoint,
    torch_load_plain,
    warn_unverified,
)
from sr_model.files.export import is_safetensors, read_export, write_export
from sr_model.files.official_import import (
    DEFAULT_OFFSET_INPUT,
    file_sha256,
    import_record,
    looks_official,
    model_from_official,
    official_spec,
)
from sr_model.networks.model import ContinuousSR


@dataclass(frozen=True)
class LoadedModel:
    """A model and where it came from: `kind` (export / checkpoint / official), the file, a one-line note."""

    model: ContinuousSR
    kind: str
    path: Path
    bundled: bool
    record: dict

    @property
    def origin(self) -> str:
        """Where the weights came from, in a few words."""
        if self.bundled:
            return f"bundled {self.model.config.preset} weights, {weights.describe(self.path)}"
        what = {"export": "export", "checkpoint": "checkpoint", "official": "official ContinuousSR file, converted"}
        return f"{self.path} ({what[self.kind]})"

    @property
    def note(self) -> str:
        """One line for the user: which weights are in use."""
        if self.bundled:
            return f"no checkpoint named: using the {self.origin}"
        return f"model: {self.origin}"


def _read(path: Path) -> tuple[str, dict]:
    """(kind, contents) of a model file; a file of no known kind is a one-line error."""
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a model file (.safetensors, .pt or an official .pth)")
    if is_safetensors(path):
        return "export", read_export(path)
    data = torch_load_plain(path)
    if is_checkpoint(data):
        return "checkpoint", check_checkpoint(data, path)
    if looks_official(data):
        return "official", data
    raise CheckpointError(
        f"{path} is not a model file pixel2gauss reads: expected a `p2g export` .safetensors, a "
        f"pixel2gauss checkpoint or an official ContinuousSR .pth"
    )


def load_file(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", offset_input: str | None = None
) -> LoadedModel:
    """The model in `path` (None: the bundled `lite` weights) on `device`, in eval mode, with its origin.

    `offset_input` applies to official files only (default: the released model's, see `sr_model.files.official_import`).
    """
    bundled = path is None
    path = weights.bundled_path() if bundled else Path(path)
    kind, data = _read(path)
    if offset_input is not None and kind != "official":
        raise ValueError(f"offset_input applies to official ContinuousSR files; {path} is a pixel2gauss {kind}")
    if kind == "official":
        spec = official_spec(data, path)
        offset_input = DEFAULT_OFFSET_INPUT if offset_input is None else offset_input
        model = model_from_official(spec, offset_input).to(device)
        warn_unverified(f"{path} is an official ContinuousSR file; released files carry no digest")
        record = {"kind": kind, "imported_from": import_record(path, spec, offset_input)}
    else:
        model = model_from_checkpoint(data, device)
        record = source_record(kind, path, data)
    return LoadedModel(model, kind, path, bundled, record)


def load_network(
    path: str | os.PathLike | None = None, device: str | torch.device = "cpu", offset_input: str | None = None
) -> ContinuousSR:
    """The torch module in `path` (None: the bundled `lite` weights), on `device`, in eval mode."""
    return load_file(path, device, offset_input).model


def source_record(kind: str, path: Path, data: dict) -> dict:
    """What an export records about the file its weights came from."""
    if kind == "export":  # re-exporting keeps the original origin
        return dict(data["source"])
    record = {"kind": kind, "file": path.name, "sha256": file_sha256(path)}
    for key in ("step", "train_seconds", "best", "train_config", "imported_from"):
        if key in data:
            record[key] = data[key]
    return record


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    kind: str
    num_parameters: int
    size_bytes: int


def export_file(
    source: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, offset_input: str | None = None
) -> ExportSummary:
    """Write the model of any model file `source` as a safetensors export `out` (kept unless `overwrite`)."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise ValueError(f"{out}: an export is a .safetensors file; name the output NAME.safetensors")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another output or pass --force to replace it")
    loaded = load_file(source, "cpu", offset_input)
    write_export(out, loaded.model, loaded.record)
    return ExportSummary(out, loaded.kind, sum(p.numel() for p in loaded.model.parameters()), out.stat().st_size)
