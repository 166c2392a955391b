"""The Python API beside `p2g upscale`: images (numpy, PIL) or tensors in, the same type out.

    from sr_model.api import load_model, upscale

    model = load_model()                         # the bundled lite weights; or a .safetensors export, a
                                                 # checkpoint (.pt), an official ContinuousSR .pth
    model = load_model("run/best.pt").to("cuda") # .to(device) moves it
    sr = model(x, scale=3.7)                     # x: tensor (B, 3, h, w) -> tensor (B, 3, H, W)
    field = model.encode(image)                  # once per image (tile=N for large ones)
    x2, x37 = field.render(2), field.render(3.7) # each a render of the same field
    big = field.render((3, 5))                   # anisotropic (s_h, s_w); size=(H, W) for an exact size
    sr = upscale(image, "run/best.pt", 4)        # one call

Types out follow the input: a uint8 / uint16 array gives the same dtype (rounded), a float array gives the
same float dtype clipped to [0, 1], always (H, W, 3) RGB (grey and RGBA inputs are read as RGB, as image
files are); a PIL image gives an 8-bit RGB PIL image; a tensor (B, 3, h, w) gives a tensor (B, 3, H, W) of
its dtype on its device (float: clipped to [0, 1]; uint8: rounded). `field.field` is the `GaussianField`
itself (unclamped renders via `gaussian_field.render`); `model.model` is the torch module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaussian_field import GaussianField, render
from gaussian_field.image_io import array_to_rgb_float, quantize
from sr_model.files.model_files import load_file
from sr_model.inference.encode import encode
from sr_model.networks.model import ContinuousSR

log = logging.getLogger(__name__)
#: Tensor dtypes taken as images: floats in [0, 1] and 8-bit levels.
TENSOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8)


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

    kind: str  # "numpy", "pil" or "tensor"
    dtype: Any = None
    device: Any = None

    def from_render(self, image: torch.Tensor) -> Any:
        """(B, 3, H, W) render -> the caller's type (B = 1 except for tensors)."""
        if self.kind == "tensor":
            image = image.clamp(0.0, 1.0)
            if self.dtype == torch.uint8:
                image = (image * 255.0).round()
            return image.to(device=self.device, dtype=self.dtype)
        if self.kind == "pil":
            from PIL import Image

            return Image.fromarray(quantize(image[0].cpu(), 8), "RGB")
        dtype = np.dtype(self.dtype)
        if dtype == np.uint8 or dtype == np.uint16:
            return quantize(image[0].cpu(), 8 if dtype == np.uint8 else 16)
        hwc = image[0].detach().permute(1, 2, 0).cpu().numpy()
        return np.clip(hwc, 0.0, 1.0).astype(dtype)


def tensor_to_batch(image: torch.Tensor) -> tuple[torch.Tensor, _ImageKind]:
    """A (B, 3, h, w) float or uint8 tensor -> float32 in [0, 1] on its device, and how to give back."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(
            f"an image tensor must be a batch (B, 3, h, w), got shape {tuple(image.shape)} "
            f"(one image (3, h, w): pass x[None])"
        )
    if min(image.shape) == 0:
        raise ValueError(f"empty image batch of shape {tuple(image.shape)}")
    if image.dtype not in TENSOR_DTYPES:
        raise ValueError(f"image tensors must be float (values in [0, 1]) or uint8, got {image.dtype}")
    kind = _ImageKind("tensor", image.dtype, image.device)
    batch = image.detach().to(torch.float32)
    if image.dtype == torch.uint8:
        return batch / 255.0, kind
    if not bool(torch.isfinite(batch).all()):
        raise ValueError("image contains NaN or inf values")
    return batch.clamp(0.0, 1.0), kind


def image_to_tensor(image: Any) -> tuple[torch.Tensor, _ImageKind]:
    """A numpy array (H, W), (H, W, 3|4), PIL image or tensor (B, 3, h, w) -> (B, 3, h, w) float32 in [0, 1],
    and how to give the result back."""
    if isinstance(image, torch.Tensor):
        return tensor_to_batch(image)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L", "I;16", "I", "F", "RGBA"):
            image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
        rgb, kind = array_to_rgb_float(np.asarray(image)), _ImageKind("pil")
    elif isinstance(image, np.ndarray):
        if image.dtype == bool or not (
            np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)
        ):
            raise ValueError(f"image arrays must hold integers or floats, got {image.dtype}")
        if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] not in (1, 3, 4)):
            raise ValueError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
        if min(image.shape[:2]) == 0:
            raise ValueError(f"empty image of shape {image.shape}")
        out_dtype = (
            image.dtype
            if image.dtype in (np.uint8, np.uint16) or np.issubdtype(image.dtype, np.floating)
            else np.float32
        )
        rgb, kind = array_to_rgb_float(image), _ImageKind("numpy", out_dtype)
    else:
        raise ValueError(f"give a numpy array, a PIL image or a torch tensor (B, 3, h, w), not {type(image).__name__}")
    if not np.isfinite(rgb).all():
        raise ValueError("image contains NaN or inf values")
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], kind


class ImageField:
    """An encoded image: render it at any scale or size, as many times as wanted, in the input's type."""

    def __init__(self, field: GaussianField, kind: _ImageKind, note: str | None = None) -> None:
        self.field = field
        self._kind = kind
        #: the line saying the encode tiled by itself (the whole image did not fit the memory budget), else None
        self.note = note

    @property
    def lr_size(self) -> tuple[int, int]:
        """(h, w) of the encoded image."""
        return self.field.lr_size

    def render(
        self, scale: float | Sequence[float] | None = None, size: Sequence[int] | None = None, backend: str = "auto"
    ) -> Any:
        """The image at `scale` (s or (s_h, s_w)) or of `size` (H, W), in the type the image was given in."""
        with torch.no_grad():
            return self._kind.from_render(render(self.field, size=size, scale=scale, backend=backend))

    def save(self, path: str | os.PathLike, **metadata) -> None:
        """Write the field's .npz (for `p2g render` or `gaussian_field.load_field`)."""
        self.field.save(path, **metadata)


class ImageModel:
    """A loaded model for images: numpy / PIL / tensors in, the same type out; callable, `.to(device)`."""

    def __init__(self, model: ContinuousSR, source: str | None = None) -> None:
        if not isinstance(model, ContinuousSR):
            raise ValueError(f"expected a ContinuousSR model, got {type(model).__name__}")
        self.model = model.eval()
        self.source = source or "an in-memory model"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> ImageModel:
        """Move the model to `device` (cpu, cuda, cuda:N); returns itself, as torch modules do."""
        self.model.to(check_device(device))
        return self

    def encode(self, image: Any, tile: int | None = None, context: int | None = None) -> ImageField:
        """Encode once -> an ImageField. Memory is checked first: the whole image when it fits the budget
        (`sr_model.inference.encode.memory_budget`, $P2G_MEMORY_BUDGET), else tiles that do, exactly (the field's `note`
        says so, and the log at INFO); `tile=N` asks for N x N LR tiles, `tile=0` for one piece."""
        lr, kind = image_to_tensor(image)
        param = next(self.model.parameters())
        lr = lr.to(param.device, param.dtype)
        notes: list[str] = []
        fields = [encode(self.model, lr[i : i + 1], tile, context, notice=notes.append) for i in range(lr.shape[0])]
        return ImageField(fields[0] if len(fields) == 1 else _stack(fields), kind, notes[0] if notes else None)

    def upscale(
        self,
        image: Any,
        scale: float | Sequence[float] | None = None,
        size: Sequence[int] | None = None,
        tile: int | None = None,
        backend: str = "auto",
    ) -> Any:
        """encode(image).render(scale, size) in one call."""
        return self.encode(image, tile=tile).render(scale=scale, size=size, backend=backend)

    __call__ = upscale

    def __repr__(self) -> str:
        return f"ImageModel({self.model.config.preset}, {self.source}, {self.device})"


def _stack(fields: Sequence[GaussianField]) -> GaussianField:
    """Fields of same-sized images, encoded one by one, as one batch."""
    first = fields[0]
    return GaussianField(
        torch.cat([f.means for f in fields]),
        torch.cat([f.chol for f in fields]),
        torch.cat([f.colors for f in fields]),
        first.h,
        first.w,
        first.k,
        validate=False,
    )


def load_model(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> ImageModel:
    """The model in `path` as an ImageModel on `device`: a `p2g export` .safetensors, a checkpoint (.pt) or an
    official ContinuousSR .pth (converted in memory). No path: the bundled `lite` weights (logged at INFO)."""
    loaded = load_file(path, check_device(device))
    if loaded.bundled:
        log.info(loaded.note)
    return ImageModel(loaded.model, loaded.origin)


def as_image_model(checkpoint_or_model: Any, device: str | torch.device = "cpu") -> ImageModel:
    """An ImageModel from a model file path, a ContinuousSR module, or an ImageModel."""
    if isinstance(checkpoint_or_model, ImageModel):
        return checkpoint_or_model
    if isinstance(checkpoint_or_model, ContinuousSR):
        return ImageModel(checkpoint_or_model)
    if isinstance(checkpoint_or_model, (str, Path, os.PathLike)):
        return load_model(checkpoint_or_model, device)
    raise ValueError(f"expected a checkpoint path or a model, got {type(checkpoint_or_model).__name__}")


def encode_image(image: Any, checkpoint_or_model: Any, tile: int | None = None) -> ImageField:
    """Encode one image (numpy / PIL / tensor batch) with a model (or a model file path)."""
    return as_image_model(checkpoint_or_model).encode(image, tile=tile)


def upscale(
    image: Any,
    checkpoint_or_model: Any,
    scale: float | Sequence[float] | None = None,
    size: Sequence[int] | None = None,
    tile: int | None = None,
) -> Any:
    """Super-resolve one image (numpy / PIL / tensor batch) at `scale` or to `size` (H, W); same type out."""
    return as_image_model(checkpoint_or_model).upscale(image, scale=scale, size=size, tile=tile)
