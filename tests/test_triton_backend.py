"""The Triton backend against the torch reference, on CUDA when there is one, else on CPU under TRITON_INTERPRET=1.

Without either, this module skips; tests/test_triton_interpreter.py runs it in a subprocess with the interpreter
on, so the kernels are checked on every machine. Under the interpreter each kernel loop step costs Python time,
so the cases there are fewer and the fields have a small neighbourhood; on CUDA every case runs.
"""

from __future__ import annotations

import os
import struct

import pytest
import torch

from gaussian_field import GaussianField, available_backends, render
from gaussian_field.lattice import base_positions, neighbourhood_reach
from gaussian_field.render import resolve_geometry
from tests.test_render_backends import (
    GEOMETRIES,
    assert_agrees,
    boundary_field,
    golden_fields,
    random_field,
    window_cases,
)

ON_GPU = torch.cuda.is_available()
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1" and not ON_GPU
DEVICE = "cuda" if ON_GPU else "cpu"

pytestmark = pytest.mark.skipif(
    not (ON_GPU or INTERPRETING) or "triton" not in available_backends(DEVICE),
    reason="needs CUDA, or TRITON_INTERPRET=1 (tests/test_triton_interpreter.py sets it in a subprocess)",
)

CASES = GEOMETRIES if ON_GPU else [(2.0, None), ((2.0, 3.3), None), ((0.6, 1.3), None), (None, (7, 5))]
SPREAD = 0.5 if ON_GPU else 0.2


def field_on_device(**kwargs) -> GaussianField:
    kwargs.setdefault("spread", SPREAD)
    return random_field(device=DEVICE, **kwargs)


def test_auto_picks_triton_for_device_tensors():
    if ON_GPU:
        assert available_backends("cuda")[0] == "triton"
        assert available_backends("cuda", differentiable=True)[0] == "triton"
    else:
        assert available_backends("cpu")[0] != "triton", "the interpreter must never be the CPU default"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale, size", CASES)
def test_random_fields_match_reference(dtype, scale, size):
    field = field_on_device(b=2, h=4, w=5, dtype=dtype, seed=1)
    want = render(field, scale=scale, size=size, backend="torch")
    got = render(field, scale=scale, size=size, backend="triton")
    assert got.device == want.device
    assert_agrees(got, want, dtype, f"triton scale={scale} size={size}")


def test_rows_bands_match_reference():
    field = field_on_device(h=6, w=4, seed=2)
    full = render(field, scale=(3.3, 2.1), backend="torch")
    for rows in [(0, 1), (5, 17), (19, 20), (9, 9)]:
        got = render(field, scale=(3.3, 2.1), rows=rows, backend="triton")
        assert_agrees(got, full[:, :, rows[0] : rows[1]], torch.float32, f"rows {rows}")


def test_a_window_renders_what_the_whole_field_does():
    """As tests/test_render_backends.py checks for the CPU backends: a window of rows (y_origin) gives the whole
    field's pixels bit for bit, forward; its gradients equal the reference's."""
    field = field_on_device(h=24, w=3, seed=12)
    for first, stop, rows, scale in list(window_cases(field))[:2]:
        size = resolve_geometry(field.lr_size, None, scale)[1]
        whole = render(field, scale=scale, size=size, rows=rows, backend="triton")
        part = render(field.window(first, stop), scale=scale, size=size, rows=rows, y_origin=first, backend="triton")
        assert rows[1] > rows[0] and torch.equal(part, whole), (first, stop, rows, scale)
    window = field.window(2, 9)
    window.means.requires_grad_(True)
    grads = {}
    for backend in ("torch", "triton"):
        out = render(window, scale=2.0, size=(2 * field.h, 2 * field.w), rows=(8, 14), y_origin=2, backend=backend)
        grads[backend] = torch.autograd.grad(out.square().sum(), window.means)[0]
    assert_agrees(grads["triton"], grads["torch"], torch.float32, "window gradients")


def test_golden_fields_match_reference(golden_model):
    for name, field, scale in golden_fields(golden_model, device=DEVICE):
        if INTERPRETING and name != "x2.5":
            continue
        want = render(field, scale=scale, backend="torch")
        assert_agrees(render(field, scale=scale, backend="triton"), want, torch.float32, name)


def test_cut_boundary_is_decided_as_the_reference_decides():
    field, scale = boundary_field(h=3, w=4)
    field = field.to(device=DEVICE)
    want = render(field, scale=scale, backend="torch")
    assert_agrees(render(field, scale=scale, backend="triton"), want, torch.float32, "boundary")


def test_wide_and_degenerate_gaussians():
    """One Gaussian much wider than the rest sets the neighbourhood; l11 or l22 <= 0 is dropped."""
    h, w, k = 3, 4, 2
    n = h * w * k * k
    gen = torch.Generator().manual_seed(3)
    means = base_positions(h, w, k) + 0.1 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    chol = torch.tensor([0.15, 0.02, 0.12], dtype=torch.float64).repeat(n, 1)
    chol[5] = torch.tensor([0.9, 0.3, 0.6])
    chol[7, 0] = 0.0
    chol[9, 2] = -0.3
    colors = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    field = GaussianField(means, chol, colors, h, w, k, validate=False).to(device=DEVICE)
    want = render(field, scale=2.5, backend="torch")
    assert_agrees(render(field, scale=2.5, backend="triton"), want, torch.float64, "wide")


def test_reach_kernel_equals_lattice_reach():
    from gaussian_field.triton_backend import reach_maxima

    for seed in range(2):
        field = field_on_device(b=2, seed=seed, spread=0.4)
        bits = reach_maxima(field, field.means, field.chol).cpu().tolist()
        drift_x, drift_y, ext_x, ext_y = (struct.unpack("<d", struct.pack("<q", v))[0] for v in bits)
        assert (drift_x + ext_x, drift_y + ext_y) == _reach_floats(field)


def test_device_reach_equals_lattice_reach():
    """The backward's neighbourhood, computed on the device, is lattice.neighbourhood_reach's."""
    from gaussian_field.triton_backend import device_reach

    fields = [field_on_device(b=2, seed=seed, spread=spread) for seed in range(2) for spread in (0.1, 0.4)]
    fields.append(field_on_device(b=1, seed=3, dtype=torch.float64))
    for field in fields:
        got = tuple(device_reach(field, field.means, field.chol).cpu().tolist())
        assert got == neighbourhood_reach(field.means, field.chol, field.h, field.w, field.k)


@pytest.mark.skipif(not ON_GPU, reason="host synchronisation is a CUDA notion")
def test_a_fitting_step_never_waits_for_the_device():
    """Render, loss, backward and fused Adam run under CUDA's sync debug mode set to raise on any host wait."""
    field = field_on_device(b=4, h=8, w=8, seed=2)
    params = [t.clone().requires_grad_(True) for t in (field.means, field.chol, field.colors)]
    target = torch.rand(4, 3, 32, 32, device=DEVICE)
    optimiser = torch.optim.Adam(params, lr=1e-3, fused=True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            out = render(GaussianField(*params, 8, 8, 2, validate=False), size=(32, 32), backend="triton")
            optimiser.zero_grad(set_to_none=True)
            (out - target).square().flatten(1).mean(1).sum().backward()
            optimiser.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(p).all() for p in params)


def _reach_floats(field):
    """The float64 sums lattice.neighbourhood_reach rounds (recomputed as it does)."""
    from gaussian_field.lattice import support_half_extents

    base = base_positions(field.h, field.w, field.k, dtype=torch.float64, device=field.device)
    drift = (field.means.double() - base).abs().amax(dim=(0, 1))
    extent = support_half_extents(field.chol.double()).amax(dim=(0, 1))
    rx, ry = (drift + extent).cpu().tolist()
    return rx, ry


def _grads(field: GaussianField, backend: str, scale, weights: torch.Tensor):
    params = [t.clone().requires_grad_(True) for t in (field.means, field.chol, field.colors)]
    out = render(GaussianField(*params, field.h, field.w, field.k, validate=False), scale=scale, backend=backend)
    return out, torch.autograd.grad((out * weights).sum(), params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_reference_autograd(dtype):
    field = field_on_device(b=2, h=2, w=3, seed=5, dtype=dtype)
    scale = (2.7, 2.1)
    weights = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = weights.to(dtype=dtype, device=DEVICE)
    out_ref, grads_ref = _grads(field, "torch", scale, weights)
    out, grads = _grads(field, "triton", scale, weights)
    assert_agrees(out, out_ref, dtype)
    for name, got, want in zip(("means", "chol", "colors"), grads, grads_ref):
        tol = 1e-4 * float(want.abs().max()) if dtype == torch.float32 else 1e-11
        assert float((got - want).abs().max()) <= tol, name


@pytest.mark.skipif(
    not ON_GPU,
    reason="hundreds of renders; too slow for the interpreter (the float64 gradient "
    "comparison above covers the same maths)",
)
def test_gradcheck():
    field = field_on_device(h=2, w=2, seed=6, dtype=torch.float64)
    params = [t.clone().requires_grad_(True) for t in (field.means, field.chol, field.colors)]

    def fn(m, c, col):
        return render(GaussianField(m, c, col, 2, 2, 2, validate=False), scale=(2.5, 1.5), backend="triton")

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6)


@pytest.mark.skipif(not ON_GPU, reason="tile shapes only matter on a GPU")
@pytest.mark.parametrize("tile", [(8, 32, 4), (32, 32, 8), (16, 64, 8)])
def test_other_tile_shapes_agree(tile):
    from gaussian_field import triton_backend

    field = field_on_device(h=9, w=7, seed=8)
    want = render(field, scale=3.3, backend="torch")
    got = triton_backend.forward(
        field, field.means, field.chol, field.colors, (3.3, 3.3), want.shape[-1], 0, want.shape[-2], tile=tile
    )
    assert_agrees(got, want, torch.float32, f"tile {tile}")


def _fast_forward(field, scale):
    from gaussian_field import triton_backend
    from gaussian_field.render import resolve_geometry

    (s_h, s_w), (height, width) = resolve_geometry(field.lr_size, None, scale)
    return triton_backend.forward(field, field.means, field.chol, field.colors, (s_h, s_w), width, 0, height, fast=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_variant_matches_reference(dtype):
    field = field_on_device(b=2, h=4, w=5, dtype=dtype, seed=11)
    for scale in (2.0, (0.6, 1.3)):
        assert_agrees(_fast_forward(field, scale), render(field, scale=scale, backend="torch"), dtype, f"{scale}")


def test_fast_variant_decides_the_cut_boundary_exactly():
    """Its reciprocal-based m is off by ulps; near the cut it must fall back to the reference's divisions."""
    field, scale = boundary_field(h=3, w=4)
    field = field.to(device=DEVICE)
    assert_agrees(_fast_forward(field, scale), render(field, scale=scale, backend="torch"), torch.float32)
