"""The three heads of ContinuousSR, each reading one 256-d feature per Gaussian.

Features arrive as (B, 256, 2h, 2w) (pixel-unshuffled encoder output); Gaussian n = r * 2w + c reads
column (r, c). Every head returns per-Gaussian rows (B, N, ...). Layer sizes come from the config; with
the `swinir`/`hat` presets they are the official ones (conv1 256->512; mlp_vector 3->256->512x4;
colour and offset MLPs 256->512->1024->256->128->64->out), with exact GELU between Linear layers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Slope of the leaky ReLU in front of conv1 (and of the refactored offset head).
LEAKY_SLOPE = 0.01


class MLP(nn.Module):
    """Linear layers with GELU between them, stored as `layers` (keys layers.0, layers.2, ... as upstream)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            modules += [nn.Linear(last, width), nn.GELU()]
            last = width
        modules.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def per_gaussian(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H2, W2) -> (B, N, C), N = H2 * W2 in row-major lattice order."""
    return features.flatten(2).transpose(1, 2)


class DictionaryCovarianceHead(nn.Module):
    """DGP-driven covariance weighting: softmax over <mlp_vector(entry), conv1(leaky_relu(f))> mixes entries.

    Returns the mixed Cholesky triplets (B, N, 3) in the dictionary's units. As a convex combination they
    stay inside the dictionary's hull.
    """

    def __init__(self, feature_dim: int, embed_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_dim, embed_dim, kernel_size=3, padding=1)
        self.mlp_vector = MLP(3, embed_dim, hidden)

    def weights(self, features: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
        """Mixing weights (B, K, N), summing to 1 over the K dictionary entries."""
        query = self.conv1(F.leaky_relu(features, LEAKY_SLOPE)).flatten(2)  # (B, E, N)
        keys = self.mlp_vector(dictionary.to(query.dtype))  # (K, E)
        return torch.softmax(torch.matmul(keys, query), dim=1)

    def forward(self, features: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.weights(features, dictionary).transpose(1, 2), dictionary.to(features.dtype))


class FreeCovarianceHead(nn.Module):
    """Ablation "no dictionary": conv1 then an MLP predict (l11, l21, l22) directly.

    The diagonal goes through softplus so every covariance is positive definite; otherwise unconstrained.
    Same units as a dictionary (HR px at the reference scale), so the model divides both the same way.
    """

    def __init__(self, feature_dim: int, embed_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_dim, embed_dim, kernel_size=3, padding=1)
        self.mlp = MLP(embed_dim, 3, hidden)

    def forward(self, features: torch.Tensor, dictionary: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.mlp(per_gaussian(self.conv1(F.leaky_relu(features, LEAKY_SLOPE))))
        l11, l21, l22 = raw.unbind(-1)
        return torch.stack([F.softplus(l11), l21, F.softplus(l22)], dim=-1)


class OffsetHead(nn.Module):
    """Adaptive position drifting: tanh(MLP(f)) -> (B, N, 2) offsets (x, y), each in (-1, 1) LR px.

    `leaky_input` selects the upstream variant: False reads the raw features (482ec14), True reads
    leaky_relu(features) (2521c53 / HEAD; upstream also mixed images when B > 1, which we do not copy).
    """

    def __init__(self, feature_dim: int, hidden: Sequence[int], leaky_input: bool) -> None:
        super().__init__()
        self.mlp = MLP(feature_dim, 2, hidden)
        self.leaky_input = leaky_input

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.leaky_input:
            features = F.leaky_relu(features, LEAKY_SLOPE)
        return torch.tanh(self.mlp(per_gaussian(features)))


class ColorHead(nn.Module):
    """Colour Gaussian mapping: MLP(f) -> (B, N, 3) RGB, no activation (as upstream)."""

    def __init__(self, feature_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(feature_dim, 3, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(per_gaussian(features))
