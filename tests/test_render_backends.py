"""Every fast backend against the torch reference: random fields, golden files, photos, borders, bands, gradients.

The helpers here (fields, geometries, the agreement check) are shared with tests/test_triton_backend.py, which
runs the same comparisons for the Triton kernels (on CUDA, or on CPU through TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from gaussian_field import CUT_MAHALANOBIS_SQ, GaussianField, available_backends, render
from gaussian_field.lattice import base_positions, neighbourhood_reach, support_half_extents
from gaussian_field.render import resolve_geometry

#: Backends must agree with the reference to this (max abs difference) in float32, and to FLOAT64_ATOL in float64.
FLOAT32_ATOL = 1e-5
FLOAT64_ATOL = 1e-12

#: (scale, size) pairs: isotropic, non-integer, anisotropic, smaller than the input, an explicit size, large.
GEOMETRIES = [
    (2.0, None),
    (3.7, None),
    ((2.0, 5.0), None),
    ((0.6, 1.3), None),
    (0.35, None),
    (None, (7, 5)),
    (1.0, None),
    (12.3, None),
]


def random_field(b=1, h=5, w=6, k=2, dtype=torch.float32, seed=0, device="cpu", spread=0.5) -> GaussianField:
    """Offsets up to 1 LR px, anisotropic covariances (|l21| up to ~3 spread), colours of both signs."""
    gen = torch.Generator().manual_seed(seed)
    base = base_positions(h, w, k, dtype=torch.float64)
    n = base.shape[0]
    means = base + torch.tanh(2 * torch.randn(b, n, 2, generator=gen, dtype=torch.float64))
    chol = torch.stack(
        [
            torch.rand(b, n, generator=gen, dtype=torch.float64) * spread + 0.05,
            torch.randn(b, n, generator=gen, dtype=torch.float64) * spread * 0.6,
            torch.rand(b, n, generator=gen, dtype=torch.float64) * spread + 0.05,
        ],
        -1,
    )
    colors = torch.randn(b, n, 3, generator=gen, dtype=torch.float64)
    return GaussianField(means, chol, colors, h, w, k).to(dtype=dtype, device=device)


def golden_fields(golden_model, dtype=torch.float32, device="cpu"):
    """(name, field, (s_h, s_w)) for every stored scale, from the HR-pixel Gaussians as the reference test does."""
    for name, case in golden_model["scales"].items():
        scale = (case["scale_h"], case["scale_w"])
        field = GaussianField.from_hr(
            case["mean_hr_px"], case["cov_hr_px2"], case["color"].double(), scale, (20, 24, 2)
        )
        yield name, field.to(dtype=dtype, device=device), scale


def boundary_field(h=4, w=5, k=2, seed=0, dtype=torch.float32) -> tuple[GaussianField, float]:
    """Each Gaussian is shaped so that one sample point (scale 1.5) lies exactly on its 1/255 ellipse in real maths.

    Whether the rounded float32 distance passes the cut then depends on rounding alone; a backend that decides
    differently from the reference is off by |colour| / 255 there. Returns the field and the scale.
    """
    scale = 1.5
    gen = np.random.default_rng(seed)
    base = base_positions(h, w, k, dtype=torch.float64).numpy()
    n = base.shape[0]
    means = base + gen.uniform(-0.4, 0.4, size=(n, 2))
    chol = np.zeros((n, 3))
    for i in range(n):
        while True:
            # a target sample point near the Gaussian: pixel (r, c) samples ((c + .5) / s, (r + .5) / s)
            c = math.floor(means[i, 0] * scale) + int(gen.integers(-2, 3))
            r = math.floor(means[i, 1] * scale) + int(gen.integers(-2, 3))
            dx = (c + 0.5) / scale - means[i, 0]
            dy = (r + 0.5) / scale - means[i, 1]
            l11 = gen.uniform(0.3, 1.2)
            l21 = gen.uniform(-0.6, 0.6)
            rest = CUT_MAHALANOBIS_SQ - (dx / l11) ** 2
            if rest > 0.5 and abs(dy - l21 * dx / l11) > 0.05:
                chol[i] = (l11, l21, abs(dy - l21 * dx / l11) / math.sqrt(rest))
                break
    colors = np.ones((n, 3))
    field = GaussianField(torch.from_numpy(means), torch.from_numpy(chol), torch.from_numpy(colors), h, w, k)
    return field.to(dtype=dtype), scale


def assert_agrees(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    assert got.shape == want.shape, what
    assert got.dtype == want.dtype, what
    atol = FLOAT32_ATOL if dtype == torch.float32 else FLOAT64_ATOL
    diff = float((got.detach().cpu().double() - want.detach().cpu().double()).abs().max()) if got.numel() else 0.0
    assert diff <= atol, f"{what}: max |backend - reference| = {diff:.3g} > {atol:g}"


def fast_cpu_backends() -> list[str]:
    return [name for name in available_backends("cpu") if name != "torch"]


@pytest.fixture(scope="module", params=fast_cpu_backends() or ["<none>"])
def backend(request) -> str:
    if request.param == "<none>":
        pytest.skip("no fast CPU backend is installed")
    return request.param


def test_a_fast_cpu_backend_exists_and_auto_picks_it():
    assert "cpu" in fast_cpu_backends()
    assert available_backends("cpu")[0] == "cpu"
    assert available_backends("cpu", differentiable=True)[0] == "cpu"
    field = random_field(seed=9)
    assert torch.equal(render(field, scale=2.5), render(field, scale=2.5, backend="cpu"))


def test_the_registry_holds_the_backend_table_and_auto_follows_its_priorities():
    from gaussian_field.backend_table import BACKEND_NAMES, backend_entry
    from gaussian_field.render import _BACKENDS

    available_backends("cpu")  # loads every backend module that imports here (numba and triton_backend do)
    assert list(BACKEND_NAMES) == sorted(_BACKENDS, key=BACKEND_NAMES.index)
    assert set(_BACKENDS) == set(BACKEND_NAMES)
    for device in ("cpu", "cuda"):
        priorities = [backend_entry(name).priority for name in available_backends(device)]
        assert priorities == sorted(priorities, reverse=True), device
    assert {name: _BACKENDS[name].differentiable for name in BACKEND_NAMES} == {
        name: backend_entry(name).differentiable for name in BACKEND_NAMES
    }


def test_a_backend_outside_the_table_is_refused():
    from gaussian_field.render import Backend, register_backend

    with pytest.raises(ValueError, match="backend_table.py"):
        register_backend(Backend("mine", lambda *args: torch.zeros(0), lambda device: True))
    with pytest.raises(ValueError) as refused:
        render(random_field(), scale=2, backend="mine")
    assert str(refused.value) == "unknown render backend 'mine'; choose one of: auto, cpu, torch, triton"


def test_importing_the_package_imports_no_backend_kernels():
    """numba and triton load when a render first needs them, not with `import gaussian_field`."""
    code = (
        "import sys, gaussian_field, gaussian_field.backend_table; "
        "print(sorted(m for m in ('numba', 'triton', 'gaussian_field.cpu_backend') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale, size", GEOMETRIES)
def test_random_fields_match_reference(backend, dtype, scale, size):
    field = random_field(b=2, dtype=dtype, seed=1)
    want = render(field, scale=scale, size=size, backend="torch")
    got = render(field, scale=scale, size=size, backend=backend)
    assert_agrees(got, want, dtype, f"{backend} scale={scale} size={size}")


def test_rows_bands_match_reference(backend):
    field = random_field(h=7, w=4, seed=2)
    full = render(field, scale=(3.3, 2.1), backend="torch")
    for rows in [(0, 1), (5, 17), (22, 23), (9, 9), (0, full.shape[2])]:
        got = render(field, scale=(3.3, 2.1), rows=rows, backend=backend)
        assert_agrees(got, full[:, :, rows[0] : rows[1]], torch.float32, f"rows {rows}")


def window_cases(field: GaussianField):
    """(first, stop, rows, scale): windows of the field's LR rows and the output rows they render alone."""
    drift = (field.means - field.base_positions()).abs()[..., 1].max()
    reach = float(drift + support_half_extents(field.chol)[..., 1].max())  # LR px a Gaussian reaches in y
    for first, stop, scale in [(3, 17, 3.7), (0, 9, 2.0), (5, 24, (4.0, 1.5)), (10, 24, 0.7)]:
        s_h = scale if isinstance(scale, float) else scale[0]
        top = 0 if first == 0 else math.ceil((first + reach) * s_h)
        bottom = round(field.h * s_h) if stop == field.h else math.floor((stop - reach) * s_h)
        yield first, stop, (top, max(top, bottom)), scale


def test_a_window_renders_what_the_whole_field_does(backend):
    """The streamed upscale renders bands from windows of a field (means relative to their first row): the same
    numbers, bit for bit, as the whole field for rows that only its Gaussians reach."""
    field = random_field(h=24, w=5, seed=12, spread=0.25)
    for first, stop, rows, scale in window_cases(field):
        size = resolve_geometry(field.lr_size, None, scale)[1]
        whole = render(field, scale=scale, size=size, rows=rows, backend=backend)
        part = render(field.window(first, stop), scale=scale, size=size, rows=rows, y_origin=first, backend=backend)
        assert rows[1] > rows[0] + 2 and torch.equal(part, whole), (first, stop, rows, scale)
        assert torch.equal(whole, render(field, scale=scale, size=size, backend=backend)[:, :, rows[0] : rows[1]])


def test_reference_window_renders_what_the_whole_field_does():
    field = random_field(h=24, w=5, seed=12, spread=0.25, dtype=torch.float64)
    for first, stop, rows, scale in window_cases(field):
        size = resolve_geometry(field.lr_size, None, scale)[1]
        whole = render(field, scale=scale, size=size, rows=rows, backend="torch")
        part = render(field.window(first, stop), scale=scale, size=size, rows=rows, y_origin=first, backend="torch")
        assert torch.equal(part, whole), (first, stop, rows, scale)
    with pytest.raises(ValueError, match="size and scale"):
        render(field.window(2, 5), scale=2.0, y_origin=2)


def test_size_with_explicit_scale_samples_like_reference(backend):
    """An output size with its own sampling scale (a crop of a larger render): border pixels beyond the field."""
    field = random_field(h=3, w=3, seed=3)
    want = render(field, size=(14, 9), scale=(4.0, 2.0), backend="torch")
    assert_agrees(render(field, size=(14, 9), scale=(4.0, 2.0), backend=backend), want, torch.float32)


def test_golden_fields_match_reference_and_official_render(backend, golden_model):
    for name, field, scale in golden_fields(golden_model):
        want = render(field, scale=scale, backend="torch")
        got = render(field, scale=scale, backend=backend)
        assert_agrees(got, want, torch.float32, name)
        case = golden_model["scales"][name]
        mask = case["render_near_threshold_mask"]
        diff = (got[0].double() - case["render"]).abs()
        assert float(diff[:, ~mask].max()) < 1e-4, name
        assert float((diff * mask).max()) <= 1e-4 + case["render_near_threshold_max_jump"], name


def test_golden_lr_field_at_other_scales(backend, golden_model):
    lr = golden_model["field_lr"]
    field = GaussianField(lr["mean_lr_px"], lr["L_lr"], lr["color"].double(), 20, 24, 2).to(torch.float32)
    for scale in [1.7, (0.5, 0.8), (6.2, 3.0), 0.1]:
        assert_agrees(
            render(field, scale=scale, backend=backend),
            render(field, scale=scale, backend="torch"),
            torch.float32,
            f"scale {scale}",
        )


@pytest.mark.parametrize("name, scale", [("astronaut", 3.3), ("coffee", 0.75), ("retina", (2.0, 4.5))])
def test_photo_fields_match_reference(backend, photo, name, scale):
    from gaussian_field.initial import field_from_image

    image = torch.from_numpy(np.ascontiguousarray(photo(name, top=40, left=60, size=20))).float().permute(2, 0, 1)
    field = field_from_image(image, sigma=0.6)
    assert_agrees(
        render(field, scale=scale, backend=backend), render(field, scale=scale, backend="torch"), torch.float32, name
    )


@pytest.mark.parametrize("w", [5, 12])  # 12: 18 output columns, wider than the cpu backend's vector chunk
def test_cut_boundary_is_decided_as_the_reference_decides(backend, w):
    field, scale = boundary_field(w=w)
    want = render(field, scale=scale, backend="torch")
    assert_agrees(render(field, scale=scale, backend=backend), want, torch.float32, "boundary")
    # The test only means something if the rounding sends targeted terms both ways.
    means, chol = field.means[0].numpy(), field.chol[0].numpy()
    kept = dropped = 0
    xs = ((np.arange(64) + 0.5) / scale).astype(np.float32)
    for i in range(means.shape[0]):
        l11, l21, l22 = chol[i]
        z1 = (xs[None, :] - means[i, 0]) / l11
        z2 = ((xs[:, None] - means[i, 1]) - l21 * z1) / l22
        m = z1 * z1 + z2 * z2
        near = np.abs(m.astype(np.float64) - CUT_MAHALANOBIS_SQ) < 1e-5
        kept += int((near & (m <= np.float32(CUT_MAHALANOBIS_SQ))).sum())
        dropped += int((near & (m > np.float32(CUT_MAHALANOBIS_SQ))).sum())
    assert kept > 0 and dropped > 0, (kept, dropped)


def test_wide_and_degenerate_gaussians(backend):
    """A Gaussian reaching far beyond the usual neighbourhood still counts; l11 or l22 <= 0 is dropped."""
    field = random_field(h=4, w=4, seed=4, dtype=torch.float64)
    chol = field.chol.clone()
    chol[0, 5] = torch.tensor([3.0, 1.5, 2.5], dtype=chol.dtype)
    chol[0, 7, 0] = 0.0
    chol[0, 9, 2] = -0.3
    odd = GaussianField(field.means, chol, field.colors, 4, 4, 2, validate=False)
    for scale in (1.5, 4.0):
        want = render(odd, scale=scale, backend="torch")
        assert_agrees(render(odd, scale=scale, backend=backend), want, torch.float64, f"x{scale}")


@pytest.mark.parametrize("scale, rows", [(3.7, None), (12.3, None), ((5.1, 16.0), (7, 20)), ((2.0, 2.7), None)])
def test_cpu_vector_and_scalar_forward_both_match_reference(scale, rows):
    """The float32 forward has two kernels: vector chunks (windows at least LANES wide) and the scalar loop.

    Both against the reference where the vector one applies: spans longer than a chunk (x12.3), chunks pushed
    back from the right border, a row window, a batch of two.
    """
    from gaussian_field import _numba_kernels, cpu_backend

    field = random_field(b=2, h=5, w=7, seed=8)
    want = render(field, scale=scale, rows=rows, backend="torch")
    height, width = want.shape[-2:]
    assert cpu_backend.uses_vector_kernel(np.dtype(np.float32), width)
    s_h, s_w = (scale, scale) if isinstance(scale, float) else scale
    row0 = rows[0] if rows else 0
    geo = cpu_backend.geometry(field, (s_h, s_w), width, row0, row0 + height)
    arrays = [cpu_backend._numpy(t) for t in (field.means, field.chol, field.colors)]
    args = cpu_backend._kernel_args(*arrays, geo)
    vector = np.zeros(want.shape, np.float32)
    scalar = np.zeros(want.shape, np.float32)
    _numba_kernels.forward_f32(*args, 3, vector)
    _numba_kernels.forward(*args, True, 3, scalar)
    assert_agrees(torch.from_numpy(vector), want, torch.float32, f"vector kernel x{scale}")
    assert_agrees(torch.from_numpy(scalar), want, torch.float32, f"scalar kernel x{scale}")
    assert torch.equal(
        render(field, scale=scale, rows=rows, backend="cpu"), torch.from_numpy(cpu_backend.forward_numpy(*arrays, geo))
    )


def test_fast_reach_equals_lattice_reach(golden_model):
    from gaussian_field.cpu_backend import fast_reach

    fields = [random_field(b=2, seed=s, dtype=d) for s in range(3) for d in (torch.float32, torch.float64)]
    fields += [f for _, f, _ in golden_fields(golden_model)]
    for field in fields:
        assert fast_reach(field) == neighbourhood_reach(field.means, field.chol, field.h, field.w, field.k)


def _grads(field: GaussianField, backend: str, scale, weights: torch.Tensor):
    params = [t.clone().requires_grad_(True) for t in (field.means, field.chol, field.colors)]
    out = render(GaussianField(*params, field.h, field.w, field.k, validate=False), scale=scale, backend=backend)
    return out, torch.autograd.grad((out * weights).sum(), params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_match_reference_autograd(backend, dtype):
    field = random_field(b=2, h=4, w=5, seed=5, dtype=dtype)
    scale = (2.7, 3.1)
    weights = torch.randn(2, 3, 11, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)
    out_ref, grads_ref = _grads(field, "torch", scale, weights)
    out, grads = _grads(field, backend, scale, weights)
    assert_agrees(out, out_ref, dtype)
    for name, got, want in zip(("means", "chol", "colors"), grads, grads_ref):
        tol = 1e-4 * float(want.abs().max()) if dtype == torch.float32 else 1e-11
        assert float((got - want).abs().max()) <= tol, name


def test_gradcheck(backend):
    field = random_field(h=2, w=2, seed=6, dtype=torch.float64)
    params = [t.clone().requires_grad_(True) for t in (field.means, field.chol, field.colors)]

    def fn(m, c, col):
        return render(GaussianField(m, c, col, 2, 2, 2, validate=False), scale=(2.5, 1.5), backend=backend)

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-6)


def test_non_float32_64_fields_fall_back_to_reference_maths(backend):
    field = random_field(h=3, w=3, seed=7).to(dtype=torch.bfloat16)
    want = render(field, scale=2.0, backend="torch")
    assert torch.equal(render(field, scale=2.0, backend=backend), want)
