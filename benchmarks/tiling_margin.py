"""Measure what tiled encoding costs in exactness and what an encode costs in memory, per encoder.

For each model:
- `radius`: `sr_model.inference.tiling.receptive_radius` (LR px), the bound the default tile context uses;
- `reach`: measured in float64 by changing one LR pixel of a photo and finding the farthest Gaussian that
  changes at all, and the distances beyond which every change stays below 1e-4 and 1e-6 (the effective
  margin of that model's weights);
- `tiled vs untiled`: max |difference| of the Gaussian parameters (means, Cholesky, colours) between a tiled
  and an untiled float32 encode, for the default context and shorter ones;
- `--memory`: the encode memory estimate (`sr_model.inference.encode.estimate_encode_bytes`) against the growth of the
  resident set during the encode, sampled every 0.5 ms in a fresh process (float32, one thread).

Models: the `lite` preset (random weights), the golden small official SwinIR and HAT (their stored weights,
tests/golden/), `--checkpoint CKPT` for a trained model, `--full` adds the full `swinir` / `hat` presets
(random weights; slow on a CPU, and their radius exceeds the probe image, so only a lower bound of the reach).
Timings and RSS on a shared machine are noisy.

    python benchmarks/tiling_margin.py [--memory] [--full] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sr_model.files.model_files import load_network  # noqa: E402
from sr_model.files.official_import import model_from_official  # noqa: E402
from sr_model.inference.encode import encode  # noqa: E402
from sr_model.inference.tiling import default_context, has_global_context, receptive_radius  # noqa: E402
from sr_model.networks.model import build_model  # noqa: E402
from sr_model.networks.presets import preset  # noqa: E402
from workflows.demo_assets import bundled_photo  # noqa: E402


def golden_model(name: str):
    golden = torch.load(ROOT / "tests" / "golden" / f"continuoussr_{name}_small.pt")
    return model_from_official({**golden["model_spec"], "sd": golden["state_dict"]})


def models(args) -> dict:
    torch.manual_seed(0)
    found = {
        "lite (random)": lambda: build_model(preset("lite"), "official").eval(),
        "swinir-small (golden)": lambda: golden_model("swinir"),
        "hat-small (golden)": lambda: golden_model("hat"),
    }
    if args.full:
        found["swinir (random)"] = lambda: build_model(preset("swinir"), "official").eval()
        found["hat (random)"] = lambda: build_model(preset("hat"), "official").eval()
    if args.checkpoint:
        found[f"{Path(args.checkpoint).name} (trained)"] = lambda: load_network(args.checkpoint)
    return found


def photo(side: int) -> torch.Tensor:
    image = bundled_photo("astronaut")[: 4 * side : 4, 40 : 40 + 4 * side : 4][:side, :side]  # a 4x subsampled view
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]


def reach(model, side: int) -> dict:
    """Largest change of any Gaussian parameter vs Chebyshev distance from one changed LR pixel (float64)."""
    model = model.double()
    image = photo(side).double()
    centre = side // 2
    with torch.no_grad():
        before = model.encode(image)
        bumped = image.clone()
        bumped[..., centre, centre] += 0.25
        after = model.encode(bumped)
    model.float()
    change = sum(
        (getattr(after, n) - getattr(before, n)).abs().amax(-1).view(2 * side, 2 * side)
        for n in ("means", "chol", "colors")
    )
    lr = torch.arange(2 * side) // 2
    dist = torch.maximum((lr - centre).abs()[:, None], (lr - centre).abs()[None, :])
    by_d = {int(d): float(change[dist == d].max()) for d in dist.unique()}

    def beyond(tol):
        return min([d for d in by_d if all(v < tol for e, v in by_d.items() if e >= d)], default=None)

    return {
        "image": side,
        "farthest_change": max(d for d, v in by_d.items() if v > 0),
        "image_edge": side - 1 - centre,
        "below_1e-4_from": beyond(1e-4),
        "below_1e-6_from": beyond(1e-6),
    }


def tiled_vs_untiled(model, side: int, tile: int, contexts) -> dict:
    image = photo(side)
    with torch.no_grad():
        whole = model.encode(image)
    out = {}
    for context in contexts:
        tiled = encode(model, image, tile=tile, context=context, budget=2**40)
        out[context] = max(
            float((getattr(tiled, n) - getattr(whole, n)).abs().max()) for n in ("means", "chol", "colors")
        )
    return out


_MEMORY_CHILD = """
import sys, threading, time, psutil, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from benchmarks.tiling_margin import models_by_name
from sr_model.inference.encode import estimate_encode_bytes
model = models_by_name({name!r}, {checkpoint!r})
side = {side}
estimate = estimate_encode_bytes(model, side, side)
image = torch.rand(1, 3, side, side)
with torch.no_grad():
    model.encode(torch.rand(1, 3, 16, 16))
process, peak, done = psutil.Process(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.0005)
base = process.memory_info().rss
watcher = threading.Thread(target=sample)
watcher.start()
with torch.no_grad():
    field = model.encode(image)
done.set()
watcher.join()
print(estimate, peak[0] - base)
"""


def models_by_name(name: str, checkpoint: str | None):
    args = argparse.Namespace(full=True, checkpoint=checkpoint)
    return models(args)[name]()


def memory(name: str, side: int, checkpoint: str | None) -> dict:
    code = _MEMORY_CHILD.format(root=str(ROOT), name=name, side=side, checkpoint=checkpoint)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    estimate, measured = int(out[-2]), int(out[-1])
    return {
        "side": side,
        "estimate_MiB": round(estimate / 2**20, 1),
        "measured_MiB": round(measured / 2**20, 1),
        "ratio": round(estimate / max(1, measured), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", action="store_true", help="also compare the memory estimate with peak RSS")
    parser.add_argument("--full", action="store_true", help="also the full swinir and hat presets (slow)")
    parser.add_argument("--checkpoint", help="also this (trained) checkpoint")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    results = {}
    for name, make in models(args).items():
        model = make()
        config = model.config
        radius = receptive_radius(config)
        side = min(2 * radius + 1, 65 if name.split()[0] in ("swinir", "hat") else 2 * radius + 1)
        row = {
            "radius": radius,
            "default_context": default_context(config),
            "global": has_global_context(config),
            "reach": reach(model, side),
        }
        context = default_context(config)
        shorter = sorted({context, context // 2, context // 4, 0})
        row["tiled_vs_untiled_max_abs"] = tiled_vs_untiled(model, 2 * context + 32, 16, shorter)
        if args.memory:
            row["memory"] = [memory(name, s, args.checkpoint) for s in (64, 128)]
        results[name] = row
        print(f"{name}: {json.dumps(row)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
