"""`p2g bench [--device cpu|cuda] [--json]`: rendering speed of every backend against the reference and bicubic,
and the multi-scale figure (one encode for 40 scales against re-running the model per scale, `lite` encoder)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from workflows.options import POSITIVE_FLOAT, device_option, resolve_device

if TYPE_CHECKING:
    import torch

#: gaussian_field.speed.DEFAULT_SCALES, repeated here so that `p2g bench --help` does not import torch (tested).
DEFAULT_SCALES = (2.0, 4.0, 8.0, 12.3)

#: The training-step figure: a batch of two 32x32 fields at x4 (the reference's autograd is slow and memory-hungry).
GRAD_FIELD = (2, 32)
#: The fitting-step figure at a size that fills the device: crops of 64 px (16x16 fields at x4), this many per step.
STEP_CROP = 64
STEP_BATCH = {"cpu": 8, "cuda": 1024}


def set_cpu_threads(threads: int) -> None:
    """Same thread count for torch and for numba (the CPU backend), so their ratio compares like with like."""
    import torch

    torch.set_num_threads(threads)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def lite_multi_scale(device: torch.device, lr_size: int, seed: int = 0, scales: Sequence[float] | None = None) -> dict:
    """The multi-scale figure with a freshly initialised `lite` model (speed does not depend on its weights);
    `scales` defaults to gaussian_field.speed.MULTI_SCALES."""
    import torch

    from gaussian_field.speed import MULTI_SCALES, multi_scale_speed

    try:
        from sr_model.networks.model import build_model
        from sr_model.networks.presets import preset
    except ImportError as err:
        return {"skipped": f"the model package cannot be imported here ({err})"}
    torch.manual_seed(seed)
    model = build_model(preset("lite"), "official").to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    lr = torch.rand(1, 3, lr_size, lr_size, generator=generator).to(device)
    result = multi_scale_speed(model.encode, lr, MULTI_SCALES if scales is None else scales)
    result["encoder"] = "lite, random init"
    return result


def bench_report(
    device: str = "cpu",
    size: int = 256,
    scales: Sequence[float] = DEFAULT_SCALES,
    repeats: int = 5,
    multi_lr: int | None = 64,
    seed: int = 0,
    gradients: bool = True,
    threads: int | None = None,
    step_batch: int | None = None,
) -> dict:
    """Every figure of `p2g bench` as one dict; multi_lr=None leaves the multi-scale figure out; `threads` sets the
    CPU threads of torch (the reference, bicubic) and of the numba kernels alike."""
    import torch

    from gaussian_field import available_backends
    from gaussian_field.speed import benchmark_field, gradient_speed, render_speed, report_header, training_step_speed
    from workflows.bench_report import target_checks

    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device; use --device cpu")
    if size < 4:
        raise ValueError(f"--size must be at least 4 LR pixels, got {size}")
    if repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {repeats}")
    if step_batch is not None and step_batch < 1:
        raise ValueError(f"--step-batch must be at least 1, got {step_batch}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        set_cpu_threads(threads)
    field = benchmark_field(size, seed, dev)
    report = report_header(field)
    report["backends_available"] = available_backends(dev)
    report["scales"] = render_speed(field, scales, repeats=repeats)
    if multi_lr is None:
        report["multi_scale"] = {"skipped": "not asked for (--no-multi-scale)"}
    else:
        report["multi_scale"] = lite_multi_scale(dev, multi_lr, seed)
    if gradients:
        batch, grad_size = GRAD_FIELD
        report["gradients"] = gradient_speed(benchmark_field(grad_size, seed, dev, batch=batch), 4.0)
        crops = step_batch or STEP_BATCH[dev.type]
        report["training_step"] = training_step_speed(
            benchmark_field(STEP_CROP // 4, seed, dev, batch=crops), 4.0, repeats=repeats
        )
    report["targets"] = target_checks(report)
    return report


@click.command("bench")
@device_option()
@click.option("--json", "as_json", is_flag=True, help="Print every figure as one JSON object.")
@click.option("--size", default=256, show_default=True, help="LR size of the benchmark field (size x size).")
@click.option(
    "--scale",
    "scales",
    type=POSITIVE_FLOAT,
    multiple=True,
    help=f"Scales to time; repeatable (default {', '.join(f'{s:g}' for s in DEFAULT_SCALES)}).",
)
@click.option("--repeats", default=5, show_default=True, help="Timed calls per figure (the median is reported).")
@click.option("--multi-lr", default=64, show_default=True, help="LR size for the 40-scale multi-scale figure.")
@click.option("--no-multi-scale", is_flag=True, help="Leave out the multi-scale figure.")
@click.option("--no-gradients", is_flag=True, help="Leave out the training-step (forward + backward) figure.")
@click.option("--threads", type=int, help="CPU threads for torch and the numba kernels alike (default: as set).")
@click.option(
    "--step-batch",
    type=int,
    help=f"Crops of {STEP_CROP} px in the device-filling fitting-step figure "
    f"[default: {STEP_BATCH['cpu']} on cpu, {STEP_BATCH['cuda']} on cuda].",
)
def command(
    device: str,
    as_json: bool,
    size: int,
    scales,
    repeats: int,
    multi_lr: int,
    no_multi_scale: bool,
    no_gradients: bool,
    threads: int | None,
    step_batch: int | None,
) -> None:
    """Time every render backend against the torch reference and bicubic (ratios measured in one run)."""
    from workflows.bench_report import format_report

    report = bench_report(
        resolve_device(device),
        size,
        scales or DEFAULT_SCALES,
        repeats,
        None if no_multi_scale else multi_lr,
        gradients=not no_gradients,
        threads=threads,
        step_batch=step_batch,
    )
    if as_json:
        click.echo(json.dumps(report))
    else:
        for line in format_report(report):
            click.echo(line)
