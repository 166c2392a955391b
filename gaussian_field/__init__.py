"""The continuous 2D Gaussian field: lattice layout, Cholesky maths and renderers.

Imports nothing else of the project (see ARCHITECTURE.md).
"""

__version__ = "0.1.0"

from gaussian_field.field import GaussianField, load_field, save_field
from gaussian_field.lattice import CUT_MAHALANOBIS_SQ
from gaussian_field.render import available_backends, output_size_for, render

__all__ = [
    "CUT_MAHALANOBIS_SQ",
    "GaussianField",
    "__version__",
    "available_backends",
    "load_field",
    "output_size_for",
    "render",
    "save_field",
]
