"""Training losses: L1 on pixels, plus an optional frequency term (the "+" variant).

The frequency term is the mean absolute difference of the orthonormal 2D real FFTs (real and imaginary parts)
of SR and HR, as the FFT losses of the SR/deblurring literature: it weighs high frequencies as much as low ones,
which pixel L1 does not, and so pushes towards sharper edges. Both terms are averaged over the batch.
"""

from __future__ import annotations

import torch


def l1_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel error."""
    return (sr - hr).abs().mean()


def frequency_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean |FFT(sr) - FFT(hr)| over real and imaginary parts (orthonormal rfft2 over H, W, in float32)."""
    diff = torch.fft.rfft2(sr.float() - hr.float(), norm="ortho")  # the FFT is linear: FFT(a) - FFT(b) = FFT(a - b)
    return torch.view_as_real(diff).abs().mean()


def reconstruction_loss(sr: torch.Tensor, hr: torch.Tensor, freq_weight: float = 0.0) -> dict[str, torch.Tensor]:
    """{"loss": total, "l1": ..., ["freq": ...]}: L1 plus freq_weight times the frequency term."""
    if sr.shape != hr.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape")
    parts = {"l1": l1_loss(sr.float(), hr.float())}
    total = parts["l1"]
    if freq_weight:
        parts["freq"] = frequency_loss(sr, hr)
        total = total + freq_weight * parts["freq"]
    return {"loss": total, **parts}
