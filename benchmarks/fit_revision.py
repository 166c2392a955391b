"""Fit crops with another git revision's `dgp_fitting.fitting.fit_crops`, to compare today's engine with it.

The revision's tracked files are exported with `git archive` into a temporary folder (the repository, its index
and work tree are left alone) and a fresh interpreter runs there with PYTHONPATH set to that folder alone, so every
module of the project it imports is the revision's: its fitting engine and its renderer. The caller hands over the
crops, the settings and the batch, so both sides fit the same pixels; the child warms up as the caller does (two
steps on two crops), times its own loop and returns every crop's PSNR.

Any revision whose `fit_crops(crops, seeds, config)` takes a `FitConfig` built from `FitConfig.as_dict()`'s keys
works; a setting that the revision's `FitConfig` does not have (adam_beta2 before 79fd93e) is refused by name.

    python benchmarks/fit_revision.py JOB_DIR    # the child; fit_at_revision() starts it
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

#: The engine before the sync-free rewrite: the parent of 4c80c05 ("fitting engine: no host sync in the step
#: loop ..."), whose `fit_crops` read the loss on the host every step and refitted a batch without a diverged crop.
PREVIOUS_ENGINE = "809978785e132861a6c6a9bda37472d9e0ec2d9d"


class RevisionFitError(RuntimeError):
    """The revision's fit stopped (its own message, on stderr, says why)."""


def resolve_revision(revision: str) -> str:
    """The full commit id that `revision` names in this repository; ValueError if it names none."""
    done = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise ValueError(f"{revision!r} names no commit of {REPO}")
    return done.stdout.strip()


def export_revision(commit: str, dest: Path) -> None:
    """Write the tracked files of `commit` under `dest` (git archive; nothing in the repository changes)."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")


def fit_at_revision(commit: str, crops: torch.Tensor, settings: dict, batch: int, threads: int) -> dict:
    """Fit `crops` (B, 3, S, S) on their device, in batches of `batch`, seed i for crop i, with `commit`'s
    fit_crops and FitConfig(**settings), `threads` CPU threads for torch and numba. Returns {"seconds": wall time
    of the fits after the warm-up, "psnr": per crop, "module": the fitting module that ran}."""
    with tempfile.TemporaryDirectory(prefix="p2g_revision_") as tmp:
        tree, job = Path(tmp) / "tree", Path(tmp) / "job"
        export_revision(commit, tree)
        job.mkdir()
        torch.save(crops.detach().cpu(), job / "crops.pt")
        spec = {"tree": str(tree), "device": str(crops.device), "settings": settings, "batch": batch}
        (job / "job.json").write_text(json.dumps({**spec, "threads": threads, "commit": commit}))
        env = {**os.environ, "PYTHONPATH": str(tree)}  # the revision alone: not this checkout, not a PYTHONPATH set
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(job)], cwd=job, env=env)
        if done.returncode:
            raise RevisionFitError(f"fitting with revision {commit[:10]} failed (exit {done.returncode}; see above)")
        return json.loads((job / "result.json").read_text())


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a wall-clock interval covers it (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_fits(fit_crops, crops: torch.Tensor, batch: int, config) -> tuple[float, list[float]]:
    """Fit every crop with `fit_crops` (this checkout's or a revision's) in batches of `batch`, seed i for crop i:
    the wall time, device synchronised at both ends, and each crop's PSNR. The same loop on both sides."""
    seeds = list(range(crops.shape[0]))
    sync(crops.device)
    start = time.perf_counter()
    psnr = [fit_crops(crops[i : i + batch], seeds[i : i + batch], config).psnr for i in range(0, len(seeds), batch)]
    sync(crops.device)
    return time.perf_counter() - start, torch.cat(psnr).tolist()


def _child(job: Path) -> None:
    """Runs under the revision's PYTHONPATH: imports its fitting module and times the fits as the caller times its
    own engine (device synchronised before and after)."""
    spec = json.loads((job / "job.json").read_text())
    torch.set_num_threads(spec["threads"])
    try:
        import numba

        numba.set_num_threads(min(spec["threads"], numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    from dgp_fitting import fitting

    module = Path(fitting.__file__).resolve()
    if not module.is_relative_to(Path(spec["tree"]).resolve()):
        sys.exit(f"error: imported {module}, not revision {spec['commit'][:10]}'s dgp_fitting")
    unknown = sorted(set(spec["settings"]) - {field.name for field in dataclasses.fields(fitting.FitConfig)})
    if unknown:
        sys.exit(
            f"error: revision {spec['commit'][:10]}'s FitConfig has no {', '.join(unknown)}: compare it on settings "
            "it knows (e.g. --previous-preset quality)"
        )
    settings = {**spec["settings"], "milestones": tuple(spec["settings"]["milestones"])}
    config = fitting.FitConfig(**settings)
    device = torch.device(spec["device"])
    crops = torch.load(job / "crops.pt").to(device)
    fitting.fit_crops(crops[:2], [0, 1], dataclasses.replace(config, steps=2))  # compilation and caches: untimed
    seconds, psnr = timed_fits(fitting.fit_crops, crops, spec["batch"], config)
    result = {"seconds": seconds, "psnr": psnr, "module": str(module)}
    (job / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _child(Path(sys.argv[1]))
