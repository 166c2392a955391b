"""`TrainConfig`: everything that decides a training run's weights (data, model, schedule, seed).

Kept apart from `sr_model.training.state` (checkpoints, logs) so that it imports no heavy package: the `p2g train`
verb takes its option defaults from these fields without loading torch for `--help`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sr_model.networks.presets import ModelConfig, preset, unknown_fields


class TrainConfigError(ValueError):
    """A training setting that cannot work, or a resume that would change the run."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Paths are absolute strings; milestones are absolute steps."""

    images: tuple[str, ...]
    out: str
    prior: str | None = None
    preset: str = "lite"
    model_overrides: dict = field(default_factory=dict)
    steps: int = 20000
    batch: int = 16
    patch: int = 48
    scale_min: float = 4.0
    scale_max: float = 8.0
    lr: float = 2e-4
    lr_milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    freq_weight: float = 0.0
    grad_clip: float = 1.0
    val_images: tuple[str, ...] = ()
    val_scales: tuple[float, ...] = (2.0, 4.0, 8.0)
    val_every: int = 500
    val_crop: int = 384
    log_every: int = 10
    seed: int = 0
    amp: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "images", tuple(str(Path(p).absolute()) for p in self.images))
        set_(self, "val_images", tuple(str(Path(p).absolute()) for p in self.val_images))
        set_(self, "out", str(Path(self.out).absolute()))
        if self.prior is not None and str(self.prior) != "official":
            set_(self, "prior", str(Path(self.prior).absolute()))
        set_(self, "lr_milestones", tuple(sorted(int(m) for m in self.lr_milestones)))
        set_(self, "val_scales", tuple(float(s) for s in self.val_scales))
        set_(self, "model_overrides", {str(k): _plain(v) for k, v in dict(self.model_overrides).items()})
        if not self.images:
            raise TrainConfigError("no training images given; use --images DIR")
        for name in ("steps", "batch", "patch", "val_every", "log_every", "val_crop"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise TrainConfigError(f"{name} must be a positive integer, got {value!r}")
        if not (1.0 <= self.scale_min <= self.scale_max < math.inf):
            raise TrainConfigError(f"scales must satisfy 1 <= min <= max, got {self.scale_min:g}-{self.scale_max:g}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainConfigError(f"learning rate must be a positive number, got {self.lr!r}")
        if not (0 < self.lr_gamma <= 1):
            raise TrainConfigError(f"lr decay factor must be in (0, 1], got {self.lr_gamma!r}")
        if self.freq_weight < 0 or self.grad_clip < 0:
            raise TrainConfigError("freq_weight and grad_clip must be >= 0 (0 disables them)")
        if any(s < 1 for s in self.val_scales):
            raise TrainConfigError(f"validation scales must be >= 1, got {self.val_scales}")
        config = self.model_config()  # unknown preset or override: fail now, not after loading data
        if config.uses_dictionary and self.prior is None:
            raise TrainConfigError("this model mixes a covariance dictionary: give --prior STORE|DICT.npy|official")

    def model_config(self) -> ModelConfig:
        return preset(self.preset, **self.model_overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        unknown = unknown_fields(cls, data)
        if unknown:
            raise TrainConfigError(f"unknown training config fields {unknown}; this run needs a newer pixel2gauss")
        return cls(**data)


def _plain(value):
    if isinstance(value, list):
        return tuple(value)
    return value
