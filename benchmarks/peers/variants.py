"""The paper's ablations as variants of the public `lite` model, built without editing sr_model/.

A variant is preset overrides (fixed centres, free covariance), a dictionary source (our prior's, or the
crude grids K1 / K2), and optionally a `specialise` step that swaps one module's class for a subclass with
the same parameters (so checkpoints written by `sr_model.training.loop.train` load into it unchanged):

- `P_off only`: positions are the offset head's tanh output mapped to the whole image, (t + 1)/2 * (w, h),
  with no lattice start. Our renderers work out each field's lattice reach from its drift, so such a field
  renders exactly (slowly in the reference renderer; the numba backend visits only pairs inside each ellipse).
- `no-dictionary (raw)`: the covariance MLP regresses the Cholesky triplet with no activation ("predict the
  covariance directly"); L L^T is positive semi-definite whatever the signs, degenerate only at l11 l22 = 0.
  Ours (`covariance="free"`) puts the diagonal through softplus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gaussian_field import GaussianField
from sr_model.networks.heads import LEAKY_SLOPE, Core, FreeCovarianceHead, crop, per_gaussian
from sr_model.networks.model import LATTICE_K, ContinuousSR


class AbsolutePositionsSR(ContinuousSR):
    """Means = (tanh offset + 1)/2 * (w, h): anywhere in the image, no lattice base (the P_off-only ablation)."""

    def encode(self, lr: torch.Tensor) -> GaussianField:
        h, w = lr.shape[-2:]
        parts = self.gaussians(lr)
        extent = torch.tensor([w, h], dtype=parts["offset"].dtype, device=parts["offset"].device)
        means = (parts["offset"] + 1.0) * 0.5 * extent
        chol = parts["mixed"] / self.dictionary_scale.to(parts["mixed"].dtype)
        return GaussianField(means, chol, parts["color"], h, w, LATTICE_K, validate=False)


class RawFreeCovarianceHead(FreeCovarianceHead):
    """The free covariance head without softplus: the MLP's three outputs are (l11, l21, l22)."""

    def forward(
        self, features: torch.Tensor, dictionary: torch.Tensor | None = None, core: Core = None
    ) -> torch.Tensor:
        return self.mlp(per_gaussian(crop(self.conv1(torch.nn.functional.leaky_relu(features, LEAKY_SLOPE)), core)))


def absolute_positions(model: ContinuousSR) -> ContinuousSR:
    model.__class__ = AbsolutePositionsSR
    return model


def raw_covariance(model: ContinuousSR) -> ContinuousSR:
    model.covariance_head.__class__ = RawFreeCovarianceHead
    return model


def grid_dictionary(path: Path, high: float, steps: int = 9) -> Path:
    """A crude dictionary: every (l11, l21, l22) of a steps^3 grid over [0, high]^3 (HR px at x4), as .npy."""
    values = np.linspace(0.0, high, steps, dtype=np.float32)
    grid = np.stack(np.meshgrid(values, values, values, indexing="ij"), axis=-1).reshape(-1, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, grid)
    return path


@dataclass(frozen=True)
class Variant:
    """One ContinuousSR-lite training setting. `dictionary`: 'prior', 'prior-126', 'K1', 'K2' or None (free)."""

    label: str
    overrides: dict = field(default_factory=dict)
    dictionary: str | None = "prior"
    specialise: Callable[[ContinuousSR], ContinuousSR] | None = None


#: The main ContinuousSR-lite model is VARIANTS["full"]; the others are the ablations of the paper.
VARIANTS: dict[str, Variant] = {
    "full": Variant("full (our prior's dictionary)"),
    "full-126": Variant("full, our prior's 126-kernel dictionary", dictionary="prior-126"),
    "K1": Variant("crude dictionary K1, entries in [0, 1]", dictionary="K1"),
    "K2": Variant("crude dictionary K2, entries in [0, 10]", dictionary="K2"),
    "fixed-centres": Variant("fixed centres", {"positions": "fixed"}),
    "p-off-only": Variant("P_off only (no lattice start)", specialise=absolute_positions),
    "no-dictionary": Variant("no dictionary (ours: softplus diagonal)", {"covariance": "free"}, dictionary=None),
    "no-dictionary-raw": Variant(
        "no dictionary (raw Cholesky regression)", {"covariance": "free"}, dictionary=None, specialise=raw_covariance
    ),
}
