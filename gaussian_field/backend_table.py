"""Every render backend, by name: the one list that `render`'s registry loads from and that checks and help read.

Plain data that imports nothing, so that reading it costs nothing: a backend's module (and numba or triton behind
it) is imported only when `render` first needs it. The CLI cannot import this module (`gaussian_field` itself
imports torch), so `workflows/options.py` repeats the names and a test compares them with these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendEntry:
    """A render backend as `render` and its callers see it, before its module is imported."""

    name: str
    #: Where its `render_window` lives; importing the module registers the backend (the torch reference is
    #: registered by `gaussian_field.render`, which imports it anyway).
    module: str
    #: Higher wins under backend="auto" among the available ones.
    priority: int
    #: Whether gradients flow through it (fitting and training need that).
    differentiable: bool


#: The reference first, then the fast backends, fastest first: the order in which help lists them.
BACKENDS: tuple[BackendEntry, ...] = (
    BackendEntry("torch", "gaussian_field.torch_reference", 0, True),  # exact, any device
    BackendEntry("cpu", "gaussian_field.cpu_backend", 10, True),  # numba kernels for CPU tensors
    BackendEntry("triton", "gaussian_field.triton_backend", 5, True),  # Triton kernels for CUDA tensors
)

BACKEND_NAMES: tuple[str, ...] = tuple(entry.name for entry in BACKENDS)


def backend_entry(name: str) -> BackendEntry:
    """The table's entry for `name`; KeyError for a name that is not in the table."""
    for entry in BACKENDS:
        if entry.name == name:
            return entry
    raise KeyError(name)
