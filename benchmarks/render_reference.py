"""Megapixels per second of the torch reference renderer, 256x256 field -> x2, x4, x8 on CPU, and peak memory.

The baseline that the fast backends are measured against. Run: `.venv/bin/python benchmarks/render_reference.py`.
Peak memory is the process's resident-set high-water mark growth during each render (Linux ru_maxrss), measured
in a fresh subprocess per scale so one render's peak does not hide the next.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch


def make_field(size: int, seed: int = 0):
    from gaussian_field import GaussianField
    from gaussian_field.lattice import base_positions

    gen = torch.Generator().manual_seed(seed)
    base = base_positions(size, size, 2, dtype=torch.float32)
    n = base.shape[0]
    means = base + torch.tanh(torch.randn(1, n, 2, generator=gen))
    chol = torch.stack(
        [
            torch.rand(1, n, generator=gen) * 0.5 + 0.05,
            torch.randn(1, n, generator=gen) * 0.15,
            torch.rand(1, n, generator=gen) * 0.5 + 0.05,
        ],
        -1,
    )
    return GaussianField(means, chol, torch.rand(1, n, 3, generator=gen) * 0.3, size, size, 2)


def measure(size: int, scale: float, repeats: int) -> dict:
    from gaussian_field import render

    field = make_field(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = render(field, scale=scale, backend="torch")
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    median = statistics.median(times)
    pixels = out.shape[-2] * out.shape[-1]
    return {
        "scale": scale,
        "out": list(out.shape[-2:]),
        "median_s": median,
        "mpix_per_s": pixels / median / 1e6,
        "peak_rss_growth_mb": peak / 1024,
        "output_mb": out.numel() * 4 / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scales", default="2,4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if args.one:
        print(json.dumps(measure(args.size, args.one, args.repeats)))
        return
    print(f"reference torch renderer, {args.size}x{args.size} field, {torch.get_num_threads()} threads")
    for scale in (float(s) for s in args.scales.split(",")):
        line = subprocess.run(
            [sys.executable, __file__, "--size", str(args.size), "--one", str(scale), "--repeats", str(args.repeats)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        r = json.loads(line)
        print(
            f"x{r['scale']:g}: {r['out'][1]}x{r['out'][0]}  {r['median_s'] * 1000:8.1f} ms  "
            f"{r['mpix_per_s']:7.2f} MP/s  peak RSS growth {r['peak_rss_growth_mb']:7.1f} MB "
            f"(output {r['output_mb']:.1f} MB)"
        )


if __name__ == "__main__":
    main()
