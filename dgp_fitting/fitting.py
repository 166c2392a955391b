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
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from gaussian_field import GaussianField, render
from gaussian_field.initial import field_from_image
from gaussian_field.lattice import base_positions


#: Steps of the CPU-friendly "demo" preset (the "quality" preset is FitConfig's default).
DEMO_STEPS = 100


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

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        if self.loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {self.loss!r}")
        if not 0 < self.chol_min < self.init_sigma < self.chol_max:
            raise ValueError(
                f"need 0 < chol_min < init_sigma < chol_max, got {self.chol_min}, {self.init_sigma}, {self.chol_max}"
            )
        if self.lr <= 0 or self.color_lr <= 0:
            raise ValueError("learning rates must be positive")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["milestones"] = list(self.milestones)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "FitConfig":
        values = dict(values)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return cls(**values)


#: Named settings: "quality" (the default, for real runs) and "demo" (CPU-friendly: a few seconds per crop).
FIT_PRESETS: dict[str, FitConfig] = {
    "quality": FitConfig(),
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
        noise = torch.stack([
            torch.randn(count, 5, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float64)
            for s in seeds
        ]).to(crops.dtype).to(crops.device) * config.init_jitter
        raw_chol = torch.tensor([diag, 0.0, diag], dtype=crops.dtype, device=crops.device) + noise[..., 2:]
        self.offset_raw = torch.nn.Parameter(noise[..., :2].contiguous())
        self.chol_raw = torch.nn.Parameter(raw_chol.contiguous())
        self.colors = torch.nn.Parameter(init.colors.detach().clone())
        self.register_buffer("base", base_positions(self.h, self.w, k, dtype=crops.dtype, device=crops.device))
        assert bsz == len(seeds)

    def field(self) -> GaussianField:
        cfg = self.config
        means = self.base + torch.tanh(self.offset_raw)
        d11, c21, d22 = self.chol_raw.unbind(-1)
        span = cfg.chol_max - cfg.chol_min
        chol = torch.stack(
            [cfg.chol_min + span * torch.sigmoid(d11), cfg.chol_max * torch.tanh(c21),
             cfg.chol_min + span * torch.sigmoid(d22)], -1
        )
        return GaussianField(means, chol, self.colors, self.h, self.w, self.k, validate=False)


def _lr_factor(step: int, config: FitConfig) -> float:
    passed = sum(step >= round(m * config.steps) for m in config.milestones)
    return config.decay ** passed


def fit_crops(
    crops: torch.Tensor,
    seeds: Sequence[int],
    config: FitConfig = FitConfig(),
    scale: int = 4,
    k: int = 2,
    backend: str = "auto",
) -> FitResult:
    """Fit B crops (B, 3, S, S) in [0, 1] at once; S must be a multiple of `scale`.

    `backend` is passed to `render` ("auto": the fastest differentiable one for the crops' device).
    A crop whose loss becomes non-finite is marked failed and the others are refitted without it (results
    are batch-independent, so this changes nothing for them).
    """
    if crops.dim() != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
        raise ValueError(f"crops must be (B, 3, S, S), got {tuple(crops.shape)}")
    if crops.shape[2] % scale:
        raise ValueError(f"crop size {crops.shape[2]} is not a multiple of the reference scale {scale}")
    if len(seeds) != crops.shape[0]:
        raise ValueError(f"need one seed per crop: {len(seeds)} seeds for {crops.shape[0]} crops")
    bsz = crops.shape[0]
    finite = torch.isfinite(crops).flatten(1).all(1).tolist()
    failed = ["" if ok else "crop has NaN or infinite pixels" for ok in finite]
    active = [i for i in range(bsz) if finite[i]]
    if not active:
        return _scatter(None, active, failed, crops, config, scale, k)
    while True:
        result, bad = _fit_once(crops[active], [seeds[i] for i in active], config, scale, k, backend)
        if not bad:
            break
        for j in bad:
            failed[active[j]] = "fit diverged (non-finite loss)"
        active = [i for j, i in enumerate(active) if j not in bad]
        if not active:
            result = None
            break
    return _scatter(result, active, failed, crops, config, scale, k)


def _fit_once(crops, seeds, config: FitConfig, scale: int, k: int, backend: str):
    params = CropFieldParams(crops, config, seeds, scale, k)
    size = (crops.shape[2], crops.shape[3])
    optimiser = torch.optim.Adam([
        {"params": [params.offset_raw, params.chol_raw], "lr": config.lr},
        {"params": [params.colors], "lr": config.color_lr},
    ])
    base_lrs = [group["lr"] for group in optimiser.param_groups]
    for step in range(config.steps):
        factor = _lr_factor(step, config)
        for group, base_lr in zip(optimiser.param_groups, base_lrs):
            group["lr"] = base_lr * factor
        rendered = render(params.field(), size=size, backend=backend)
        diff = rendered - crops
        per_crop = (diff.abs() if config.loss == "l1" else diff * diff).flatten(1).mean(1)
        finite = torch.isfinite(per_crop)
        if not bool(finite.all()):
            return None, [int(i) for i in torch.nonzero(~finite).flatten()]
        optimiser.zero_grad(set_to_none=True)
        per_crop.sum().backward()
        optimiser.step()
    with torch.no_grad():
        field = params.field()
        psnr = psnr_of(render(field, size=size, backend=backend), crops)
    bad = [int(i) for i in torch.nonzero(~torch.isfinite(psnr)).flatten()]
    if bad:
        return None, bad
    return (field.means.detach(), field.chol.detach(), field.colors.detach(), psnr), []


def _scatter(result, active, failed, crops, config: FitConfig, scale: int, k: int) -> FitResult:
    bsz, size = crops.shape[0], crops.shape[2]
    count = (size // scale) ** 2 * k * k
    means = torch.zeros(bsz, count, 2)
    chol = torch.zeros(bsz, count, 3)
    colors = torch.zeros(bsz, count, 3)
    psnr = torch.full((bsz,), float("nan"))
    iterations = torch.zeros(bsz, dtype=torch.int32)
    if result is not None:
        idx = torch.tensor(active, dtype=torch.long)
        means[idx], chol[idx], colors[idx], psnr[idx] = (t.float().cpu() for t in result)
        iterations[idx] = config.steps
    return FitResult(means, chol, colors, psnr, iterations, failed)
