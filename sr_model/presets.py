"""Model configurations: one frozen dataclass, three named presets (`lite`, `swinir`, `hat`).

A checkpoint stores `config.to_dict()` and rebuilds its model from it, so every field is a plain value.
The head sizes of `swinir`/`hat` are the official ContinuousSR ones; `lite` is a small CNN with narrow
heads that trains on a CPU. Two fields select the paper's ablations (fixed centres, no dictionary), one
the official offset-head input (see `offset_input`), one whether colours are a residual over the LR's
interpolation (`color_anchor`: on in `lite`, off in the official architectures).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

ENCODERS = ("swinir", "hat", "lite")
#: "raw": the offset MLP reads the pixel-unshuffled features (official 482ec14, 2025-03-24);
#: "leaky_relu": it reads leaky_relu(features) like the covariance branch (official refactor 2521c53 and HEAD).
OFFSET_INPUTS = ("raw", "leaky_relu")
#: The variant the released official checkpoint was trained with (reasoning in sr_model/official_import.py).
RELEASED_OFFSET_INPUT = "raw"
#: "drift": base + tanh offset (|offset| < 1 LR px); "fixed": Gaussians stay on the lattice (ablation).
POSITIONS = ("drift", "fixed")
#: "dictionary": softmax mix of the covariance dictionary; "free": an MLP predicts the triplet (ablation).
COVARIANCES = ("dictionary", "free")
#: "none": the colour head's output is the colour (official); "lr": it is a residual over the colour that makes
#: the field render the LR's bicubic interpolation (sr_model.color_anchor), so training starts at bicubic.
COLOR_ANCHORS = ("none", "lr")


class ConfigError(ValueError):
    """A model configuration that cannot be built."""


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
        for name, choices in (("encoder", ENCODERS), ("offset_input", OFFSET_INPUTS), ("positions", POSITIONS),
                              ("covariance", COVARIANCES), ("color_anchor", COLOR_ANCHORS)):
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
        if self.encoder != "lite" and any(self.embed_dim % n for n in self.num_heads):
            raise ConfigError(f"embed_dim {self.embed_dim} must be divisible by every num_heads {self.num_heads}")
        if self.encoder == "hat" and min(self.embed_dim // self.compress_ratio, self.embed_dim // self.squeeze_factor) < 1:
            raise ConfigError(f"HAT needs embed_dim >= compress_ratio and >= squeeze_factor, got {self.embed_dim}, "
                              f"{self.compress_ratio}, {self.squeeze_factor}")

    @property
    def uses_dictionary(self) -> bool:
        return self.covariance == "dictionary"

    def to_dict(self) -> dict:
        """Plain dict (tuples stay tuples) for checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        """Rebuild from `to_dict()`; unknown keys (a newer writer) are refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config fields {unknown}; this checkpoint needs a newer pixel2gauss")
        return cls(**data)


_TRANSFORMER = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, mlp_ratio=2.0)

PRESETS: dict[str, ModelConfig] = {
    # Official ContinuousSR encoder: the `swinir` factory's default SwinIR (img_size 48, window 8).
    "swinir": ModelConfig(preset="swinir", encoder="swinir", window_size=8, img_size=48, **_TRANSFORMER),
    # HAT-SRx4 settings (window 16). The released HAT checkpoint's own settings are read from its weights
    # on import (sr_model.official_import), so this preset only matters for training from scratch.
    "hat": ModelConfig(preset="hat", encoder="hat", window_size=16, img_size=64, **_TRANSFORMER),
    # Small CNN + narrow heads, trainable on a CPU; colours anchored on the LR's interpolation.
    "lite": ModelConfig(preset="lite", encoder="lite", lite_channels=32, lite_blocks=4, cov_dim=32,
                        cov_hidden=(64,), color_hidden=(128, 64), offset_hidden=(128, 64), color_anchor="lr"),
}


def preset(name: str, **overrides) -> ModelConfig:
    """The named preset with `overrides` applied, e.g. preset("lite", positions="fixed")."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown model config fields {unknown}; known: {', '.join(sorted(known))}")
    return replace(PRESETS[name], **overrides)
