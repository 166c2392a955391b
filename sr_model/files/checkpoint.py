"""Our checkpoint format: a plain dict that `torch.load(path, weights_only=True)` reads, and rebuilds its model.

    {"format": "pixel2gauss-checkpoint", "version": 1,
     "config": ModelConfig.to_dict(),
     "dictionary": {"reference_scale", "size", "kernels_hash", "provenance": {...}},
     "state_dict": model.state_dict(),          # includes the dictionary buffer
     ...extra,                                   # e.g. optimizer state, step (plain containers and tensors)
     "digest": "sha256:..."}                     # of everything above (`tensor_digest`), checked on every read

Files are written to `NAME.partial`, flushed to the disk and renamed, so a killed process or a full disk never
leaves half a checkpoint and never spoils the previous one (`gaussian_field.integrity.write_atomically`). A file
whose contents no longer match its digest is refused; one written before digests existed (format version 1)
is loaded with a one-line notice that it carries none.
This is the training-resume format; `sr_model.files.export` writes the weights-only safetensors file for sharing, and
`sr_model.files.model_files.load_network` reads either (and official ContinuousSR files).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import torch

from gaussian_field.integrity import DamagedFileError, UnverifiedFileWarning, damaged, write_atomically
from sr_model.networks.covariance_dictionary import CovarianceDictionary, content_hash
from sr_model.networks.model import ContinuousSR
from sr_model.networks.presets import ModelConfig

CHECKPOINT_FORMAT = "pixel2gauss-checkpoint"
#: 2: the checkpoint carries a digest of its contents (version 1 has none and is loaded with a notice).
CHECKPOINT_VERSION = 2
REQUIRED_KEYS = ("format", "version", "config", "dictionary", "state_dict")
RESERVED_KEYS = (*REQUIRED_KEYS, "digest")
#: Notices about files without a digest already given in this process.
_ANNOUNCED: set[str] = set()
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)


class CheckpointError(ValueError):
    """A file that is not a readable pixel2gauss checkpoint."""


class DamagedModelFileError(CheckpointError, DamagedFileError):
    """A checkpoint or export whose contents no longer match the digest it was saved with."""


def _check_plain(value, where: str) -> None:
    """Refuse anything `torch.load(weights_only=True)` could not read back (custom classes, numpy...)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN):
        raise TypeError(
            f"checkpoint entry {where} is a {type(value).__name__}; store plain containers, numbers, "
            f"strings and tensors only"
        )


def tensor_digest(value) -> str:
    """sha256 of a checkpoint-like structure: every name, tensor dtype, shape and bytes, and every plain value.

    Dict entries are taken in the order of their keys' repr, so the digest does not depend on insertion order.
    """
    digest = hashlib.sha256()
    _feed(digest, "", value)
    return f"sha256:{digest.hexdigest()}"


def _feed(digest, name: str, value) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{name}\0tensor\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        digest.update(f"{name}\0dict\0{len(value)}\0".encode())
        for key in sorted(value, key=repr):
            _feed(digest, f"{name}/{key!r}", value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"{name}\0sequence\0{len(value)}\0".encode())
        for i, item in enumerate(value):
            _feed(digest, f"{name}/{i}", item)
    else:
        digest.update(f"{name}\0{value!r}\0".encode())


def checkpoint_payload(model: ContinuousSR, **extra) -> dict:
    """The dict `save_checkpoint` writes, less its digest (useful for tests and for DDP rank-0 saving)."""
    clash = sorted(set(extra) & set(RESERVED_KEYS))
    if clash:
        raise TypeError(f"extra checkpoint keys {clash} are reserved")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dictionary = {"reference_scale": model.reference_scale, "provenance": dict(model.dictionary_provenance)}
    if model.dictionary is not None:
        dictionary.update(
            size=int(model.dictionary.shape[0]), kernels_hash=content_hash(model.dictionary, model.reference_scale)
        )
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config.to_dict(),
        "dictionary": dictionary,
        "state_dict": state,
        **extra,
    }
    _check_plain(payload, "checkpoint")
    return payload


def save_checkpoint(path: str | Path, model: ContinuousSR, **extra) -> Path:
    """Write model, config, dictionary provenance and `extra` with their digest, atomically; returns the path.

    A disk that fails (full, read-only) is one `SaveError` line and leaves the previous file at `path` intact.
    """
    path = Path(path)
    payload = checkpoint_payload(model, **extra)
    payload["digest"] = tensor_digest(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda fh: torch.save(payload, fh))


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict (tensors on CPU), checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return check_checkpoint(torch_load_plain(path), path)


def torch_load_plain(path: Path):
    """`torch.load(weights_only=True)` on CPU; a damaged or foreign file is a one-line CheckpointError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises many types on damaged or foreign files; its advice to drop
        # weights_only would be wrong here, so its message is not passed on
        raise CheckpointError(
            f"{path} is not a readable pixel2gauss checkpoint or model file (damaged, not a PyTorch "
            f"or safetensors file, or holding objects other than tensors and plain containers)"
        ) from None


def is_checkpoint(data) -> bool:
    """Whether a loaded dict claims to be one of our checkpoints."""
    return isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT


def check_checkpoint(data, path: str | Path) -> dict:
    """`data` (read from `path`) if it is a complete checkpoint of a format version we know."""
    if not is_checkpoint(data):
        raise CheckpointError(f"{path} is not a pixel2gauss checkpoint")
    version = data.get("version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{path} is damaged: its format version is {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} was written by a newer pixel2gauss (checkpoint format {version}); upgrade")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise CheckpointError(f"{path} is damaged: it has no {key!r} entry")
    check_digest(data, path, version)
    return data


def check_digest(data: dict, path: str | Path, version: int) -> None:
    """Refuse contents that differ from the digest they were saved with; a version-1 file (saved before digests
    existed) is loaded, and a one-line notice says that it carries none."""
    digest = data.get("digest")
    if digest is None and version < 2:
        warn_unverified(f"{path} carries no digest (saved before pixel2gauss checked its model files)")
        return
    if digest != tensor_digest({key: value for key, value in data.items() if key != "digest"}):
        raise damaged(path, "contents", cls=DamagedModelFileError)


def warn_unverified(what: str, remedy: str = "`p2g export` writes a copy that carries one") -> None:
    """The notice for a model file without a digest, given once per process (Python's own once-per-place
    bookkeeping is reset whenever any code changes the warning filters, as model loading does)."""
    message = f"{what}, so damage to its weights cannot be detected; {remedy}"
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        warnings.warn(message, UnverifiedFileWarning, stacklevel=2)


def model_from_checkpoint(data: dict, device: str | torch.device = "cpu") -> ContinuousSR:
    """Rebuild the model a checkpoint dict describes and load its weights (strictly)."""
    config = ModelConfig.from_dict(data["config"])
    info, state = data["dictionary"], data["state_dict"]
    dictionary = None
    if config.uses_dictionary:
        kernels = state.get("dictionary")
        if kernels is None:
            raise CheckpointError("checkpoint has no dictionary buffer although its model mixes a dictionary")
        scale = float(info["reference_scale"])
        if info.get("kernels_hash") and content_hash(kernels, scale) != info["kernels_hash"]:
            raise CheckpointError(
                "the checkpoint's dictionary does not match its recorded hash; the file is damaged or was edited"
            )
        dictionary = CovarianceDictionary(kernels.float(), scale, dict(info.get("provenance", {})))
    model = ContinuousSR(config, dictionary)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint weights do not fit its config: {str(err).splitlines()[0]}") from None
    return model.to(device).eval()
