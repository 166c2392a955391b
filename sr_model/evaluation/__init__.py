"""Evaluation under the literature's protocols: LR made by bicubic, PSNR/SSIM on Y or RGB with the border shaved."""
