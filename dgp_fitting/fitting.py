"""Per-crop fitting: B HR crops at once, each to its own Gaussian field, parametrised as the model predicts.

A crop of S x S HR pixels is fitted by a field on the (S/r) x (S/r) LR lattice (r = reference scale, k x k
Gaussians per cell) rendered at scale r, so the fitted covariances are in the LR units the model uses:

- position = lattice base + tanh(raw) (|offset| <= 1 LR px per axis, as the model's offset head),
- Cholesky l11, l22 = lo + (hi - lo) * sigmoid(raw) (positive and bounded), l21 = hi * tanh(raw),
- colour free (no activation).

Bounding the Cholesky keeps the renderer's lattice neighbourhood small (its cost grows with the field's
largest reach, i.e. with the single largest Gaussian of the batch). The paper's prior reaches l ~ 0.6 LR px;
the default bound is 1.0 LR px. Measured with the quality preset on eight 64 px photo crops: 99.9 % of l11
below 0.80 and of |l21| below 0.93 LR px, so the far tail of l21 touches the bound (a 400-step run with a bound
of 1.5 put its 99.9 % point at 1.24); `chol_max` changes it.

One optimisation runs over (B, ...) parameter tensors and the loss is the SUM of per-crop mean losses, so a
crop's gradient only depends on that crop and Adam is element-wise: with the per-crop seed (which only
jitters the start), a crop's result does not depend on which batch or worker fitted it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from dgp_fitting.fit_losses import FIT_LOSSES, either
from gaussian_field import GaussianField, render
from gaussian_field.initial import field_from_image
from gaussian_field.lattice import base_positions

#: Steps of the CPU-friendly "demo" preset (the "quality" preset is FitConfig's default).
DEMO_STEPS = 100
#: Adam's default second-moment decay (torch's), left out of a stored fitting config.
DEFAULT_ADAM_BETA2 = 0.999


@dataclass(frozen=True)
class FitConfig:
    """Everything that changes a fitted crop; stored in the prior store's `fitting` attribute."""

    steps: int = 500
    lr: float = 0.05
    color_lr: float = 0.02
    loss: str = "l2"
    seed: int = 0
    #: starting isotropic std (LR px); a lattice cell is 1/k = 0.5 LR px wide
    init_sigma: float = 0.3
    #: jitter (std) on the raw offset/Cholesky parameters at the start, drawn from the crop's seed
    init_jitter: float = 0.01
    chol_min: float = 0.02
    chol_max: float = 1.0
    #: learning rate multiplied by `decay` at each of these fractions of the steps
    milestones: tuple[float, ...] = (0.8,)
    decay: float = 0.3
    #: Adam's second-moment decay; lower forgets old gradient scales sooner, which a field whose Gaussians keep
    #: changing shape rewards (the "fast" preset). Not written to a store at its default 0.999, so stores fitted
    #: before the setting existed match the same settings today.
    adam_beta2: float = DEFAULT_ADAM_BETA2

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if self.loss not in tuple(FIT_LOSSES):  # compared by equality, as an unhashable value must be refused too
            raise ValueError(f"loss must be {either(FIT_LOSSES)}, got {self.loss!r}")
        if not 0 < self.chol_min < self.init_sigma < self.chol_max:
            raise ValueError(
                f"need 0 < chol_min < init_sigma < chol_max, got {self.chol_min}, {self.init_sigma}, {self.chol_max}"
            )
        if self.lr <= 0 or self.color_lr <= 0:
            raise ValueError("learning rates must be positive")
        if not 0 < self.adam_beta2 < 1:
            raise ValueError(f"adam_beta2 must lie strictly between 0 and 1, got {self.adam_beta2!r}")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        if out["adam_beta2"] == DEFAULT_ADAM_BETA2:
            del out["adam_beta2"]
        return out

    @classmethod
    def from_dict(cls, values: dict) -> FitConfig:
        values = dict(values)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return cls(**values)


#: Named settings: "quality" (the default, for real runs), "fast" (quality's PSNR in 70 % of its steps: Adam
#: forgets old gradient scales sooner) and "demo" (CPU-friendly: a few seconds per crop).
FIT_PRESETS: dict[str, FitConfig] = {
    "quality": FitConfig(),
    "fast": FitConfig(steps=350, adam_beta2=0.97),
    "demo": FitConfig(steps=DEMO_STEPS),
}


@dataclass
class FitResult:
    """Fitted parameters (B, G, 2|3|3) on CPU, per-crop PSNR (dB, of the clipped render) and steps run."""

    means: torch.Tensor
    chol: torch.Tensor
    colors: torch.Tensor
    psnr: torch.Tensor
    iterations: torch.Tensor
    failed: list[str]  # "" for a fitted crop, else why it failed


def crop_seed(seed: int, content_hash: str, box: Sequence[int]) -> int:
    """A crop's own seed: from the job seed, the image content and the box, never from batch or worker."""
    text = f"{seed}\0{content_hash}\0{','.join(str(int(v)) for v in box)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def psnr_of(rendered: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of the render clipped to [0, 1] against the target, both (B, 3, H, W)."""
    mse = (rendered.clamp(0, 1) - target).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class CropFieldParams(torch.nn.Module):
    """Raw (unbounded) parameters of B fields and the map to the model's bounded parametrisation."""

    def __init__(self, crops: torch.Tensor, config: FitConfig, seeds: Sequence[int], scale: int, k: int) -> None:
        super().__init__()
        bsz, _, size, _ = crops.shape
        self.h = self.w = size // scale
        self.k = k
        self.config = config
        lr_image = F.avg_pool2d(crops, scale)  # area downsample: the colours the lattice starts from
        init = field_from_image(lr_image, k=k, sigma=config.init_sigma)
        count = init.num_gaussians
        span = config.chol_max - config.chol_min
        diag = _logit((config.init_sigma - config.chol_min) / span)
        noise = (
            torch.stack(
                [
                    torch.randn(count, 5, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
                    for s in seeds
                ]
            )
            .to(crops.dtype)
            .to(crops.device)
            * config.init_jitter
        )
        raw_chol = torch.tensor([diag, 0.0, diag], dtype=crops.dtype, device=crops.device) + noise[..., 2:]
        self.offset_raw = torch.nn.Parameter(noise[..., :2].contiguous())
        self.chol_raw = torch.nn.Parameter(raw_chol.contiguous())
        self.colors = torch.nn.Parameter(init.colors.detach().clone())
        self.register_buffer("base", base_positions(self.h, self.w, k, dtype=crops.dtype, device=crops.device))
        assert bsz == len(seeds)

    def field(self) -> GaussianField:
        cfg = self.config
        # nan_to_num is the identity on finite values; a diverged crop's NaN/inf raw values then still map
        # inside the bounds, so the batch's neighbourhood reach (a max over all crops) stays bounded.
        means = self.base + torch.tanh(torch.nan_to_num(self.offset_raw))
        d11, c21, d22 = torch.nan_to_num(self.chol_raw).unbind(-1)
        span = cfg.chol_max - cfg.chol_min
        chol = torch.stack(
            [
                cfg.chol_min + span * torch.sigmoid(d11),
                cfg.chol_max * torch.tanh(c21),
                cfg.chol_min + span * torch.sigmoid(d22),
            ],
            -1,
        )
        return GaussianField(means, chol, self.colors, self.h, self.w, self.k, validate=False)


def _lr_factor(step: int, config: FitConfig) -> float:
    passed = sum(step >= round(m * config.steps) for m in config.milestones)
    return config.decay**passed


#: Steps between the engine's checks whether any crop of the batch is still finite (the only host
#: synchronisation of the step loop; a batch whose crops all diverged stops there).
CHECK_EVERY = 100


def fit_crops(
    crops: torch.Tensor,
    seeds: Sequence[int],
    config: FitConfig = FitConfig(),
    scale: int = 4,
    k: int = 2,
    backend: str = "auto",
    check_every: int = CHECK_EVERY,
    timer: PhaseTimer | None = None,
) -> FitResult:
    """Fit B crops (B, 3, S, S) in [0, 1] at once; S must be a multiple of `scale`.

    `backend` is passed to `render` ("auto": the fastest differentiable one for the crops' device). The step
    loop never waits for the device: a crop whose loss turns non-finite is only recorded on the device, keeps
    stepping harmlessly (its raw parameters are sanitised before the bounded map, so it cannot widen the
    renderer's neighbourhood beyond the bounds; no operation mixes crops) and is marked failed at the end; the
    other crops' results are those they get alone. `check_every` steps the loop looks whether any crop is left.
    `timer` (a PhaseTimer) times the phases of each step, synchronising the device between them: for profiles only.
    """
    if crops.dim() != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ValueError(f"crops must be (B, 3, S, S), got {tuple(crops.shape)}")
    if crops.shape[2] % scale:
        raise ValueError(f"crop size {crops.shape[2]} is not a multiple of the reference scale {scale}")
    if len(seeds) != crops.shape[0]:
        raise ValueError(f"need one seed per crop: {len(seeds)} seeds for {crops.shape[0]} crops")
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, got {check_every}")
    bsz = crops.shape[0]
    finite = torch.isfinite(crops).flatten(1).all(1).tolist()
    failed = ["" if ok else "crop has NaN or infinite pixels" for ok in finite]
    active = [i for i in range(bsz) if finite[i]]
    if not active:
        return _scatter(None, active, failed, crops, config, scale, k)
    subset = crops if len(active) == bsz else crops[active]
    result, alive = _fit_batch(subset, [seeds[i] for i in active], config, scale, k, backend, check_every, timer)
    for j, ok in enumerate(alive):
        if not ok:
            failed[active[j]] = "fit diverged (non-finite loss)"
    return _scatter(result, active, failed, crops, config, scale, k, alive)


def make_optimiser(params: CropFieldParams, config: FitConfig) -> torch.optim.Adam:
    """Adam over the raw parameters. On CUDA the fused kernel (one launch for every tensor; falls back to foreach
    where torch lacks it). On CPU the single-tensor loop: torch's fused CPU Adam rounds an element differently in
    its vector body and its tail (measured: 2.4e-7 apart for a 20 px crop alone and in a batch of 4), which would
    make a crop's result depend on its batch, and with three parameter tensors foreach has nothing to group."""
    groups = [
        {"params": [params.offset_raw, params.chol_raw], "lr": config.lr},
        {"params": [params.colors], "lr": config.color_lr},
    ]
    betas = (0.9, config.adam_beta2)
    if params.colors.device.type != "cuda":
        return torch.optim.Adam(groups, betas=betas, foreach=False)
    try:
        return torch.optim.Adam(groups, betas=betas, fused=True)
    except RuntimeError:  # fused Adam not implemented for this device or dtype
        return torch.optim.Adam(groups, betas=betas, foreach=True)


def _loss_per_crop(rendered: torch.Tensor, crops: torch.Tensor, loss: str) -> torch.Tensor:
    """One value per crop, from the loss table (`dgp_fitting.fit_losses.FIT_LOSSES`)."""
    return FIT_LOSSES[loss](rendered, crops)


def _fit_batch(
    crops, seeds, config: FitConfig, scale: int, k: int, backend: str, check_every: int, timer: PhaseTimer | None
):
    """The step loop: ((means, chol, colors, psnr) of every crop, per-crop finite flags)."""
    params = CropFieldParams(crops, config, seeds, scale, k)
    size = (crops.shape[2], crops.shape[3])
    optimiser = make_optimiser(params, config)
    base_lrs = [group["lr"] for group in optimiser.param_groups]
    alive = torch.ones(crops.shape[0], dtype=torch.bool, device=crops.device)
    factor = 1.0
    for step in range(config.steps):
        if _lr_factor(step, config) != factor:
            factor = _lr_factor(step, config)
            for group, base_lr in zip(optimiser.param_groups, base_lrs):
                group["lr"] = base_lr * factor
        if timer is None:
            per_crop = _loss_per_crop(render(params.field(), size=size, backend=backend), crops, config.loss)
            alive &= torch.isfinite(per_crop)
            optimiser.zero_grad(set_to_none=True)
            per_crop.sum().backward()
        else:
            per_crop = _timed_forward_backward(params, crops, size, backend, config.loss, timer)
            alive &= torch.isfinite(per_crop)
        optimiser.step()
        if timer is not None:
            timer.lap("adam")
        if (step + 1) % check_every == 0 and not bool(alive.any()):
            break
    with torch.no_grad():
        field = params.field()
        psnr = psnr_of(render(field, size=size, backend=backend), crops)
    alive &= torch.isfinite(psnr)
    return (field.means.detach(), field.chol.detach(), field.colors.detach(), psnr), alive.tolist()


def _timed_forward_backward(params, crops, size, backend: str, loss: str, timer: PhaseTimer) -> torch.Tensor:
    """One step's forward and backward with the parametrisation, the render and the loss timed apart (the
    render's inputs become leaves, their gradients are then pushed through the parametrisation)."""
    timer.lap("python")
    field = params.field()
    timer.lap("parametrisation")
    leaves = [t.detach().requires_grad_(True) for t in (field.means, field.chol, field.colors)]
    rendered = render(GaussianField(*leaves, field.h, field.w, field.k, validate=False), size=size, backend=backend)
    timer.lap("render forward")
    per_crop = _loss_per_crop(rendered, crops, loss)
    timer.lap("loss")
    grads = torch.autograd.grad(per_crop.sum(), leaves)
    timer.lap("render backward")
    for group in (params.offset_raw, params.chol_raw, params.colors):
        group.grad = None
    torch.autograd.backward([field.means, field.chol, field.colors], grads)
    timer.lap("parametrisation")
    return per_crop.detach()


class PhaseTimer:
    """Wall seconds per phase of the step loop; `lap(name)` charges the time since the last lap to `name`,
    after synchronising the device, so each phase's figure holds its own kernels."""

    def __init__(self, device: torch.device) -> None:
        import time

        self._clock = time.perf_counter
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self._last = self._clock()

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = self._clock()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def shares(self) -> dict[str, float]:
        total = sum(self.seconds.values()) or 1.0
        return {name: value / total for name, value in self.seconds.items()}


def _scatter(
    result, active, failed, crops, config: FitConfig, scale: int, k: int, alive: Sequence[bool] | None = None
) -> FitResult:
    bsz, size = crops.shape[0], crops.shape[2]
    count = (size // scale) ** 2 * k * k
    means = torch.zeros(bsz, count, 2)
    chol = torch.zeros(bsz, count, 3)
    colors = torch.zeros(bsz, count, 3)
    psnr = torch.full((bsz,), float("nan"))
    iterations = torch.zeros(bsz, dtype=torch.int32)
    if result is not None:
        kept = [j for j in range(len(active)) if alive is None or alive[j]]
        idx = torch.tensor([active[j] for j in kept], dtype=torch.long)
        pick = torch.tensor(kept, dtype=torch.long, device=result[0].device)
        means[idx], chol[idx], colors[idx], psnr[idx] = (t[pick].float().cpu() for t in result)
        iterations[idx] = config.steps
    return FitResult(means, chol, colors, psnr, iterations, failed)
