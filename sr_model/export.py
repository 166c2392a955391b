"""The weights-only model file for sharing and shipping: safetensors, no pickle, no optimiser state.

    tensors:  model.state_dict() (the dictionary and its reference scale are buffers, so they travel too)
    metadata: {"pixel2gauss": JSON {"format": "pixel2gauss-export", "version": 1,
                                    "config": ModelConfig.to_dict(),
                                    "dictionary": {"reference_scale", "size", "kernels_hash", "provenance"},
                                    "source": {"kind", "file", "sha256", ...}}}

One metadata key holding one JSON document with sorted keys: safetensors writes its metadata map in no fixed
order, so several keys would make two exports of the same model differ in their bytes. The config is rebuilt
generically from its dict: a field this version does not know is refused by name, never dropped. Absolute
paths in the provenance are reduced to their last part (an export is meant to leave the machine it was made
on). Training checkpoints (`sr_model.checkpoint`) stay the format to resume from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from sr_model.checkpoint import CheckpointError
from sr_model.dictionary import content_hash
from sr_model.model import ContinuousSR

EXPORT_FORMAT = "pixel2gauss-export"
EXPORT_VERSION = 1
METADATA_KEY = "pixel2gauss"
EXPORT_FIELDS = ("format", "version", "config", "dictionary", "source")
#: The first bytes of a safetensors file: an 8-byte little-endian header length, then the JSON header.
_HEADER_LENGTH_BYTES = 8


class ExportError(CheckpointError):
    """A safetensors file that is not a readable pixel2gauss export."""


def is_safetensors(path: str | Path) -> bool:
    """Whether `path` starts like a safetensors file (a header length that fits the file, then '{')."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(_HEADER_LENGTH_BYTES + 1)
    if len(head) <= _HEADER_LENGTH_BYTES:
        return False
    length = int.from_bytes(head[:_HEADER_LENGTH_BYTES], "little")
    return head[-1:] == b"{" and length <= size - _HEADER_LENGTH_BYTES


def portable(value):
    """`value` as JSON-ready plain data, absolute paths reduced to their last part."""
    if isinstance(value, dict):
        return {str(k): portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        return Path(value).name
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def export_document(model: ContinuousSR, source: dict) -> dict:
    """The metadata document an export of `model` carries (`source`: where its weights came from)."""
    dictionary = {"reference_scale": model.reference_scale, "provenance": portable(model.dictionary_provenance)}
    if model.dictionary is not None:
        dictionary.update(
            size=int(model.dictionary.shape[0]), kernels_hash=content_hash(model.dictionary, model.reference_scale)
        )
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "config": portable(model.config.to_dict()),
        "dictionary": dictionary,
        "source": portable(source),
    }


def write_export(path: str | Path, model: ContinuousSR, source: dict) -> Path:
    """Write `model`'s weights and description to `path` atomically (NAME.partial, then renamed)."""
    from safetensors.torch import save

    path = Path(path)
    document = json.dumps(export_document(model, source), sort_keys=True, allow_nan=False)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_bytes(save(state, metadata={METADATA_KEY: document}))  # a plain write: the umask's permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _tuples(value):
    """JSON lists back to tuples: every sequence in a model config is a tuple."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def read_export(path: str | Path) -> dict:
    """The export at `path` as a checkpoint-like dict: config, dictionary, state_dict (CPU), source."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except Exception as err:  # safetensors raises its own error types on damaged headers and short files
        raise ExportError(f"{path} is not a readable safetensors file ({one_line(err)})") from None
    if METADATA_KEY not in metadata:
        raise ExportError(f"{path} is a safetensors file without pixel2gauss metadata (not written by `p2g export`)")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except ValueError:
        raise ExportError(f"{path}: its pixel2gauss metadata is not valid JSON; the file is damaged") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: its metadata is not a {EXPORT_FORMAT} document")
    version = document.get("version")
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise ExportError(f"{path} was written by a newer pixel2gauss (export format {version!r}); upgrade")
    unknown = sorted(set(document) - set(EXPORT_FIELDS))
    if unknown:
        raise ExportError(f"{path}: unknown export metadata field {unknown[0]!r}; this file needs a newer pixel2gauss")
    missing = [key for key in EXPORT_FIELDS if key not in document]
    if missing:
        raise ExportError(f"{path} is damaged: its metadata has no {missing[0]!r} entry")
    return {
        "config": _tuples(document["config"]),
        "dictionary": document["dictionary"],
        "state_dict": state,
        "source": document["source"],
    }


def one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
