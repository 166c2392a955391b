"""PSNR and SSIM exactly as BasicSR computes them (`metrics/psnr_ssim.py`), so our numbers mean the paper's.

Images are RGB (H, W, 3) on the 0-255 scale (uint8, or floats already multiplied by 255); BasicSR's own
functions expect BGR, ours take RGB and apply the same luma weights to the right channels
(tests/golden/metrics.json keeps the result of the classic mistake of feeding RGB to BasicSR).

- Y channel: Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 on the 0-255 scale (ITU-R BT.601, unrounded);
  BasicSR computes it in float32, we in float64 (changes PSNR by < 1e-7 dB).
- `crop_border` pixels are cut from every side before anything else.
- PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels in float64; identical images give inf.
- SSIM per channel, then averaged: 11x11 Gaussian window, sigma 1.5 (cv2.getGaussianKernel), filtered with
  cv2.filter2D and kept on the 'valid' region only ([5:-5, 5:-5]), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2.
"""

from __future__ import annotations

import numpy as np

#: BT.601 luma weights for R, G, B on [0, 1] input, giving Y on the 0-255 scale (plus 16).
Y_WEIGHTS_RGB = (65.481, 128.553, 24.966)


def _check_pair(img: np.ndarray, img2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    img, img2 = np.asarray(img), np.asarray(img2)
    if img.shape != img2.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {img2.shape}")
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[-1] not in (1, 3)):
        raise ValueError(f"expected (H, W, 3) RGB or (H, W) images, got shape {img.shape}")
    return img, img2


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """Y (H, W) on the 0-255 scale from RGB (H, W, 3) on the 0-255 scale, in float64."""
    rgb = np.asarray(img, dtype=np.float64) / 255.0
    return 16.0 + rgb @ np.asarray(Y_WEIGHTS_RGB, dtype=np.float64)


def _prepare(img: np.ndarray, crop_border: int, test_y_channel: bool) -> np.ndarray:
    if crop_border < 0 or int(crop_border) != crop_border:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    crop_border = int(crop_border)
    if crop_border:
        if 2 * crop_border >= min(img.shape[:2]):
            raise ValueError(
                f"a border of {crop_border} px leaves nothing of a {img.shape[0]}x{img.shape[1]} image; "
                "use larger images or a smaller scale"
            )
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    if test_y_channel and img.ndim == 3 and img.shape[-1] == 3:
        img = rgb_to_y(img)
    img = np.asarray(img, dtype=np.float64)
    return img[..., None] if img.ndim == 2 else img


def psnr(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """BasicSR's `calculate_psnr` for RGB images on the 0-255 scale (inf for identical images)."""
    img, img2 = _check_pair(img, img2)
    a, b = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    mse = np.mean((a - b) ** 2)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _ssim_channel(img: np.ndarray, img2: np.ndarray) -> float:
    import cv2

    if min(img.shape) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after the border crop, got {img.shape[0]}x{img.shape[1]}")
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())
    mu1 = cv2.filter2D(img, -1, window)[5:-5, 5:-5]
    mu2 = cv2.filter2D(img2, -1, window)[5:-5, 5:-5]
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = cv2.filter2D(img**2, -1, window)[5:-5, 5:-5] - mu1_sq
    sigma2_sq = cv2.filter2D(img2**2, -1, window)[5:-5, 5:-5] - mu2_sq
    sigma12 = cv2.filter2D(img * img2, -1, window)[5:-5, 5:-5] - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))
    return float(ssim_map.mean())


def ssim(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """BasicSR's `calculate_ssim` for RGB images on the 0-255 scale: mean over channels of the mean SSIM map."""
    img, img2 = _check_pair(img, img2)
    a, b = _prepare(img, crop_border, test_y_channel), _prepare(img2, crop_border, test_y_channel)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


def protocol_settings(protocol: str, scale: float) -> tuple[int, bool]:
    """(crop_border, test_y_channel) of a protocol: 'benchmark' = Y with shave scale, 'div2k' = RGB, scale + 6.

    A non-integer scale shaves ceil(scale) (+ 6).
    """
    shave = int(np.ceil(scale - 1e-9))
    if protocol == "benchmark":
        return shave, True
    if protocol == "div2k":
        return shave + 6, False
    raise ValueError(f"unknown protocol {protocol!r}; use 'benchmark' (Y, shave = scale) or 'div2k' (RGB, scale + 6)")
