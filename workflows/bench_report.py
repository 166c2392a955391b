"""`p2g bench`'s report as text, and its speed targets checked: plain dicts in, lines and verdicts out.

The measuring lives in `gaussian_field.speed`; this module only reads its report, imports nothing but the
standard library, and so serves benchmarks/render_speed.py on a machine that has torch and nothing else.
"""

from __future__ import annotations


def format_report(report: dict) -> list[str]:
    """Human-readable lines of a report made of report_header + {"scales": ..., "multi_scale": ...}."""
    field = report["field"]
    lines = [
        f"render speed on {report['device_name']} ({report['device']}, {report['torch_threads']} torch "
        f"threads, {report.get('numba_threads')} numba threads), {field['lr'][0]}x{field['lr'][1]} field, "
        f"{field['gaussians']} Gaussians, "
        f"lattice reach {field['reach']}; medians"
    ]
    for entry in report["scales"]:
        lines += _scale_lines(entry)
    multi = report.get("multi_scale")
    if multi and "skipped" in multi:
        lines.append(f"multi-scale: skipped ({multi['skipped']})")
    elif multi:
        lines.append(_multi_scale_line(multi))
    if report.get("gradients"):
        lines += _gradient_lines(report["gradients"])
    if report.get("training_step"):
        lines.append(_training_step_line(report["training_step"]))
    for check in report.get("targets", []):
        value = f"{check['value'] * 1e3:.2f} ms" if check["unit"] == "s" else f"{check['value']:.1f}x"
        lines.append(f"target: {check['what']}: measured {value} -> {'met' if check['met'] else 'NOT met'}")
    return lines


def _scale_lines(entry: dict) -> list[str]:
    """One scale: the reference and bicubic, then a line per backend."""
    height, width = entry["out"]
    ref = entry["reference"]
    band = "" if ref["rows"][1] == height else f" (rows 0-{ref['rows'][1]})"
    lines = [
        f"x{entry['scale']:g} -> {width}x{height}: reference {ref['mpix_per_s']:.3g} MP/s{band} "
        f"(wall {ref['median_s']:.2f} s, cpu {ref['cpu_s']:.2f} s), "
        f"bicubic {entry['bicubic']['mpix_per_s']:.1f} MP/s"
    ]
    for name, fig in entry["backends"].items():
        lines.append(
            f"  {name:7s} {fig['median_s'] * 1e3:9.2f} ms (cpu {fig['cpu_s'] * 1e3:.0f} ms)  "
            f"{fig['mpix_per_s']:9.1f} MP/s  "
            f"{fig['x_reference']:7.1f}x reference  {fig['x_bicubic']:6.2f}x bicubic  "
            f"max |diff| {fig['max_abs_diff_to_reference']:.1e}"
        )
    return lines


def _multi_scale_line(multi: dict) -> str:
    return (
        f"multi-scale, {multi['scales']} scales x{multi['scale_range'][0]:g}..x"
        f"{multi['scale_range'][1]:g} from a {multi['lr'][0]}x{multi['lr'][1]} LR image "
        f"({multi.get('encoder', 'encoder')}): one encode {multi['one_encode_s']:.3f} s, encode per scale "
        f"{multi['encode_per_scale_s']:.3f} s, ratio {multi['ratio']:.1f}x"
    )


def _gradient_lines(grad: dict) -> list[str]:
    """The training step through each backend against the reference's autograd."""
    reference = grad["backends"]["torch"]
    head = (
        f"training step (forward + backward), {grad['batch']} x {grad['lr'][0]}x{grad['lr'][1]} field at "
        f"x{grad['scale']:g}: reference autograd {reference['median_s'] * 1e3:.1f} ms"
    )
    return [head] + [
        f"  {name:7s} {fig['median_s'] * 1e3:9.2f} ms  {fig['x_reference']:7.1f}x reference  "
        f"max relative gradient difference {fig['max_rel_grad_diff']:.1e}"
        for name, fig in grad["backends"].items()
        if name != "torch"
    ]


def _training_step_line(step: dict) -> str:
    return (
        f"fitting step at a device-filling size, {step['batch']} crops of {step['out'][0]}x{step['out'][1]} "
        f"({step['lr'][0]}x{step['lr'][1]} fields at x{step['scale']:g}, {step['pixels'] / 1e6:.3g} Mpx), "
        f"{step['backend']}: forward {step['forward_s'] * 1e3:.2f} ms ({step['forward_mpix_per_s']:.3g} MP/s), "
        f"backward {step['backward_s'] * 1e3:.2f} ms ({step['backward_mpix_per_s']:.3g} MP/s, "
        f"{step['backward_over_forward']:.1f}x the forward); {step['step_mpix_per_s']:.3g} MP/s per step, "
        f"i.e. {step['step_mpix_per_s'] / 500:.3g} Mpx/s fitted at 500 steps"
    )


def target_checks(report: dict) -> list[dict]:
    """The speed targets, where this report measured them: the CPU backend at x4 (>= 20x the reference, a
    256 -> 1024 render in <= 50 ms) and the Triton forward on a GPU (256 -> 1024 in <= 1 ms)."""
    checks = []
    lr = report["field"]["lr"]
    for entry in report["scales"]:
        if entry["scale"] != 4.0:
            continue
        cpu = entry["backends"].get("cpu")
        if cpu:
            checks.append(
                {
                    "what": "cpu backend >= 20x reference at x4",
                    "value": cpu["x_reference"],
                    "unit": "x",
                    "met": cpu["x_reference"] >= 20,
                }
            )
            if lr == [256, 256]:
                checks.append(
                    {
                        "what": "cpu backend 256x256 -> 1024x1024 <= 50 ms",
                        "value": cpu["median_s"],
                        "unit": "s",
                        "met": cpu["median_s"] <= 0.05,
                    }
                )
        gpu = entry["backends"].get("triton")
        if gpu and lr == [256, 256] and report["device"].startswith("cuda"):
            checks.append(
                {
                    "what": "triton forward 256x256 -> 1024x1024 <= 1 ms",
                    "value": gpu["median_s"],
                    "unit": "s",
                    "met": gpu["median_s"] <= 1e-3,
                }
            )
    return checks
