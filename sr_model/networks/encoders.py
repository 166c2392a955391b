"""Encoders: LR image (B, 3, h, w) in [0, 1] -> features (B, 64, 4h, 4w).

The lite CNN and what every encoder shares live here; SwinIR and HAT (spandrel's classes) live in
`sr_model.networks.transformer_encoders`, imported only when a model uses them: importing spandrel takes about 1.5 s
and 170 MiB, which a lite model's `p2g upscale` should not pay.

What else the project knows about each encoder (preset, tiling layers, official import) is its entry in
`sr_model.networks.encoder_specs.ENCODER_SPECS`, which names the class here and the settings it takes; this
module imports nothing else of the project.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


class _UpsamplingTail:
    """What every encoder shares: a trunk at LR resolution, then `upsample` = conv, PixelShuffle(2), conv,
    PixelShuffle(2) to 64 channels at 4x.

    The model regroups those 64 @ 4x into 256 per Gaussian at 2x with PixelUnshuffle(2), the inverse of the last
    PixelShuffle(2), so `lattice_features` stops before that shuffle: the same numbers without two copies of the
    largest tensor. Every layer after the trunk is a 3x3 convolution, so a piece of the lattice needs only
    `TAIL_CONTEXT` LR pixels of trunk around it (`ContinuousSR.gaussians` works in such pieces).
    """

    upsample: nn.Sequential

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, h', w') LR-resolution features; h' >= h where the encoder pads to its window grid."""
        raise NotImplementedError

    def lattice_features(self, trunk: torch.Tensor) -> torch.Tensor:
        """(B, 256, 2h', 2w'): PixelUnshuffle(2) of the 4x features, one column per Gaussian of the k = 2 lattice.

        Channels-last: the convolutions run about 1.4x faster so on a CPU, and each Gaussian's 256 features are
        then one contiguous row for the heads' linear layers.
        """
        trunk = trunk.contiguous(memory_format=torch.channels_last)
        return self.upsample[2](F.pixel_shuffle(self.upsample[0](trunk), 2))

    def lattice_piece(
        self, trunk: torch.Tensor, size: tuple[int, int], box: tuple[int, int, int, int]
    ) -> tuple[torch.Tensor, tuple[slice, slice]]:
        """The lattice features of the LR box (top, left, bottom, right) of an h x w image, with one lattice cell
        around it (for the covariance head's conv1), and the slices of the box within them.

        Equal to the same cells of `lattice_features(trunk)` cropped to the image: each layer runs on just the
        rows and columns that its exact outputs need (TAIL_CONTEXT LR px of trunk), and a cut at the image's edge
        (or past it, in an encoder's window padding) pads with zeros as the whole-image pass does.
        """
        (h, w), (top, left, bottom, right) = size, box
        rows, cols = _spans(top, bottom, trunk.shape[-2], h), _spans(left, right, trunk.shape[-1], w)
        x = trunk[..., rows.read[0] : rows.read[1], cols.read[0] : cols.read[1]]
        x = self.upsample[0](x.contiguous(memory_format=torch.channels_last))
        x = x[..., rows.kept(0), cols.kept(0)]
        x = self.upsample[2](F.pixel_shuffle(x, 2))[..., rows.kept(1), cols.kept(1)]
        return x, (rows.core, cols.core)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = F.pixel_shuffle(self.lattice_features(self.trunk(x)), 2)
        return x[:, :, : FEATURE_UPSCALE * h, : FEATURE_UPSCALE * w]


#: LR pixels of trunk around a piece of the lattice that make its Gaussians exact: the tail's 3x3 conv at LR
#: (1 px), its 3x3 conv at 2x and the covariance head's 3x3 conv1 at 2x (one 2x row each: together 1 LR px).
TAIL_CONTEXT = 2


@dataclass(frozen=True)
class _Span:
    """One axis of `lattice_piece`: trunk read [read), first conv's outputs kept, lattice cells kept, the core."""

    read: tuple[int, int]
    first: tuple[int, int]
    cells: tuple[int, int]
    core: slice

    def kept(self, stage: int) -> slice:
        """Stage 0: the first conv's kept outputs within its input; stage 1: the kept cells within the 2x map."""
        if stage == 0:
            return slice(self.first[0] - self.read[0], self.first[1] - self.read[0])
        return slice(self.cells[0] - 2 * self.first[0], self.cells[1] - 2 * self.first[0])


def _spans(start: int, stop: int, padded: int, size: int) -> _Span:
    """LR [start, stop) of an axis of `size` px whose trunk holds `padded` >= size (window padding)."""
    read = (max(0, start - TAIL_CONTEXT), min(padded, stop + TAIL_CONTEXT))
    first = (max(0, start - 1), min(padded, stop + 1))
    cells = (max(0, 2 * start - 1), min(2 * size, 2 * stop + 1))
    return _Span(read, first, cells, slice(2 * start - cells[0], 2 * stop - cells[0]))


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


class LiteEncoder(_UpsamplingTail, nn.Module):
    """EDSR-baseline-like CNN: head conv, residual blocks, then two (conv, PixelShuffle(2)) steps to 64 @ 4x.

    Narrow (`lite_channels`) so it trains on a CPU. The last conv works at 2x and emits the 4 x 64 channels
    that PixelShuffle(2) spreads to 4x (the model's PixelUnshuffle(2) regroups them per Gaussian), which
    costs a quarter of a conv at 4x. The 64-channel 4x output matches the big encoders, so heads and
    lattice are the same.
    """

    def __init__(self, lite_channels: int, lite_blocks: int) -> None:
        super().__init__()
        ch = lite_channels
        self.head = nn.Conv2d(3, ch, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(lite_blocks)], nn.Conv2d(ch, ch, 3, padding=1))
        self.upsample = nn.Sequential(
            nn.Conv2d(ch, 4 * ch, 3, padding=1),
            nn.PixelShuffle(2),
            nn.Conv2d(ch, 4 * FEATURE_CHANNELS, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        return self.body(x) + x
