"""The weights-only model file for sharing and shipping: safetensors, no pickle, no optimiser state.

    tensors:  model.state_dict() (the dictionary and its reference scale are buffers, so they travel too)
    metadata: {"pixel2gauss": JSON {"format": "pixel2gauss-export", "version": 2,
                                    "config": ModelConfig.to_dict(),
                                    "dictionary": {"reference_scale", "size", "kernels_hash", "provenance"},
                                    "source": {"kind", "file", "sha256", ...},
                                    "digest": "sha256:..."}}

The digest covers every tensor (name, dtype, shape, bytes) and the rest of the document; a file that no longer
matches it is refused. Version-1 files (written before digests existed) are loaded with a one-line notice.

One metadata key holding one JSON document with sorted keys: safetensors writes its metadata map in no fixed
order, so several keys would make two exports of the same model differ in their bytes. The config is rebuilt
generically from its dict: a field this version does not know is refused by name, never dropped. Absolute
paths in the provenance are reduced to their last part (an export is meant to leave the machine it was made
on). Training checkpoints (`sr_model.files.checkpoint`) stay the format to resume from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gaussian_field.integrity import damaged, first_line, write_atomically
from sr_model.files.checkpoint import CheckpointError, DamagedModelFileError, tensor_digest, warn_unverified
from sr_model.networks.covariance_dictionary import content_hash
from sr_model.networks.model import ContinuousSR

EXPORT_FORMAT = "pixel2gauss-export"
#: 2: the document carries a digest of the tensors and itself (version 1 has none and is loaded with a notice).
EXPORT_VERSION = 2
METADATA_KEY = "pixel2gauss"
REQUIRED_FIELDS = ("format", "version", "config", "dictionary", "source")
EXPORT_FIELDS = (*REQUIRED_FIELDS, "digest")
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


def export_digest(state: dict, document: dict) -> str:
    """The digest of an export: its tensors and its metadata document (less the digest), as `json.dumps` with
    sorted keys writes it."""
    text = json.dumps({k: v for k, v in document.items() if k != "digest"}, sort_keys=True)
    return tensor_digest({"metadata": text, "tensors": state})


def write_export(path: str | Path, model: ContinuousSR, source: dict) -> Path:
    """Write `model`'s weights and description, with their digest, to `path` atomically (NAME.partial, flushed,
    then renamed: a full disk leaves the previous file intact)."""
    from safetensors.torch import save

    path = Path(path)
    document = export_document(model, source)
    json.dumps(document, allow_nan=False)  # refuse NaN and infinities before anything is written
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    document["digest"] = export_digest(state, document)
    metadata = {METADATA_KEY: json.dumps(document, sort_keys=True, allow_nan=False)}
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda fh: fh.write(save(state, metadata=metadata)))


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
        raise ExportError(f"{path} is not a readable safetensors file ({first_line(err)})") from None
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
    missing = [key for key in REQUIRED_FIELDS if key not in document]
    if missing:
        raise ExportError(f"{path} is damaged: its metadata has no {missing[0]!r} entry")
    _check_digest(path, state, document, version)
    return {
        "config": _tuples(document["config"]),
        "dictionary": document["dictionary"],
        "state_dict": state,
        "source": document["source"],
    }


def _check_digest(path: Path, state: dict, document: dict, version: int) -> None:
    """Refuse tensors or a document that differ from the digest they were saved with; a version-1 file (written
    before digests existed) is loaded with a one-line notice."""
    if "digest" not in document and version < 2:
        warn_unverified(f"{path} carries no digest (exported before pixel2gauss checked its model files)")
        return
    if document.get("digest") != export_digest(state, document):
        raise damaged(path, "contents", cls=DamagedModelFileError)
