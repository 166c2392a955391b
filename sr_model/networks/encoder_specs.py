"""One entry per encoder: everything the project knows about an architecture, in one table.

Presets, CLI choices, tiling, official-checkpoint import and the model's encoder (`EncoderSpec.build`) all read
`ENCODER_SPECS`, so adding an encoder is one entry here plus its class in the module the entry names
(`sr_model/networks/encoders.py` by default). An entry names the class and the settings it takes (ModelConfig fields,
passed by name), so a class needs neither this table nor ModelConfig. The table imports no heavy package (the
CLI's --help lists the names without loading torch): the class and the spandrel architecture are resolved on use.

Receptive layers, as `sr_model/inference/tiling.py` propagates them, each one of:
  ("conv", r)            r-pixel convolution at LR resolution (3x3: r = 1)
  ("window", ws, shift)  window attention, windows [shift + m*ws, shift + (m+1)*ws)
  ("overlap", ws, pad)   overlapping cross-attention: window m reads [m*ws - pad, (m+1)*ws + pad)
  ("branch", ops_a, ops_b)  two parallel paths (summed)
  ("conv2x", r)          r-pixel convolution at twice the LR resolution (after the first PixelShuffle)
A spec's `layers` lists the LR-resolution layers; every encoder then ends in the same 2x tail (tiling adds it).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sr_model.networks.presets import ModelConfig

Op = tuple


def _lite_layers(config: ModelConfig) -> list[Op]:
    """head conv, two convs per residual block, the body's last conv, the first upsampling conv."""
    return [("conv", 1)] * (2 * config.lite_blocks + 3)


def _transformer_layers(config: ModelConfig, hybrid: bool) -> list[Op]:
    """SwinIR's residual groups; `hybrid` adds HAT's parallel channel-attention convs and each group's OCAB."""
    ws = int(config.window_size)
    # spandrel (as upstream) drops the shift when the training image is no larger than the window
    if config.img_size <= ws:
        ws, shift = config.img_size, 0
    else:
        shift = ws // 2
    layers: list[Op] = [("conv", 1)]  # conv_first
    for depth in config.depths:
        for i in range(depth):
            attention = ("window", ws, 0 if i % 2 == 0 else shift)
            if hybrid:  # HAB: attention and a two-conv CAB in parallel
                layers.append(("branch", [attention], [("conv", 1), ("conv", 1)]))
            else:
                layers.append(attention)
        if hybrid:  # OCAB after each group
            overlap = int(config.window_size * config.overlap_ratio) + config.window_size
            layers.append(("overlap", ws, (overlap - ws) // 2))
        layers.append(("conv", 1))  # the group's 1conv
    layers += [("conv", 1), ("conv", 1), ("conv", 1)]  # conv_after_body, conv_before_upsample, first upsample conv
    return layers


def _heads_divide_width(config: ModelConfig) -> str | None:
    if any(config.embed_dim % n for n in config.num_heads):
        return f"embed_dim {config.embed_dim} must be divisible by every num_heads {config.num_heads}"
    return None


def _hat_attention_width(config: ModelConfig) -> str | None:
    if min(config.embed_dim // config.compress_ratio, config.embed_dim // config.squeeze_factor) < 1:
        return (
            f"HAT needs embed_dim >= compress_ratio and >= squeeze_factor, got {config.embed_dim}, "
            f"{config.compress_ratio}, {config.squeeze_factor}"
        )
    return None


def _int_tuple(value) -> tuple[int, ...]:
    return tuple(int(v) for v in value)


#: Hyperparameters every transformer encoder reads from official weights: ModelConfig field -> cast.
_TRANSFORMER_FIELDS = (
    ("embed_dim", int),
    ("depths", _int_tuple),
    ("num_heads", _int_tuple),
    ("window_size", int),
    ("mlp_ratio", float),
    ("img_size", int),
)
#: The settings SwinIR and HAT take (their constructors' keyword arguments).
_TRANSFORMER_SETTINGS = tuple(name for name, _ in _TRANSFORMER_FIELDS)
_TRANSFORMER_PRESET = dict(embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, mlp_ratio=2.0)


@dataclass(frozen=True)
class EncoderSpec:
    """Everything about one encoder architecture."""

    name: str
    #: class name in `module` (built as `cls(**settings)`)
    class_name: str
    #: the encoder's own settings: the ModelConfig fields its class takes, as keyword arguments of the same names
    settings: tuple[str, ...]
    #: ModelConfig fields of the preset named after the encoder (beyond `preset` and `encoder`)
    preset: dict[str, Any]
    #: LR-resolution receptive layers (see the module docstring)
    layers: Callable[[ModelConfig], list[Op]]
    #: tile cuts align to `config.window_size` (window attention) rather than to single pixels
    window_aligned: bool
    #: some layer pools over the whole input, so no tiling is exact
    global_context: bool = False
    #: spandrel architecture module (`spandrel.architectures.<name>`, class `<name>Arch`); None: not importable
    spandrel_arch: str | None = None
    #: ModelConfig fields read from official weights' hyperparameters, with their casts
    official_fields: tuple[tuple[str, Callable], ...] = ()
    #: fields that the official spec's `args` override (upstream reads them from args, not from the weights)
    official_args: tuple[str, ...] = ()
    #: official state-dict prefixes that are discarded on import (layers upstream keeps but never runs)
    official_dropped: tuple[str, ...] = ()
    #: ModelConfig checks for this encoder: each returns the problem as one line, or None
    checks: tuple[Callable[[ModelConfig], str | None], ...] = ()
    #: the module that defines `class_name` (imported on first use: spandrel's classes cost seconds to import)
    module: str = "sr_model.networks.encoders"

    @property
    def importable(self) -> bool:
        """Whether released ContinuousSR checkpoints with this encoder can be imported."""
        return self.spandrel_arch is not None

    def encoder_class(self) -> type:
        """The encoder's nn.Module class (imports torch)."""
        return getattr(importlib.import_module(self.module), self.class_name)

    def build(self, config: ModelConfig):
        """The encoder of `config` (an nn.Module; imports torch): its class given only its own settings."""
        with warnings.catch_warnings():  # spandrel calls torch.meshgrid without `indexing`: harmless, silenced
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            return self.encoder_class()(**{name: getattr(config, name) for name in self.settings})

    def spandrel_architecture(self):
        """A spandrel Architecture instance that detects and loads this encoder's official weights."""
        module = importlib.import_module(f"spandrel.architectures.{self.spandrel_arch}")
        return getattr(module, f"{self.spandrel_arch}Arch")()


ENCODER_SPECS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        # Official ContinuousSR encoder: the `swinir` factory's default SwinIR (img_size 48, window 8).
        EncoderSpec(
            name="swinir",
            class_name="SwinIREncoder",
            settings=_TRANSFORMER_SETTINGS,
            module="sr_model.networks.transformer_encoders",
            preset=dict(window_size=8, img_size=48, **_TRANSFORMER_PRESET),
            layers=lambda config: _transformer_layers(config, hybrid=False),
            window_aligned=True,
            spandrel_arch="SwinIR",
            official_fields=_TRANSFORMER_FIELDS,
            official_dropped=("encoder.conv_last.",),
            checks=(_heads_divide_width,),
        ),
        # HAT-SRx4 settings (window 16). The released HAT checkpoint's own settings are read from its weights
        # on import (sr_model.files.official_import), so this preset only matters for training from scratch. Channel
        # attention pools over the whole input: global context.
        EncoderSpec(
            name="hat",
            class_name="HATEncoder",
            settings=_TRANSFORMER_SETTINGS + ("compress_ratio", "squeeze_factor", "conv_scale", "overlap_ratio"),
            module="sr_model.networks.transformer_encoders",
            preset=dict(window_size=16, img_size=64, **_TRANSFORMER_PRESET),
            layers=lambda config: _transformer_layers(config, hybrid=True),
            window_aligned=True,
            global_context=True,
            spandrel_arch="HAT",
            official_fields=_TRANSFORMER_FIELDS
            + (("compress_ratio", int), ("squeeze_factor", int), ("overlap_ratio", float), ("conv_scale", float)),
            official_args=("conv_scale",),
            official_dropped=("encoder.conv_last.",),
            checks=(_heads_divide_width, _hat_attention_width),
        ),
        # Small CNN + narrow heads, trainable on a CPU.
        EncoderSpec(
            name="lite",
            class_name="LiteEncoder",
            settings=("lite_channels", "lite_blocks"),
            # colours anchored on the LR's interpolation (sr_model.networks.color_anchor)
            preset=dict(
                lite_channels=32,
                lite_blocks=4,
                cov_dim=32,
                cov_hidden=(64,),
                color_hidden=(128, 64),
                offset_hidden=(128, 64),
                color_anchor="lr",
            ),
            layers=_lite_layers,
            window_aligned=False,
        ),
    )
}


def encoder_spec(name: str) -> EncoderSpec:
    """The spec of encoder `name` (ModelConfig has already checked the name)."""
    return ENCODER_SPECS[name]
