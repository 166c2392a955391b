"""Rendering speed, measured: megapixels per second of each backend, the reference and bicubic, with ratios.

Used by `p2g bench` and benchmarks/render_speed.py; imports only torch (and the renderers), so the GPU check can
run it on a machine that has nothing but torch and triton. Every figure of one report comes from one run, so the
ratios compare like with like on a shared, noisy machine. The report's text and its targets are
`workflows.bench_report`'s. The multi-scale figure (one encode, many renders,
against re-running the whole model per scale) takes the encoder as a callable, so this module stays free of the
model package.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypedDict, TypeVar

import torch
import torch.nn.functional as F

from gaussian_field.field import GaussianField
from gaussian_field.lattice import base_positions, neighbourhood_reach
from gaussian_field.render import available_backends, output_size_for, render

#: The scales of the report (x2, x4, x8 and a non-integer one).
DEFAULT_SCALES = (2.0, 4.0, 8.0, 12.3)
#: The reference renders at most about this many megapixels per timing: beyond it, a band of rows (its speed
#: per pixel does not depend on the band: it works in bands anyway), so a report stays within a minute on a CPU.
REFERENCE_MAX_MPIX = 1.1
#: Multi-scale figure: 40 scales from x1.1 to x8, as in the paper.
MULTI_SCALES = tuple(1.1 + i * (8.0 - 1.1) / 39 for i in range(40))

Result = TypeVar("Result")


class Figure(TypedDict):
    """One timed call: wall median, megapixels per second, process CPU seconds (all threads) of that call."""

    median_s: float
    mpix_per_s: float
    cpu_s: float


class ReferenceFigure(Figure):
    """The reference's figure, timed on the band of output rows [rows[0], rows[1])."""

    rows: list[int]


class BackendFigure(Figure):
    """A backend's figure, its largest difference to the reference and its speed-ups over reference and bicubic."""

    max_abs_diff_to_reference: float
    x_reference: float
    x_bicubic: float


class ScaleFigures(TypedDict):
    """Every figure of one scale of `render_speed`: output size (H, W), reference, backends, bicubic."""

    scale: float
    out: list[int]
    reference: ReferenceFigure
    backends: dict[str, BackendFigure]
    bicubic: Figure


def benchmark_field(
    size: int = 256, seed: int = 0, device: str | torch.device = "cpu", batch: int = 1
) -> GaussianField:
    """A size x size float32 field of random Gaussians (the same recipe as benchmarks/render_reference.py):
    offsets tanh(N(0,1)) LR px, l11, l22 in [0.05, 0.55], l21 ~ N(0, 0.15), colours in [0, 0.3]."""
    gen = torch.Generator().manual_seed(seed)
    base = base_positions(size, size, 2, dtype=torch.float32)
    n = base.shape[0]
    means = base + torch.tanh(torch.randn(batch, n, 2, generator=gen))
    chol = torch.stack(
        [
            torch.rand(batch, n, generator=gen) * 0.5 + 0.05,
            torch.randn(batch, n, generator=gen) * 0.15,
            torch.rand(batch, n, generator=gen) * 0.5 + 0.05,
        ],
        -1,
    )
    colors = torch.rand(batch, n, 3, generator=gen) * 0.3
    return GaussianField(means, chol, colors, size, size, 2).to(device=device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: Process CPU seconds (all threads) of the median-wall call of the last time_call, for reports on busy machines.
_last_cpu_s = float("nan")


def time_call(fn: Callable[[], Result], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, Result]:
    """(median wall seconds over `repeats` calls after `warmup` untimed ones, last result)."""
    global _last_cpu_s
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):  # at least one timed call: it binds `result`
        start, cpu_start = time.perf_counter(), time.process_time()
        result = fn()
        _sync(device)
        times.append((time.perf_counter() - start, time.process_time() - cpu_start))
    times.sort()
    _wall, _last_cpu_s = times[(len(times) - 1) // 2]
    return statistics.median(t[0] for t in times), result


def _figure(seconds: float, pixels: int) -> Figure:
    """Wall median, megapixels per second, and the process CPU time of that call (all threads): on a shared,
    busy machine the CPU time shows how much work a call was, whatever share of the cores it got."""
    return {"median_s": seconds, "mpix_per_s": pixels / seconds / 1e6, "cpu_s": _last_cpu_s}


def render_speed(
    field: GaussianField,
    scales: Sequence[float] = DEFAULT_SCALES,
    backends: Sequence[str] | None = None,
    repeats: int = 5,
    reference_max_mpix: float = REFERENCE_MAX_MPIX,
) -> list[ScaleFigures]:
    """Per scale: each backend's and bicubic's speed, the reference's, ratios and max |backend - reference|."""
    device = field.device
    names = [b for b in (backends or available_backends(device)) if b != "torch"]
    lr_image = render(field, scale=1.0, backend="torch").contiguous()  # what bicubic would upscale
    results: list[ScaleFigures] = []
    with torch.inference_mode():
        for scale in scales:
            height, width = output_size_for(field.lr_size, scale)
            pixels = height * width
            band = min(height, max(1, int(reference_max_mpix * 1e6 // width)))
            ref_s, ref_out = time_call(
                partial(render, field, scale=scale, rows=(0, band), backend="torch"),
                device,
                repeats=1 if band * width > 2e5 else repeats,
                warmup=0,
            )
            reference: ReferenceFigure = {**_figure(ref_s, band * width), "rows": [0, band]}
            timed: dict[str, tuple[Figure, float]] = {}  # figure and max |backend - reference|
            for name in names:
                seconds, out = time_call(partial(render, field, scale=scale, backend=name), device, repeats)
                timed[name] = _figure(seconds, pixels), float((out[:, :, :band] - ref_out).abs().max())
            bicubic_s, _ = time_call(
                partial(F.interpolate, lr_image, size=(height, width), mode="bicubic", align_corners=False),
                device,
                repeats,
            )
            bicubic = _figure(bicubic_s, pixels)
            backend_figures: dict[str, BackendFigure] = {
                name: {
                    **figure,
                    "max_abs_diff_to_reference": diff,
                    "x_reference": figure["mpix_per_s"] / reference["mpix_per_s"],
                    "x_bicubic": figure["mpix_per_s"] / bicubic["mpix_per_s"],
                }
                for name, (figure, diff) in timed.items()
            }
            results.append(
                {
                    "scale": scale,
                    "out": [height, width],
                    "reference": reference,
                    "backends": backend_figures,
                    "bicubic": bicubic,
                }
            )
    return results


def multi_scale_speed(
    encode: Callable[[torch.Tensor], GaussianField],
    lr: torch.Tensor,
    scales: Sequence[float] = MULTI_SCALES,
    backend: str = "auto",
) -> dict:
    """Total time to get every scale with one encode (ours) against encoding again for each scale (as a
    fixed-scale model must), both measured here, and their ratio."""
    device = lr.device
    with torch.inference_mode():
        encode(lr)  # warm-up: lazy initialisations and kernel compilation stay out of both totals
        _sync(device)
        start = time.perf_counter()
        field = encode(lr)
        for scale in scales:
            render(field, scale=scale, backend=backend)
        _sync(device)
        ours = time.perf_counter() - start
        start = time.perf_counter()
        for scale in scales:
            render(encode(lr), scale=scale, backend=backend)
        _sync(device)
        rerun = time.perf_counter() - start
    return {
        "scales": len(scales),
        "scale_range": [min(scales), max(scales)],
        "lr": list(lr.shape[-2:]),
        "one_encode_s": ours,
        "encode_per_scale_s": rerun,
        "ratio": rerun / ours,
    }


def gradient_speed(
    field: GaussianField, scale: float = 4.0, backends: Sequence[str] | None = None, repeats: int = 3
) -> dict:
    """One training step's rendering (forward + backward of a squared-error loss) per differentiable backend and
    the reference's autograd, with ratios and the largest gradient difference to the reference."""
    device = field.device
    names = list(backends or available_backends(device, differentiable=True))
    if "torch" not in names:
        names.append("torch")
    target = render(field, scale=scale, backend="torch").detach() * 0.9

    def step(name: str) -> tuple[torch.Tensor, ...]:
        leaf_field, params = _leaf_copy(field)
        out = render(leaf_field, scale=scale, backend=name)
        return torch.autograd.grad((out - target).square().mean(), params)

    figures: dict[str, dict[str, float]] = {}
    grads: dict[str, tuple[torch.Tensor, ...]] = {}
    for name in ["torch"] + [n for n in names if n != "torch"]:
        seconds, grads[name] = time_call(
            partial(step, name),
            device,
            repeats=1 if name == "torch" else repeats,
            warmup=0 if name == "torch" else 1,
        )
        figure = {"median_s": seconds}
        if name != "torch":
            figure["x_reference"] = figures["torch"]["median_s"] / seconds
            figure["max_rel_grad_diff"] = max(
                float((g - r).abs().max() / r.abs().max().clamp(min=1e-30)) for g, r in zip(grads[name], grads["torch"])
            )
        figures[name] = figure
    return {"scale": scale, "lr": list(field.lr_size), "batch": field.batch_size, "backends": figures}


def _leaf_copy(field: GaussianField) -> tuple[GaussianField, list[torch.Tensor]]:
    """A copy of `field` on fresh leaf tensors that require grad, and those leaves (means, chol, colors)."""
    means, chol, colors = (t.detach().clone().requires_grad_(True) for t in (field.means, field.chol, field.colors))
    return GaussianField(means, chol, colors, field.h, field.w, field.k, validate=False), [means, chol, colors]


def training_step_speed(field: GaussianField, scale: float = 4.0, backend: str = "auto", repeats: int = 5) -> dict:
    """A fitting step's rendering at a size that fills the device (a batch of crop-sized fields): the forward
    (render + squared-error loss, graph kept) and the backward (gradients of the three field tensors) timed apart,
    each synchronised, medians over `repeats` after one untimed step; megapixels per second of each."""
    device = field.device
    height, width = output_size_for(field.lr_size, scale)
    target = torch.rand(field.batch_size, 3, height, width, generator=torch.Generator().manual_seed(1)).to(device)
    leaf_field, params = _leaf_copy(field)
    forward_s, backward_s = [], []
    for i in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        loss = (render(leaf_field, size=(height, width), backend=backend) - target).square().flatten(1).mean(1).sum()
        _sync(device)
        middle = time.perf_counter()
        torch.autograd.grad(loss, params)
        _sync(device)
        end = time.perf_counter()
        if i:
            forward_s.append(middle - start)
            backward_s.append(end - middle)
    pixels = field.batch_size * height * width
    fwd, bwd = statistics.median(forward_s), statistics.median(backward_s)
    chosen = backend if backend != "auto" else available_backends(device, differentiable=True)[0]
    return {
        "backend": chosen,
        "batch": field.batch_size,
        "lr": list(field.lr_size),
        "out": [height, width],
        "scale": scale,
        "pixels": pixels,
        "forward_s": fwd,
        "backward_s": bwd,
        "forward_mpix_per_s": pixels / fwd / 1e6,
        "backward_mpix_per_s": pixels / bwd / 1e6,
        "step_mpix_per_s": pixels / (fwd + bwd) / 1e6,
        "backward_over_forward": bwd / fwd,
    }


def report_header(field: GaussianField) -> dict:
    """What was measured on: device, threads, field size and its lattice neighbourhood."""
    device = field.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    try:
        import numba

        numba_threads = numba.get_num_threads()
    except ImportError:
        numba_threads = None
    return {
        "device": str(device),
        "device_name": name,
        "torch_threads": torch.get_num_threads(),
        "numba_threads": numba_threads,
        "torch": torch.__version__,
        "field": {
            "lr": list(field.lr_size),
            "gaussians": field.num_gaussians,
            "reach": list(neighbourhood_reach(field.means, field.chol, field.h, field.w, field.k)),
        },
    }
