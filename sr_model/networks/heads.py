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
    """(B, C, H2, W2) -> (B, N, C), N = H2 * W2 in row-major lattice order, each row contiguous (what Linear reads
    fastest; a view when the features are channels-last already)."""
    return features.permute(0, 2, 3, 1).reshape(features.shape[0], -1, features.shape[1])


def leaky_relu(features: torch.Tensor) -> torch.Tensor:
    """leaky_relu at LEAKY_SLOPE; a channels-last map goes through as its dense (B, H, W, C) view, which torch's
    kernel handles about 3x faster than the permuted layout (same values)."""
    channels_last = features.dim() == 4 and features.is_contiguous(memory_format=torch.channels_last)
    if channels_last and not features.is_contiguous():
        return F.leaky_relu(features.permute(0, 2, 3, 1), LEAKY_SLOPE).permute(0, 3, 1, 2)
    return F.leaky_relu(features, LEAKY_SLOPE)


#: A crop of a lattice feature map: (rows, cols) slices, or None for all of it.
Core = tuple[slice, slice] | None


def crop(features: torch.Tensor, core: Core) -> torch.Tensor:
    return features if core is None else features[..., core[0], core[1]]


def mix_dictionary(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """softmax(query . keys^T) . values for every Gaussian: (B, N, E), (K, E), (K, V) -> (B, N, V).

    This is attention with K keys and V-wide values at scale 1, so torch's fused `scaled_dot_product_attention`
    computes it in blocks and never holds the (N, K) weights, forward or backward. The fused CPU kernel wants
    values as wide as the keys, so the V = 3 value columns are padded with zeros (and the keys, in the odd case of
    an embedding narrower than V). `mix_dictionary_reference` is the same sum written out.
    """
    bsz, _, embed = query.shape
    entries, width = values.shape
    if embed < width:  # zero columns change no dot product
        query, keys, embed = F.pad(query, (0, width - embed)), F.pad(keys, (0, width - embed)), width
    padded = F.pad(values, (0, embed - width))
    mixed = F.scaled_dot_product_attention(
        query.unsqueeze(1),
        keys.expand(bsz, 1, entries, embed),
        padded.expand(bsz, 1, entries, embed),
        scale=1.0,
    )
    return mixed[:, 0, :, :width].contiguous()  # not a view that keeps the padded columns alive


def mix_dictionary_reference(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """`mix_dictionary` as the upstream code computes it, through the (B, K, N) weights (for tests and benchmarks)."""
    weights = torch.softmax(torch.matmul(keys, query.transpose(1, 2)), dim=1)
    return torch.matmul(weights.transpose(1, 2), values)


class DictionaryCovarianceHead(nn.Module):
    """DGP-driven covariance weighting: softmax over <mlp_vector(entry), conv1(leaky_relu(f))> mixes entries.

    Returns the mixed Cholesky triplets (B, N, 3) in the dictionary's units. As a convex combination they
    stay inside the dictionary's hull. `core` selects the Gaussians of a tile after conv1, which reads one
    lattice cell around each.
    """

    def __init__(self, feature_dim: int, embed_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_dim, embed_dim, kernel_size=3, padding=1)
        self.mlp_vector = MLP(3, embed_dim, hidden)

    def query(self, features: torch.Tensor, core: Core = None) -> torch.Tensor:
        """(B, N, E): one query per Gaussian (of `core`)."""
        return per_gaussian(crop(self.conv1(leaky_relu(features)), core))

    def weights(self, features: torch.Tensor, dictionary: torch.Tensor) -> torch.Tensor:
        """Mixing weights (B, K, N), summing to 1 over the K dictionary entries: for analysis only (K x N floats)."""
        query = self.query(features)
        keys = self.mlp_vector(dictionary.to(query.dtype))  # (K, E)
        return torch.softmax(torch.matmul(keys, query.transpose(1, 2)), dim=1)

    def forward(self, features: torch.Tensor, dictionary: torch.Tensor, core: Core = None) -> torch.Tensor:
        query = self.query(features, core)
        values = dictionary.to(query.dtype)
        return mix_dictionary(query, self.mlp_vector(values), values)


class FreeCovarianceHead(nn.Module):
    """Ablation "no dictionary": conv1 then an MLP predict (l11, l21, l22) directly.

    The diagonal goes through softplus so every covariance is positive definite; otherwise unconstrained.
    Same units as a dictionary (HR px at the reference scale), so the model divides both the same way.
    """

    def __init__(self, feature_dim: int, embed_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(feature_dim, embed_dim, kernel_size=3, padding=1)
        self.mlp = MLP(embed_dim, 3, hidden)

    def forward(
        self, features: torch.Tensor, dictionary: torch.Tensor | None = None, core: Core = None
    ) -> torch.Tensor:
        raw = self.mlp(per_gaussian(crop(self.conv1(leaky_relu(features)), core)))
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
        return self.from_rows(per_gaussian(features))

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The offsets of per-Gaussian feature rows (B, N, C)."""
        if self.leaky_input:
            rows = F.leaky_relu(rows, LEAKY_SLOPE)
        return torch.tanh(self.mlp(rows))


class ColorHead(nn.Module):
    """Colour Gaussian mapping: MLP(f) -> (B, N, 3) RGB, no activation (as upstream)."""

    def __init__(self, feature_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mlp = MLP(feature_dim, 3, hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.from_rows(per_gaussian(features))

    def from_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The colours of per-Gaussian feature rows (B, N, C)."""
        return self.mlp(rows)
