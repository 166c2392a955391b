"""Rendering speed of every available backend against the torch reference and bicubic, one run, with ratios.

    .venv/bin/python benchmarks/render_speed.py                 # CPU: 256x256 field at x2, x4, x8, x12.3
    PYTHONPATH=. python3 benchmarks/render_speed.py --device cuda --json --out gpu_speed.json

The same figures as `p2g bench` (workflows/bench_cmd.py). Where click or the model package cannot be imported
(the GPU check's machine has only torch and triton), it still measures the renderers and says that the
multi-scale figure was skipped. Timings on a shared machine are noisy: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _report(args) -> dict:
    scales = tuple(float(s) for s in args.scales.split(","))
    try:
        from workflows.bench_cmd import bench_report
    except ImportError as err:
        import torch

        from gaussian_field.speed import (
            benchmark_field,
            gradient_speed,
            render_speed,
            report_header,
            training_step_speed,
        )
        from workflows.bench_report import target_checks

        device = torch.device(args.device)
        field = benchmark_field(args.size, device=device)
        report = report_header(field)
        report["scales"] = render_speed(field, scales, repeats=args.repeats)
        report["multi_scale"] = {"skipped": f"needs the p2g command line and the model package ({err})"}
        if not args.no_gradients:
            report["gradients"] = gradient_speed(benchmark_field(32, device=device, batch=2), 4.0)
            crops = args.step_batch or (1024 if device.type == "cuda" else 8)
            report["training_step"] = training_step_speed(
                benchmark_field(16, device=device, batch=crops), 4.0, repeats=args.repeats
            )
        report["targets"] = target_checks(report)
        return report
    return bench_report(
        args.device,
        args.size,
        scales,
        args.repeats,
        None if args.no_multi_scale else args.multi_lr,
        gradients=not args.no_gradients,
        step_batch=args.step_batch,
    )


def triton_tiles(args) -> dict:
    """Forward time of the Triton kernel at x4 for other tile shapes (rows x cols x warps), to choose the default."""
    import torch

    from gaussian_field import render, triton_backend
    from gaussian_field.speed import benchmark_field, time_call

    device = torch.device(args.device)
    field = benchmark_field(args.size, device=device)
    want = render(field, scale=4.0, backend="torch")
    height, width = want.shape[-2:]
    result = {}
    for spec in args.triton_tiles.split(","):
        fast = spec.endswith("f")
        tile = tuple(int(v) for v in spec.lower().rstrip("f").split("x"))
        seconds, out = time_call(
            lambda tile=tile, fast=fast: triton_backend.forward(
                field, field.means, field.chol, field.colors, (4.0, 4.0), width, 0, height, tile=tile, fast=fast
            ),
            device,
            args.repeats,
        )
        result[spec] = {"median_s": seconds, "max_abs_diff_to_reference": float((out - want).abs().max())}
    return result


def available(device: str) -> list[str]:
    from gaussian_field import available_backends

    return available_backends(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--size", type=int, default=256, help="LR size of the benchmark field")
    parser.add_argument("--scales", default="2,4,8,12.3")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--multi-lr", type=int, default=64, help="LR size for the 40-scale figure")
    parser.add_argument("--no-multi-scale", action="store_true")
    parser.add_argument("--no-gradients", action="store_true", help="leave out the training-step figures")
    parser.add_argument(
        "--step-batch",
        type=int,
        help="crops of 64 px in the device-filling fitting-step figure [default: 8 cpu, 1024 cuda]",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    parser.add_argument(
        "--triton-tiles",
        help="also time the Triton forward at x4 with these tiles, e.g. "
        "16x16x4,8x32x4f (rows x cols x warps; a trailing f: the kernel's FAST variant)",
    )
    args = parser.parse_args()
    report = _report(args)
    if args.triton_tiles and "triton" in report.get("backends_available", available(args.device)):
        report["triton_tiles_x4"] = triton_tiles(args)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report))
    else:
        from workflows.bench_report import format_report

        print("\n".join(format_report(report)))
        for spec, fig in report.get("triton_tiles_x4", {}).items():
            print(
                f"triton tile {spec} at x4: {fig['median_s'] * 1e3:.3f} ms, max |diff| "
                f"{fig['max_abs_diff_to_reference']:.1e}"
            )


if __name__ == "__main__":
    main()
