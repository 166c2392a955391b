"""Model configurations: one frozen dataclass, three named presets (`lite`, `swinir`, `hat`).

A checkpoint stores `config.to_dict()` and rebuilds its model from it, so every field is a plain value.
The head sizes of `swinir`/`hat` are the official ContinuousSR ones; `lite` is a small CNN with narrow
heads that trains on a CPU. Two fields select the paper's ablations (fixed centres, no dictionary), one
the official offset-head input (see `offset_input`), one whether colours are a residual over the LR's
interpolation (`color_anchor`: on in `lite`, off in the official architectures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from sr_model.networks.encoder_specs import ENCODER_SPECS

ENCODERS = tuple(ENCODER_SPECS)
#: "raw": the offset MLP reads the pixel-unshuffled features (official 482ec14, 2025-03-24);
#: "leaky_relu": it reads leaky_relu(features) like the covariance branch (official refactor 2521c53 and HEAD).
OFFSET_INPUTS = ("raw", "leaky_relu")
#: The variant the released official checkpoint was trained with (reasoning in sr_model/files/official_import.py).
RELEASED_OFFSET_INPUT = "raw"
#: "drift": base + tanh offset (|offset| < 1 LR px); "fixed": Gaussians stay on the lattice (ablation).
POSITIONS = ("drift", "fixed")
#: "dictionary": softmax mix of the covariance dictionary; "free": an MLP predicts the triplet (ablation).
COVARIANCES = ("dictionary", "free")
#: "none": the colour head's output is the colour (official); "lr": it is a residual over the colour that makes
#: the field render the LR's bicubic interpolation (sr_model.networks.color_anchor), so training starts at bicubic.
COLOR_ANCHORS = ("none", "lr")


class ConfigError(ValueError):
    """A model configuration that cannot be built."""


def unknown_fields(cls: type, data) -> list[str]:
    """Keys of `data` that are not fields of the dataclass `cls`, sorted (refused by name, never dropped)."""
    return sorted(set(data) - {f.name for f in fields(cls)})


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (the dictionary itself travels as a buffer)."""

    preset: str = "swinir"
    encoder: str = "swinir"
    # SwinIR / HAT (names as upstream; the encoder always ends in 64 channels at 4x, no final conv)
    embed_dim: int = 180
    depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
    window_size: int = 8
    mlp_ratio: float = 2.0
    img_size: int = 48
    compress_ratio: int = 3
    squeeze_factor: int = 30
    conv_scale: float = 0.01
    overlap_ratio: float = 0.5
    # lite CNN encoder (EDSR-baseline style)
    lite_channels: int = 32
    lite_blocks: int = 4
    # heads: covariance embedding width (conv1 out = mlp_vector out) and hidden layers of each MLP
    cov_dim: int = 512
    cov_hidden: tuple[int, ...] = (256, 512, 512, 512)
    color_hidden: tuple[int, ...] = (512, 1024, 256, 128, 64)
    offset_hidden: tuple[int, ...] = (512, 1024, 256, 128, 64)
    offset_input: str = "raw"
    positions: str = "drift"
    covariance: str = "dictionary"
    # a checkpoint written before this field existed has none, and loads as "none" (what it was trained with)
    color_anchor: str = "none"

    def __post_init__(self) -> None:
        for name, choices in (
            ("encoder", ENCODERS),
            ("offset_input", OFFSET_INPUTS),
            ("positions", POSITIONS),
            ("covariance", COVARIANCES),
            ("color_anchor", COLOR_ANCHORS),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        for name in ("depths", "num_heads", "cov_hidden", "color_hidden", "offset_hidden"):
            value = tuple(int(v) for v in getattr(self, name))
            if any(v <= 0 for v in value):
                raise ConfigError(f"{name} must hold positive integers, got {value}")
            object.__setattr__(self, name, value)
        if len(self.depths) != len(self.num_heads) or not self.depths:
            raise ConfigError(f"depths {self.depths} and num_heads {self.num_heads} must have the same length")
        for name in ("embed_dim", "window_size", "img_size", "lite_channels", "cov_dim"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.lite_blocks < 0:
            raise ConfigError(f"lite_blocks must be >= 0, got {self.lite_blocks}")
        for check in ENCODER_SPECS[self.encoder].checks:
            problem = check(self)
            if problem:
                raise ConfigError(problem)

    @property
    def uses_dictionary(self) -> bool:
        return self.covariance == "dictionary"

    def to_dict(self) -> dict:
        """Plain dict (tuples stay tuples) for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Rebuild from `to_dict()`; unknown keys (a newer writer) are refused by name."""
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ConfigError(f"unknown model config fields {unknown}; this checkpoint needs a newer pixel2gauss")
        return cls(**data)


#: One preset per encoder, named after it (its fields live in the encoder's entry of ENCODER_SPECS).
PRESETS: dict[str, ModelConfig] = {
    name: ModelConfig(preset=name, encoder=name, **spec.preset) for name, spec in ENCODER_SPECS.items()
}


def preset(name: str, **overrides) -> ModelConfig:
    """The named preset with `overrides` applied, e.g. preset("lite", positions="fixed")."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    unknown = unknown_fields(ModelConfig, overrides)
    if unknown:
        known = sorted(f.name for f in fields(ModelConfig))
        raise ConfigError(f"unknown model config fields {unknown}; known: {', '.join(known)}")
    return replace(PRESETS[name], **overrides)
