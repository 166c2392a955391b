"""SwinIR and HAT encoders: spandrel's architecture classes (their parameter names equal the official ones), run
the way ContinuousSR runs them: reflect-pad bottom/right to a multiple of the window, no mean shift, the
pixel-shuffle upsampler to 4x with 64 channels, no final RGB conv, crop to 4h x 4w. The official
`conv_last` weights exist in released state dicts but are never used; ours drop the layer (importing
discards those two tensors), so that no parameter goes without a gradient in training.

A module of its own so that spandrel is imported only by models that use it (see `sr_model.encoders`).
"""

from __future__ import annotations

import torch
from spandrel.architectures.HAT import HAT
from spandrel.architectures.SwinIR import SwinIR

from sr_model.encoders import FEATURE_UPSCALE, _UpsamplingTail, pad_to_window
from sr_model.presets import ModelConfig


class _OfficialFeatures(_UpsamplingTail):
    """The ContinuousSR forward shared by the SwinIR and HAT encoders (mixed in before the spandrel class)."""

    window_size: int

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(pad_to_window(x, self.window_size))
        x = self.conv_after_body(self.forward_features(x)) + x
        return self.conv_before_upsample(x)


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
