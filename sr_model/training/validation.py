"""Periodic validation during training: Y-PSNR (shave = scale) of the model and of bicubic on held-out photos.

The same protocol as `p2g eval` (`sr_model.evaluation.evaluate`: mod-crop, MATLAB-bicubic LR rounded to 8 bits, BasicSR
PSNR on Y with `scale` pixels shaved), but prepared once: the LR inputs and the bicubic scores are computed when
training starts, so each validation only runs the model. Images larger than `crop` are centre-cropped to
crop x crop so that validating a folder of 4K photos stays cheap; say so when quoting the numbers.

Beside PSNR it reports the per-channel mean error (SR - HR, in 8-bit levels, on the same shaved area): a global
colour bias costs PSNR without any structural error, and only this number tells the two apart.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from gaussian_field.image_io import ImageReadError, read_image
from sr_model.data.datasets import NoImagesError, SkippedImageWarning, find_images
from sr_model.evaluation.evaluate import EncodesFields, bicubic_upscale, make_lr, model_upscale, to_uint8
from sr_model.evaluation.metrics import protocol_settings, psnr


@dataclass(frozen=True)
class ValPair:
    """One image at one scale: the 8-bit HR, its LR input and the bicubic score."""

    image: str
    scale: float
    hr8: np.ndarray
    lr: np.ndarray
    bicubic_psnr: float
    bicubic_bias: tuple[float, float, float]


def centre_crop(image: np.ndarray, crop: int) -> np.ndarray:
    height, width = image.shape[:2]
    top, left = max(0, (height - crop) // 2), max(0, (width - crop) // 2)
    return image[top : top + crop, left : left + crop]


def _y_psnr(hr8: np.ndarray, sr: np.ndarray, scale: float) -> float:
    border, y_channel = protocol_settings("benchmark", scale)
    return psnr(hr8, to_uint8(sr), border, y_channel)


def channel_bias(hr8: np.ndarray, sr: np.ndarray, scale: float) -> tuple[float, float, float]:
    """Mean of (SR - HR) per RGB channel, in 8-bit levels, both rounded to 8 bits, `scale` px shaved."""
    border, _ = protocol_settings("benchmark", scale)
    diff = to_uint8(sr).astype(np.float64) - hr8.astype(np.float64)
    if border:
        diff = diff[border:-border, border:-border]
    r, g, b = diff.reshape(-1, 3).mean(axis=0)
    return float(r), float(g), float(b)


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
                    upscaled = bicubic_upscale(lr, scale, hr.shape[:2])
                    bicubic = _y_psnr(hr8, upscaled, scale)
                except ValueError as err:
                    raise ValueError(f"validation image {path} at x{scale:g}: {err}") from None
                self.pairs.append(ValPair(str(path), scale, hr8, lr, bicubic, channel_bias(hr8, upscaled, scale)))
        if not self.pairs:
            raise NoImagesError(f"none of the {len(paths)} validation image(s) could be read")

    @property
    def num_images(self) -> int:
        return len({p.image for p in self.pairs})

    @torch.no_grad()
    def __call__(self, model: EncodesFields, device: str | torch.device = "cpu") -> dict:
        """{"x2": {"psnr", "bicubic", "gain", "bias_rgb", "bicubic_bias_rgb"}, ..., "mean_psnr", "mean_gain",
        "bias_rgb"}: means over images per scale (bias_rgb: per-channel mean error in levels), then over scales."""
        was_training = getattr(model, "training", False)
        if hasattr(model, "eval"):
            model.eval()
        scores: dict[float, list[tuple]] = {s: [] for s in self.scales}
        try:
            for pair in self.pairs:
                sr, _, _ = model_upscale(model, pair.lr, pair.hr8.shape[:2], device)
                scores[pair.scale].append(
                    (
                        _y_psnr(pair.hr8, sr, pair.scale),
                        pair.bicubic_psnr,
                        channel_bias(pair.hr8, sr, pair.scale),
                        pair.bicubic_bias,
                    )
                )
        finally:
            if was_training:
                model.train()
        result: dict = {}
        for scale, values in scores.items():
            model_psnr, bicubic = (float(np.mean([v[i] for v in values])) for i in (0, 1))
            bias, bicubic_bias = (np.mean([v[i] for v in values], axis=0).round(4).tolist() for i in (2, 3))
            result[f"x{scale:g}"] = {
                "psnr": model_psnr,
                "bicubic": bicubic,
                "gain": model_psnr - bicubic,
                "bias_rgb": bias,
                "bicubic_bias_rgb": bicubic_bias,
            }
        per_scale = [v for v in result.values()]
        result["mean_psnr"] = float(np.mean([v["psnr"] for v in per_scale]))
        result["mean_gain"] = float(np.mean([v["gain"] for v in per_scale]))
        result["bias_rgb"] = np.mean([v["bias_rgb"] for v in per_scale], axis=0).round(4).tolist()
        return result
