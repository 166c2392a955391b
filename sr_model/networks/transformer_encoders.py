"""SwinIR and HAT encoders: spandrel's architecture classes (their parameter names equal the official ones), run
the way ContinuousSR runs them: reflect-pad bottom/right to a multiple of the window, no mean shift, the
pixel-shuffle upsampler to 4x with 64 channels, no final RGB conv, crop to 4h x 4w. The official
`conv_last` weights exist in released state dicts but are never used; ours drop the layer (importing
discards those two tensors), so that no parameter goes without a gradient in training.

A module of its own so that spandrel is imported only by models that use it (see `sr_model.networks.encoders`).
"""

from __future__ import annotations

import torch
from spandrel.architectures.HAT import HAT
from spandrel.architectures.SwinIR import SwinIR

from sr_model.networks.encoders import FEATURE_UPSCALE, _UpsamplingTail, pad_to_window


class _OfficialFeatures(_UpsamplingTail):
    """The ContinuousSR forward shared by the SwinIR and HAT encoders (mixed in before the spandrel class)."""

    window_size: int

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(pad_to_window(x, self.window_size))
        x = self.conv_after_body(self.forward_features(x)) + x
        return self.conv_before_upsample(x)


def _official_arguments(
    embed_dim: int,
    depths: tuple[int, ...],
    num_heads: tuple[int, ...],
    window_size: int,
    mlp_ratio: float,
    img_size: int,
) -> dict:
    """The spandrel constructor arguments SwinIR and HAT share, as ContinuousSR configures them."""
    return dict(
        img_size=img_size,
        patch_size=1,
        in_chans=3,
        embed_dim=embed_dim,
        depths=list(depths),
        num_heads=list(num_heads),
        window_size=window_size,
        mlp_ratio=mlp_ratio,
        upscale=FEATURE_UPSCALE,
        img_range=1.0,
        upsampler="pixelshuffle",
        resi_connection="1conv",
    )


class SwinIREncoder(_OfficialFeatures, SwinIR):
    """SwinIR body + 4x pixel-shuffle upsampler, 64 output channels."""

    def __init__(
        self,
        embed_dim: int,
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        window_size: int,
        mlp_ratio: float,
        img_size: int,
    ) -> None:
        SwinIR.__init__(self, **_official_arguments(embed_dim, depths, num_heads, window_size, mlp_ratio, img_size))
        del self.conv_last


class HATEncoder(_OfficialFeatures, HAT):
    """HAT body + 4x pixel-shuffle upsampler, 64 output channels."""

    def __init__(
        self,
        embed_dim: int,
        depths: tuple[int, ...],
        num_heads: tuple[int, ...],
        window_size: int,
        mlp_ratio: float,
        img_size: int,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        overlap_ratio: float,
    ) -> None:
        HAT.__init__(
            self,
            **_official_arguments(embed_dim, depths, num_heads, window_size, mlp_ratio, img_size),
            compress_ratio=compress_ratio,
            squeeze_factor=squeeze_factor,
            conv_scale=conv_scale,
            overlap_ratio=overlap_ratio,
        )
        del self.conv_last
