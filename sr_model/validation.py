"""Periodic validation during training: Y-PSNR (shave = scale) of the model and of bicubic on held-out photos.

The same protocol as `p2g eval` (`sr_model.evaluation`: mod-crop, MATLAB-bicubic LR rounded to 8 bits, BasicSR
PSNR on Y with `scale` pixels shaved), but prepared once: the LR inputs and the bicubic scores are computed when
training starts, so each validation only runs the model. Images larger than `crop` are centre-cropped to
crop x crop so that validating a folder of 4K photos stays cheap; say so when quoting the numbers.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from gaussian_field.image_io import ImageReadError, read_image
from sr_model.datasets import NoImagesError, SkippedImageWarning, find_images
from sr_model.evaluation import EncodesFields, bicubic_upscale, make_lr, model_upscale, to_uint8
from sr_model.metrics import protocol_settings, psnr


@dataclass(frozen=True)
class ValPair:
    """One image at one scale: the 8-bit HR, its LR input and the bicubic score."""

    image: str
    scale: float
    hr8: np.ndarray
    lr: np.ndarray
    bicubic_psnr: float


def centre_crop(image: np.ndarray, crop: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    return image[top : top + crop, left : left + crop]


def _y_psnr(hr8: np.ndarray, sr: np.ndarray, scale: float) -> float:
    border, y_channel = protocol_settings("benchmark", scale)
    return psnr(hr8, to_uint8(sr), border, y_channel)


class Validator:
    """Held-out (LR, HR) pairs at each scale; `validator(model)` scores the model against bicubic."""

    def __init__(self, sources: Sequence[str | os.PathLike], scales: Sequence[float], crop: int = 384) -> None:
        self.scales = tuple(float(s) for s in scales)
        self.pairs: list[ValPair] = []
        paths = find_images(sources)
        for path in paths:
            try:
                image = centre_crop(read_image(path), crop)
            except (ImageReadError, OSError) as err:
                warnings.warn(f"skipping unreadable validation image {path}: {err}", SkippedImageWarning, stacklevel=2)
                continue
            for scale in self.scales:
                try:
                    hr, lr = make_lr(image, scale)
                    hr8 = to_uint8(hr)
                    bicubic = _y_psnr(hr8, bicubic_upscale(lr, scale, hr.shape[:2]), scale)
                except ValueError as err:
                    raise ValueError(f"validation image {path} at x{scale:g}: {err}") from None
                self.pairs.append(ValPair(str(path), scale, hr8, lr, bicubic))
        if not self.pairs:
            raise NoImagesError(f"none of the {len(paths)} validation image(s) could be read")

    @property
    def num_images(self) -> int:
        return len({p.image for p in self.pairs})

    @torch.no_grad()
    def __call__(self, model: EncodesFields, device: str | torch.device = "cpu") -> dict:
        """{"x2": {"psnr", "bicubic", "gain"}, ..., "mean_psnr", "mean_gain"}: means over images per scale."""
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        scores: dict[float, list[tuple[float, float]]] = {s: [] for s in self.scales}
        try:
            for pair in self.pairs:
                sr, _, _ = model_upscale(model, pair.lr, pair.hr8.shape[:2], device)
                scores[pair.scale].append((_y_psnr(pair.hr8, sr, pair.scale), pair.bicubic_psnr))
        finally:
            if was_training:
                model.train()
        result: dict = {}
        for scale, values in scores.items():
            model_psnr, bicubic = (float(np.mean(v)) for v in zip(*values))
            result[f"x{scale:g}"] = {"psnr": model_psnr, "bicubic": bicubic, "gain": model_psnr - bicubic}
        per_scale = [v for v in result.values()]
        result["mean_psnr"] = float(np.mean([v["psnr"] for v in per_scale]))
        result["mean_gain"] = float(np.mean([v["gain"] for v in per_scale]))
        return result
