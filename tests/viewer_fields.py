"""Small real-photo fields for the viewer's tests: anisotropic, drifted, of several sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gaussian_field import GaussianField
from gaussian_field.initial import field_from_image


def photo_field(rgb: np.ndarray, seed: int = 0) -> GaussianField:
    """A field over an (h, w, 3) photo crop with drifted means and varied, anisotropic covariances."""
    image = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)
    field = field_from_image(image, k=2, sigma=0.45)
    gen = torch.Generator().manual_seed(seed)
    n = field.num_gaussians
    field.means = field.means + 0.3 * torch.randn(1, n, 2, generator=gen)
    chol = field.chol * (0.6 + 0.8 * torch.rand(1, n, 3, generator=gen))
    chol[..., 1] = 0.2 * torch.randn(1, n, generator=gen)
    field.chol = chol
    return field.check()


def shifted(field: GaussianField, origin) -> GaussianField:
    """The field seen from `origin` (LR point at the top-left corner): rendering it samples origin + (c+.5)/s."""
    shift = torch.tensor(origin, dtype=field.dtype)
    return GaussianField(field.means - shift, field.chol, field.colors, field.h, field.w, field.k)


@pytest.fixture(scope="module")
def lr(photo) -> np.ndarray:
    """The LR crop the viewer's tests show: 12x16 px of the astronaut."""
    return photo("astronaut", top=100, left=180, size=16)[:12].astype(np.float32)


@pytest.fixture(scope="module")
def field(lr) -> GaussianField:
    return photo_field(lr)
