"""What a training run is (`TrainConfig`, from `sr_model.training.config`), what it saves (`best.pt`, `last.pt`)
and what it logs (`metrics.jsonl`).

The config holds everything that decides the weights: data, model, schedule, seed. A run directory keeps it in
every checkpoint, so `--resume` rebuilds the same run from `last.pt` alone. Checkpoints are the model's checkpoint
format (`sr_model.files.checkpoint`: config, dictionary and its provenance, weights) plus the optimiser and AMP
scaler state, the step, the training config and the best validation score: plain containers and tensors that
`torch.load(weights_only=True)` reads.

The learning rate is a pure function of the step (step decay at absolute milestones), so nothing about the
schedule needs saving and a resumed run follows the uninterrupted one exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields, replace
from pathlib import Path

from sr_model.files.checkpoint import read_checkpoint, save_checkpoint
from sr_model.networks.model import ContinuousSR
from sr_model.training.config import TrainConfig, TrainConfigError

LAST, BEST, METRICS = "last.pt", "best.pt", "metrics.jsonl"
#: Settings a resumed run may change: they do not alter the weights of the steps already taken.
RESUMABLE = ("out", "steps", "val_every", "log_every")


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate for the update that takes the model from `step` to `step + 1`."""
    return config.lr * config.lr_gamma ** sum(1 for m in config.lr_milestones if step >= m)


def milestones_from_fractions(steps: int, fractions) -> tuple[int, ...]:
    """Decay points given as fractions of the run (0.5, 0.8) -> absolute steps."""
    out = []
    for f in fractions:
        if not 0 < float(f) < 1:
            raise TrainConfigError(f"lr decay points are fractions of the run in (0, 1), got {f!r}")
        out.append(max(1, round(float(f) * steps)))
    return tuple(out)


def save_state(
    path: Path,
    model: ContinuousSR,
    config: TrainConfig,
    step: int,
    optimizer,
    scaler,
    best: dict | None,
    train_seconds: float,
) -> Path:
    """A checkpoint `p2g eval` can load and `--resume` can continue from."""
    return save_checkpoint(
        path,
        model,
        train_config=config.to_dict(),
        step=int(step),
        optimizer=optimizer.state_dict(),
        scaler=scaler.state_dict(),
        best=best,
        train_seconds=float(train_seconds),
    )


def resume_config(run_dir: str | os.PathLike, **overrides) -> tuple[TrainConfig, dict]:
    """(config, checkpoint) of the run in `run_dir`, with only the RESUMABLE settings changed.

    Any other setting given with a different value is refused: it would make the resumed run a different one.
    """
    last = Path(run_dir) / LAST
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume: {last} does not exist (start the run without --resume)")
    checkpoint = read_checkpoint(last)
    if "train_config" not in checkpoint:
        raise TrainConfigError(f"{last} is a model checkpoint without training state; it cannot be resumed")
    saved = TrainConfig.from_dict(checkpoint["train_config"])
    given = replace(saved, **{k: v for k, v in overrides.items() if v is not None}) if overrides else saved
    changed = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in RESUMABLE and getattr(given, f.name) != getattr(saved, f.name)
    ]
    if changed:
        raise TrainConfigError(
            f"--resume continues the saved run; it cannot change {', '.join(changed)} "
            f"(only {', '.join(RESUMABLE)} may change); start a new --out instead"
        )
    if given.steps < int(checkpoint["step"]):
        raise TrainConfigError(f"the run is already at step {checkpoint['step']}, past --steps {given.steps}")
    return given, checkpoint


class MetricsLog:
    """metrics.jsonl (one JSON object per line) and, when the tensorboard package is installed, TensorBoard."""

    def __init__(self, out_dir: Path, resume_step: int | None = None) -> None:
        self.path = out_dir / METRICS
        if resume_step is not None and self.path.exists():
            self._drop_after(resume_step)  # lines an interrupted run wrote past its last checkpoint
        # a new run starts a new log: lines left by an attempt stopped before its first checkpoint are not its own
        self._file = open(self.path, "w" if resume_step is None else "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # optional: `pip install tensorboard`
            self._tb = None
        else:
            purge = None if resume_step is None else resume_step + 1  # events after the checkpoint
            self._tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=purge)

    def _drop_after(self, step: int) -> None:
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        tmp = self.path.with_name(self.path.name + ".partial")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in _flatten(record):
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _flatten(record: dict, prefix: str = ""):
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value
