"""Import released ContinuousSR checkpoints into our format.

Upstream files hold `torch.load(p)["model"] = {"name": "continuous-gaussian", "args": {"encoder_spec": {"name":
"swinir" | "hat", "args": {...}}, ...}, "sd": state_dict}`. The encoder's settings are read from its weights
(spandrel's SwinIR/HAT detection), not from `args`: upstream's `swinir` factory ignores its args, so the
weights are the only reliable record. Floating tensors may be stored in reduced precision; they are cast
to float32. Head keys are renamed (table below), `encoder.conv_last.*` is dropped (never used upstream),
the official dictionary is attached, and the result is saved with `save_checkpoint` (`import_official`) or
used in memory (`model_from_official`, which every model loader calls on an official file).

Offset head: the released checkpoint predates the 2025-04-07 refactor (2521c53) that fed leaky_relu
features to the offset MLP. The paper (arXiv 2503.06617, March 2025) and the first public model code
(482ec14, 2025-03-24, raw features) come before it, and the refactored reshape mixes images for batch
sizes above 1, which would have broken batched training. So the default is "raw"; "leaky_relu" is kept
selectable. This is inferred from the dates; no released checkpoint could be run here to confirm it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from sr_model.files.checkpoint import save_checkpoint, warn_unverified
from sr_model.networks.covariance_dictionary import official_dictionary
from sr_model.networks.encoder_specs import ENCODER_SPECS
from sr_model.networks.model import ContinuousSR
from sr_model.networks.presets import OFFSET_INPUTS, RELEASED_OFFSET_INPUT, preset

#: Official head prefixes -> ours (checked in order; "mlp." does not match "mlp_offset." or "mlp_vector.").
OFFICIAL_KEY_MAP = (
    ("conv1.", "covariance_head.conv1."),
    ("mlp_vector.", "covariance_head.mlp_vector."),
    ("mlp_offset.", "offset_head.mlp."),
    ("mlp.", "color_head.mlp."),
    ("encoder.", "encoder."),
)
#: Upstream `encoder_spec` names that can be imported (each encoder's spec says whether it can).
IMPORTABLE_ENCODERS = tuple(name for name, spec in ENCODER_SPECS.items() if spec.importable)
DEFAULT_OFFSET_INPUT = RELEASED_OFFSET_INPUT


class OfficialCheckpointError(ValueError):
    """A file that is not a ContinuousSR checkpoint we can import."""


@dataclass(frozen=True)
class ImportSummary:
    path: Path
    encoder: str
    num_parameters: int
    config_overrides: dict


def read_official(path: str | Path) -> dict:
    """The `model` spec dict of an official file, checked for the fields we need."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch.load raises many types on damaged or foreign files (message not passed on:
        # it advises weights_only=False, which would run arbitrary code from the file)
        raise OfficialCheckpointError(
            f"{path} is not a readable PyTorch checkpoint (damaged, not a PyTorch file, "
            f"or holding pickled objects that a safe load refuses)"
        ) from None
    return official_spec(data, path)


def looks_official(data) -> bool:
    """Whether a loaded file has the released layout's top-level `model` entry (checked by `official_spec`)."""
    return isinstance(data, dict) and "model" in data


def official_spec(data, path: str | Path) -> dict:
    """The checked `model` spec of an official file's contents `data` (read from `path`)."""
    spec = data.get("model") if isinstance(data, dict) else None
    if not isinstance(spec, dict) or spec.get("name") != "continuous-gaussian":
        raise OfficialCheckpointError(
            f"{path} is not a ContinuousSR checkpoint: expected ['model'] with name 'continuous-gaussian'"
        )
    encoder_spec = (spec.get("args") or {}).get("encoder_spec") or {}
    if encoder_spec.get("name") not in IMPORTABLE_ENCODERS:
        names = " or ".join(repr(name) for name in IMPORTABLE_ENCODERS)
        raise OfficialCheckpointError(
            f"{path}: unsupported encoder {encoder_spec.get('name')!r}; ContinuousSR "
            f"checkpoints with a {names} encoder can be imported"
        )
    if not isinstance(spec.get("sd"), dict) or not spec["sd"]:
        raise OfficialCheckpointError(f"{path}: the checkpoint holds no state dict ('sd')")
    return spec


def encoder_overrides(name: str, encoder_state: dict, args: dict | None = None) -> dict:
    """ModelConfig fields of the encoder, read from its weights with spandrel (from `args` only those the spec's
    `official_args` names)."""
    spec = ENCODER_SPECS[name]
    arch = spec.spandrel_architecture()
    if not arch.detect(encoder_state):
        raise OfficialCheckpointError(f"the encoder weights are not a {name} network (the spec names {name!r})")
    try:
        with warnings.catch_warnings():  # spandrel's torch.meshgrid calls warn about `indexing`; harmless
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            hp = arch.load(encoder_state).model.hyperparameters
    except Exception as err:  # spandrel raises assorted errors on foreign weights
        raise OfficialCheckpointError(f"cannot read the {name} encoder's settings from its weights: {err}") from None
    if (
        hp.get("upsampler") != "pixelshuffle"
        or hp.get("upscale") != 4
        or hp.get("in_chans") != 3
        or hp.get("resi_connection") != "1conv"
        or hp.get("patch_size") != 1
    ):
        raise OfficialCheckpointError(
            f"the {name} encoder is not a ContinuousSR encoder (needs a 4x pixelshuffle upsampler on RGB input, "
            f"got upsampler={hp.get('upsampler')!r}, upscale={hp.get('upscale')!r})"
        )
    given = {key: (args or {})[key] for key in spec.official_args if key in (args or {})}
    return {field: cast(given.get(field, hp[field])) for field, cast in spec.official_fields}


def convert_state_dict(official_sd: dict, name: str) -> dict:
    """Official keys -> ours, floating tensors as float32, the encoder `name`'s unused layers dropped."""
    out = {}
    dropped = ENCODER_SPECS[name].official_dropped
    for key, value in official_sd.items():
        if key.startswith(dropped):
            continue
        for old, new in OFFICIAL_KEY_MAP:
            if key.startswith(old):
                out[new + key[len(old) :]] = value.to(torch.float32) if value.is_floating_point() else value
                break
        else:
            raise OfficialCheckpointError(f"unexpected key {key!r} in the official state dict")
    return out


def model_from_official(spec: dict, offset_input: str = DEFAULT_OFFSET_INPUT) -> ContinuousSR:
    """Our model with the official weights and the official dictionary, in eval mode."""
    if offset_input not in OFFSET_INPUTS:
        raise ValueError(f"offset_input must be one of {', '.join(OFFSET_INPUTS)}, got {offset_input!r}")
    encoder_spec = spec["args"]["encoder_spec"]
    name = encoder_spec["name"]
    encoder_state = {
        k[len("encoder.") :]: v.to(torch.float32) if v.is_floating_point() else v
        for k, v in spec["sd"].items()
        if k.startswith("encoder.")
    }
    config = preset(name, offset_input=offset_input, **encoder_overrides(name, encoder_state, encoder_spec.get("args")))
    model = ContinuousSR(config, official_dictionary())
    state = convert_state_dict(spec["sd"], name)
    state.update(dictionary=model.dictionary, dictionary_scale=model.dictionary_scale)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())[:300]
        raise OfficialCheckpointError(f"the official weights do not fit the ContinuousSR layout: {detail}") from None
    return model.eval()


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def import_record(source: Path, spec: dict, offset_input: str) -> dict:
    """Where an imported model came from (stored as `imported_from` in checkpoints and exports)."""
    name = spec["args"]["encoder_spec"]["name"]
    dropped = ENCODER_SPECS[name].official_dropped
    return {
        "file": source.name,
        "sha256": file_sha256(source),
        "encoder_spec_name": name,
        "offset_input": offset_input,
        "dropped_keys": [k for k in spec["sd"] if k.startswith(dropped)],
    }


def import_official(
    source: str | Path, out: str | Path, offset_input: str = DEFAULT_OFFSET_INPUT, overwrite: bool = False
) -> ImportSummary:
    """Convert the official file `source` into our checkpoint `out`; an existing `out` is kept unless
    `overwrite`."""
    source, out = Path(source), Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose another --out or pass --force to replace it")
    spec = read_official(source)
    model = model_from_official(spec, offset_input)
    warn_unverified(
        f"{source} is an official ContinuousSR file; released files carry no digest",
        "the imported checkpoint carries one",
    )
    save_checkpoint(out, model, imported_from=import_record(source, spec, offset_input))
    config = model.config
    overrides = {k: getattr(config, k) for k in ("embed_dim", "depths", "num_heads", "window_size", "mlp_ratio")}
    return ImportSummary(
        out, spec["args"]["encoder_spec"]["name"], sum(p.numel() for p in model.parameters()), overrides
    )
