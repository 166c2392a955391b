"""Encoders: LR image (B, 3, h, w) in [0, 1] -> features (B, 64, 4h, 4w).

SwinIR and HAT are spandrel's architecture classes (their parameter names equal the official ones), run
the way ContinuousSR runs them: reflect-pad bottom/right to a multiple of the window, no mean shift, the
pixel-shuffle upsampler to 4x with 64 channels, no final RGB conv, crop to 4h x 4w. The official
`conv_last` weights exist in released state dicts but are never used; ours drop the layer (importing
discards those two tensors), so that no parameter goes without a gradient in training.

What else the project knows about each encoder (preset, tiling layers, official import) is its entry in
`sr_model.encoder_specs.ENCODER_SPECS`, which names the class here.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from spandrel.architectures.HAT import HAT
from spandrel.architectures.SwinIR import SwinIR
from torch import nn

from sr_model.encoder_specs import encoder_spec
from sr_model.presets import ModelConfig

#: Every encoder ends here: 64 channels at 4x the LR size, then PixelUnshuffle(2) gives 256 per Gaussian.
FEATURE_CHANNELS = 64
FEATURE_UPSCALE = 4


def pad_to_window(x: torch.Tensor, window: int) -> torch.Tensor:
    """Reflect-pad bottom/right to a multiple of `window`, as upstream `check_image_size`.

    Reflection needs the pad to be smaller than the side; for inputs that small (where upstream fails)
    the edge is replicated instead.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % window, (-w) % window
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


class _OfficialFeatures:
    """The ContinuousSR forward shared by the SwinIR and HAT encoders (mixed in before the spandrel class)."""

    window_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = self.conv_first(pad_to_window(x, self.window_size))
        x = self.conv_after_body(self.forward_features(x)) + x
        x = self.upsample(self.conv_before_upsample(x))
        return x[:, :, : FEATURE_UPSCALE * h, : FEATURE_UPSCALE * w]


def _official_arguments(config: ModelConfig) -> dict:
    """The spandrel constructor arguments SwinIR and HAT share, as ContinuousSR configures them."""
    return dict(
        img_size=config.img_size,
        patch_size=1,
        in_chans=3,
        embed_dim=config.embed_dim,
        depths=list(config.depths),
        num_heads=list(config.num_heads),
        window_size=config.window_size,
        mlp_ratio=config.mlp_ratio,
        upscale=FEATURE_UPSCALE,
        img_range=1.0,
        upsampler="pixelshuffle",
        resi_connection="1conv",
    )


class SwinIREncoder(_OfficialFeatures, SwinIR):
    """SwinIR body + 4x pixel-shuffle upsampler, 64 output channels."""

    def __init__(self, config: ModelConfig) -> None:
        SwinIR.__init__(self, **_official_arguments(config))
        del self.conv_last


class HATEncoder(_OfficialFeatures, HAT):
    """HAT body + 4x pixel-shuffle upsampler, 64 output channels."""

    def __init__(self, config: ModelConfig) -> None:
        HAT.__init__(
            self,
            **_official_arguments(config),
            compress_ratio=config.compress_ratio,
            squeeze_factor=config.squeeze_factor,
            conv_scale=config.conv_scale,
            overlap_ratio=config.overlap_ratio,
        )
        del self.conv_last


class ResBlock(nn.Module):
    """EDSR residual block: conv-ReLU-conv plus the input (no batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LiteEncoder(nn.Module):
    """EDSR-baseline-like CNN: head conv, residual blocks, then two (conv, PixelShuffle(2)) steps to 64 @ 4x.

    Narrow (`lite_channels`) so it trains on a CPU. The last conv works at 2x and emits the 4 x 64 channels
    that PixelShuffle(2) spreads to 4x (the model's PixelUnshuffle(2) regroups them per Gaussian), which
    costs a quarter of a conv at 4x. The 64-channel 4x output matches the big encoders, so heads and
    lattice are the same.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        ch = config.lite_channels
        self.head = nn.Conv2d(3, ch, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(config.lite_blocks)], nn.Conv2d(ch, ch, 3, padding=1))
        self.upsample = nn.Sequential(
            nn.Conv2d(ch, 4 * ch, 3, padding=1),
            nn.PixelShuffle(2),
            nn.Conv2d(ch, 4 * FEATURE_CHANNELS, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.upsample(self.body(x) + x)


def build_encoder(config: ModelConfig) -> nn.Module:
    """The encoder named by `config.encoder` (the class its spec names)."""
    with warnings.catch_warnings():  # spandrel calls torch.meshgrid without `indexing`: harmless, silenced
        warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
        return encoder_spec(config.encoder).encoder_class()(config)
