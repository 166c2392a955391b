"""The Python API beside `p2g upscale`: images as numpy arrays or PIL images in, the same type out.

    from sr_model.api import load_model, upscale

    model = load_model("run/best.pt")            # device="cuda" for a GPU
    field = model.encode(image)                  # once per image (tile=N for large ones)
    x2, x37 = field.render(2), field.render(3.7) # each a render of the same field
    big = field.render((3, 5))                   # anisotropic (s_h, s_w); size=(H, W) for an exact size
    sr = upscale(image, "run/best.pt", 4)        # one call

Types out follow the input: a uint8 / uint16 array gives the same dtype (rounded), a float array gives the
same float dtype clipped to [0, 1], always (H, W, 3) RGB (grey and RGBA inputs are read as RGB, as image
files are); a PIL image gives an 8-bit RGB PIL image. `field.field` is the `GaussianField` itself (tensors,
unclamped renders via `gaussian_field.render`); `model.model` is the torch module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gaussian_field import GaussianField, render
from gaussian_field.image_io import array_to_rgb_float, quantize
from sr_model import checkpoint
from sr_model.inference import encode as encode_tensor
from sr_model.model import ContinuousSR


def check_device(device: str | torch.device) -> torch.device:
    """A torch device that exists here, or a ValueError saying what is available."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{device!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device} asked for, but no CUDA device is available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {device} asked for, but only {count} CUDA device(s) exist")
    elif device.type != "cpu":
        raise ValueError(f"device {device} is not supported; use cpu or cuda")
    return device


@dataclass(frozen=True)
class _ImageKind:
    """How to give a render back in the caller's type."""

    kind: str  # "numpy" or "pil"
    dtype: Any = None

    def from_render(self, image: torch.Tensor) -> Any:
        """(1, 3, H, W) render -> the caller's type."""
        if self.kind == "pil":
            from PIL import Image

            return Image.fromarray(quantize(image[0].cpu(), 8), "RGB")
        dtype = np.dtype(self.dtype)
        if dtype == np.uint8 or dtype == np.uint16:
            return quantize(image[0].cpu(), 8 if dtype == np.uint8 else 16)
        hwc = image[0].detach().permute(1, 2, 0).cpu().numpy()
        return np.clip(hwc, 0.0, 1.0).astype(dtype)


def image_to_tensor(image: Any) -> tuple[torch.Tensor, _ImageKind]:
    """A numpy array (H, W), (H, W, 3|4) or PIL image -> (1, 3, h, w) float32 in [0, 1], and how to give back."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L", "I;16", "I", "F", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        rgb, kind = array_to_rgb_float(np.asarray(image)), _ImageKind("pil")
    elif isinstance(image, np.ndarray):
        if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or
                                       np.issubdtype(image.dtype, np.floating)):
            raise ValueError(f"image arrays must hold integers or floats, got {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
        if min(image.shape[:2]) == 0:
            raise ValueError(f"empty image of shape {image.shape}")
        out_dtype = image.dtype if image.dtype in (np.uint8, np.uint16) or np.issubdtype(
            image.dtype, np.floating) else np.float32
        rgb, kind = array_to_rgb_float(image), _ImageKind("numpy", out_dtype)
    else:
        raise ValueError(f"give a numpy array or a PIL image, not {type(image).__name__} (for torch tensors call "
                         f"the model's encode on a (1, 3, h, w) batch)")
    if not np.isfinite(rgb).all():
        raise ValueError("image contains NaN or inf values")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], kind


class ImageField:
    """An encoded image: render it at any scale or size, as many times as wanted, in the input's type."""

    def __init__(self, field: GaussianField, kind: _ImageKind) -> None:
        self.field = field
        self._kind = kind

    @property
    def lr_size(self) -> tuple[int, int]:
        """(h, w) of the encoded image."""
        return self.field.lr_size

    def render(self, scale: float | Sequence[float] | None = None, size: Sequence[int] | None = None,
               backend: str = "auto") -> Any:
        """The image at `scale` (s or (s_h, s_w)) or of `size` (H, W), in the type the image was given in."""
        with torch.no_grad():
            return self._kind.from_render(render(self.field, size=size, scale=scale, backend=backend))

    def save(self, path: str | os.PathLike, **metadata) -> None:
        """Write the field's .npz (for `p2g render` or `gaussian_field.load_field`)."""
        self.field.save(path, **metadata)


class ImageModel:
    """A loaded model that takes images (numpy / PIL) instead of tensors."""

    def __init__(self, model: ContinuousSR) -> None:
        if not isinstance(model, ContinuousSR):
            raise ValueError(f"expected a ContinuousSR model, got {type(model).__name__}")
        self.model = model.eval()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, image: Any, tile: int | None = None, context: int | None = None) -> ImageField:
        """Encode once (on `tile` x `tile` LR tiles if given; memory is checked first) -> an ImageField."""
        lr, kind = image_to_tensor(image)
        param = next(self.model.parameters())
        field = encode_tensor(self.model, lr.to(param.device, param.dtype), tile=tile, context=context)
        return ImageField(field, kind)

    def upscale(self, image: Any, scale: float | Sequence[float] | None = None, size: Sequence[int] | None = None,
                tile: int | None = None) -> Any:
        """encode(image).render(scale, size) in one call."""
        return self.encode(image, tile=tile).render(scale=scale, size=size)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ImageModel:
    """The checkpoint at `path` as an ImageModel on `device`."""
    return ImageModel(checkpoint.load_model(path, check_device(device)))


def as_image_model(checkpoint_or_model: Any, device: str | torch.device = "cpu") -> ImageModel:
    """An ImageModel from a checkpoint path, a ContinuousSR module, or an ImageModel."""
    if isinstance(checkpoint_or_model, ImageModel):
        return checkpoint_or_model
    if isinstance(checkpoint_or_model, ContinuousSR):
        return ImageModel(checkpoint_or_model)
    if isinstance(checkpoint_or_model, (str, Path, os.PathLike)):
        return load_model(checkpoint_or_model, device)
    raise ValueError(f"expected a checkpoint path or a model, got {type(checkpoint_or_model).__name__}")


def encode_image(image: Any, checkpoint_or_model: Any, tile: int | None = None) -> ImageField:
    """Encode one numpy / PIL image with a model (or a checkpoint path)."""
    return as_image_model(checkpoint_or_model).encode(image, tile=tile)


def upscale(image: Any, checkpoint_or_model: Any, scale: float | Sequence[float] | None = None,
            size: Sequence[int] | None = None, tile: int | None = None) -> Any:
    """Super-resolve one numpy / PIL image at `scale` or to `size` (H, W); same type out."""
    return as_image_model(checkpoint_or_model).upscale(image, scale=scale, size=size, tile=tile)
