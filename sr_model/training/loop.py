"""The training loop: HR photo folders + a covariance dictionary -> a ContinuousSR checkpoint.

    for step in start..steps:   batch b = step * world + rank  (SRTrainDataset: one random scale per batch)
        sr = render(model.encode(lr), size = hr size)            (AMP autocast on CUDA for encoder and heads)
        loss = L1(sr, hr) [+ freq_weight * FFT-L1]               (sr_model.training.losses)
        Adam step with clipped gradients at the step-decayed rate (sr_model.training.state.learning_rate)
        every val_every steps: Y-PSNR vs bicubic (sr_model.training.validation), best.pt / last.pt

Reproducible: what batch b holds depends only on (seed, b), the model is seeded, the learning rate is a
function of the step, and last.pt carries the weights, the optimiser and the AMP scaler, so a run resumed from
last.pt produces bit-for-bit the weights the uninterrupted run would (on the same machine and settings).
Under `torchrun` each rank trains on its own batches and DDP averages the gradients; rank 0 validates, writes
checkpoints and logs. Ctrl-C or SIGTERM (how SLURM ends a job), or a time limit, stops after the current step
(or the validation in progress) and saves last.pt; `TrainResult.stop_signal` says which signal it was.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from gaussian_field import render
from sr_model.data.datasets import ScaleBatchSampler, SRTrainDataset
from sr_model.files.checkpoint import model_from_checkpoint
from sr_model.networks.covariance_dictionary import load_dictionary
from sr_model.networks.model import ContinuousSR, build_model
from sr_model.training.distributed import Runtime, barrier, check_in_sync, setup, teardown
from sr_model.training.losses import reconstruction_loss
from sr_model.training.state import (
    BEST,
    LAST,
    MetricsLog,
    TrainConfig,
    TrainConfigError,
    learning_rate,
    resume_config,
    save_state,
)
from sr_model.training.validation import Validator


@dataclass(frozen=True)
class TrainResult:
    step: int
    stopped_early: bool
    last: Path
    best: Path | None
    best_val: dict | None
    seconds: float
    #: The signal (SIGINT, SIGTERM) that stopped the run early and had last.pt saved; None if it finished or a
    #: step or time limit stopped it.
    stop_signal: int | None = None


class Upscaler(nn.Module):
    """What DDP wraps: encode (under autocast when `amp`) then render in float32 to the HR size."""

    def __init__(self, model: ContinuousSR, amp: bool) -> None:
        super().__init__()
        self.model, self.amp = model, amp

    def forward(self, lr: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        with torch.autocast(lr.device.type, dtype=torch.float16, enabled=self.amp):
            field = self.model.encode(lr)
        return render(field.to(torch.float32), size=size)


class RankBatches(Sampler):
    """Steps [start, stop) of one rank: step t reads batch t * world + rank of the seeded batch sequence."""

    def __init__(self, batches: ScaleBatchSampler, start: int, stop: int, runtime: Runtime) -> None:
        self.batches, self.start, self.stop, self.runtime = batches, start, stop, runtime

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.batches.batch(step * self.runtime.world_size + self.runtime.rank)

    def __len__(self) -> int:
        return self.stop - self.start


def _loader_worker_init(_: int) -> None:
    torch.set_num_threads(1)  # loader workers share the cores with the model
    for signum in STOP_SIGNALS:  # the main process stops after the step; a worker that died would fail the step
        signal.signal(signum, signal.SIG_IGN)


#: Signals that stop training after the current step, with last.pt saved (SIGTERM: how SLURM and `kill` end jobs).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopFlag:
    """Set by the first Ctrl-C or SIGTERM; a second one acts at once, as it would without training (Ctrl-C raises
    KeyboardInterrupt, SIGTERM does what the process did before). `wanted` adds this call's step and time limits."""

    def __init__(self, stop_after: int | None = None, time_limit: float | None = None) -> None:
        self.signum: int | None = None
        self.stop_after, self.time_limit = stop_after, time_limit
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) != signal.SIG_IGN:  # an ignored signal stays ignored (nohup)
                    self._previous[signum] = signal.signal(signum, self._handle)

    @property
    def set(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._before(signum))

    def _before(self, signum: int):
        """The handler the process had (Python's KeyboardInterrupt for SIGINT when it had none)."""
        previous = self._previous.get(signum)
        if signum == signal.SIGINT and previous in (None, signal.SIG_DFL):
            return signal.default_int_handler
        return signal.SIG_DFL if previous is None else previous

    def wanted(self, steps_done: int, seconds: float) -> bool:
        """Whether to stop after `steps_done` steps and `seconds` seconds of this call."""
        return (
            self.set
            or (self.stop_after is not None and steps_done >= self.stop_after)
            or (self.time_limit is not None and seconds >= self.time_limit)
        )

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)


def _agree(runtime: Runtime, local: bool) -> bool:
    """Whether any rank wants to stop (all ranks must stop at the same step)."""
    if not runtime.distributed:
        return local
    flag = torch.tensor([int(local)], device=runtime.device if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def train(
    config: TrainConfig,
    *,
    device: str = "auto",
    workers: int | None = None,
    stop_after: int | None = None,
    time_limit: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train the run `config` describes into `config.out`; returns where it ended.

    `stop_after` steps or `time_limit` seconds end this call early, with last.pt saved: `resume_training` goes on.
    """
    if (Path(config.out) / LAST).exists():
        raise TrainConfigError(
            f"{config.out} already holds a run ({LAST}); continue it with --resume or pick another --out"
        )
    return _launch(config, None, device, workers, stop_after, time_limit, progress)


def resume_training(
    out: str | Path,
    overrides: dict | None = None,
    *,
    device: str = "auto",
    workers: int | None = None,
    stop_after: int | None = None,
    time_limit: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Continue the run saved in `out`/last.pt. `overrides` may only change its resumable settings (e.g. steps);
    any other setting given with a different value is refused."""
    config, checkpoint = resume_config(out, **{"out": str(out), **(overrides or {})})
    return _launch(config, checkpoint, device, workers, stop_after, time_limit, progress)


def _launch(config, checkpoint, device, workers, stop_after, time_limit, progress) -> TrainResult:
    runtime = setup(device)
    try:
        return _run(config, checkpoint, runtime, workers, stop_after, time_limit, progress)
    finally:
        teardown(runtime)


def _run(
    config: TrainConfig,
    checkpoint: dict | None,
    runtime: Runtime,
    workers: int | None,
    stop_after: int | None,
    time_limit: float | None,
    progress: bool,
) -> TrainResult:
    out, main = Path(config.out), runtime.is_main
    validator, model, net, optimizer, scaler, loader, start, best, seconds_before = _prepare(
        config, checkpoint, runtime, workers
    )
    if main:
        out.mkdir(parents=True, exist_ok=True)
        log = MetricsLog(out, resume_step=start if checkpoint is not None else None)
    bar = _progress_bar(config, start, enabled=progress and main)
    stop, step, began = _StopFlag(stop_after, time_limit), start, time.perf_counter()
    interval = _Interval()

    def checkpoint_now(validate: bool) -> None:
        nonlocal best
        elapsed = seconds_before + time.perf_counter() - began
        if main:
            if validate and validator is not None:
                val = validator(model, runtime.device)
                if best is None or val["mean_psnr"] > best["val"]["mean_psnr"]:
                    best = {"step": step, "val": val}
                    save_state(out / BEST, model, config, step, optimizer, scaler, best, elapsed)
                log.write({"step": step, "val": val, "best_step": best["step"]})
                interval.val_note = f", val {val['mean_gain']:+.2f} dB vs bicubic"
            save_state(out / LAST, model, config, step, optimizer, scaler, best, elapsed)
        check_in_sync(runtime, model)
        barrier(runtime)

    try:
        for data in loader:
            rate = learning_rate(config, step)
            losses, grad_norm, hr_side = _train_step(net, model, optimizer, scaler, data, rate, config, runtime.device)
            step += 1
            interval.add(losses, grad_norm)
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                record = interval.record(step, rate, config.batch * runtime.world_size, hr_side)
                if main:
                    log.write(record)
                bar.set_postfix_str(interval.postfix(record), refresh=False)
            stopping = step < config.steps and _agree(runtime, stop.wanted(step - start, time.perf_counter() - began))
            if step % config.val_every == 0 or step == config.steps or stopping:
                checkpoint_now(validate=not stopping or step % config.val_every == 0)
                # a signal during validation: last.pt holds this step, so stop without another one
                stopping = stopping or (step < config.steps and _agree(runtime, stop.set))
            if stopping:
                break
    finally:
        stop.restore()
        bar.close()
        if main:
            log.close()
    seconds = seconds_before + time.perf_counter() - began
    early = step < config.steps
    best_path = out / BEST if best is not None else None
    return TrainResult(step, early, out / LAST, best_path, best, seconds, stop.signum if early else None)


def _prepare(config: TrainConfig, checkpoint: dict | None, runtime: Runtime, workers: int | None) -> tuple:
    """(validator or None, model, net, optimiser, AMP scaler, loader, first step, best validation, seconds so far):
    the model on the device, wrapped for DDP under torchrun, and everything restored from `checkpoint` if given."""
    dataset = SRTrainDataset(config.images, config.patch, (config.scale_min, config.scale_max), cache=True)
    use_validator = config.val_images and runtime.is_main
    validator = Validator(config.val_images, config.val_scales, config.val_crop) if use_validator else None
    torch.manual_seed(config.seed)
    model, start, best, seconds_before = _initial_model(config, checkpoint)
    model.to(runtime.device).train()
    amp = config.amp and runtime.device.type == "cuda"
    optimizer, scaler = _optimiser(model, config, checkpoint, amp)
    net: nn.Module = Upscaler(model, amp)
    if runtime.distributed:
        ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    loader = _data_loader(dataset, config, start, runtime, workers)
    return validator, model, net, optimizer, scaler, loader, start, best, seconds_before


def _initial_model(config: TrainConfig, checkpoint: dict | None) -> tuple[ContinuousSR, int, dict | None, float]:
    """(model, first step, best validation so far, training seconds so far): a new model, or the checkpoint's."""
    if checkpoint is None:
        model_config = config.model_config()
        model = build_model(model_config, load_dictionary(config.prior) if model_config.uses_dictionary else None)
        return model, 0, None, 0.0
    model = model_from_checkpoint(checkpoint)
    return model, int(checkpoint["step"]), checkpoint.get("best"), checkpoint["train_seconds"]


def _optimiser(
    model: nn.Module, config: TrainConfig, checkpoint: dict | None, amp: bool
) -> tuple[torch.optim.Adam, torch.amp.GradScaler]:
    """Adam and the AMP gradient scaler, with the checkpoint's state when resuming (for a bit-for-bit resume)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["scaler"])
    return optimizer, scaler


def _data_loader(
    dataset: SRTrainDataset, config: TrainConfig, start: int, runtime: Runtime, workers: int | None
) -> DataLoader:
    """This rank's batches from step `start` on (workers: 0 on CPU, up to 4 on CUDA unless given)."""
    cuda = runtime.device.type == "cuda"
    workers = (min(4, torch.get_num_threads()) if cuda else 0) if workers is None else workers
    batches = ScaleBatchSampler(dataset, config.batch, config.seed)
    return DataLoader(
        dataset,
        batch_sampler=RankBatches(batches, start, config.steps, runtime),
        num_workers=workers,
        worker_init_fn=_loader_worker_init if workers else None,
        pin_memory=cuda,
    )


def _train_step(
    net: nn.Module,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    data: dict,
    rate: float,
    config: TrainConfig,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """One optimisation step at learning rate `rate`; (losses, gradient norm before clipping, HR patch side)."""
    lr_img, hr = (data[k].to(device, non_blocking=True) for k in ("lr", "hr"))
    for group in optimizer.param_groups:
        group["lr"] = rate
    losses = reconstruction_loss(net(lr_img, hr.shape[-2:]), hr, config.freq_weight)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses["loss"]).backward()
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
    scaler.step(optimizer)
    scaler.update()
    return losses, grad_norm, hr.shape[-1]


class _Interval:
    """Running sums between two log lines, kept as tensors (no device sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.grad_norm_max: torch.Tensor | None = None
        self.n, self.t, self.val_note = 0, time.perf_counter(), ""

    def add(self, losses: dict[str, torch.Tensor], grad_norm: torch.Tensor) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        grad_norm = grad_norm.detach().float()
        self.grad_norm_max = grad_norm if self.grad_norm_max is None else torch.maximum(self.grad_norm_max, grad_norm)
        self.n += 1

    def record(self, step: int, rate: float, images_per_step: int, hr_side: int) -> dict:
        """The metrics line for the steps since the last one (this rank's losses), and a fresh interval."""
        seconds = max(time.perf_counter() - self.t, 1e-9)
        record = {
            "step": step,
            **{k: float(v) / self.n for k, v in self.sums.items()},
            "lr": rate,
            "grad_norm_max": float(self.grad_norm_max),
            "steps_per_s": self.n / seconds,
            "images_per_s": self.n * images_per_step / seconds,
            "hr_patch": hr_side,
        }
        self.sums, self.grad_norm_max, self.n, self.t = {}, None, 0, time.perf_counter()
        return record

    def postfix(self, record: dict) -> str:
        """The progress bar's note for a metrics line: loss, throughput and the last validation."""
        return f"loss {record['loss']:.4f}, {record['images_per_s']:.1f} img/s{self.val_note}"


def _progress_bar(config: TrainConfig, start: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=config.steps,
        initial=start,
        desc="train",
        unit="step",
        disable=not enabled or None,
        dynamic_ncols=True,
        smoothing=0.1,
    )
