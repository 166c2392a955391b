"""Parsers shared by verbs: scales ("4", "3.7", "3x5" = s_h x s_w), sizes ("WxH"), finite numbers, and --device
(auto by default). Imports only click at module level, so that `--help` stays fast.

click's FLOAT accepts "nan" and "inf", which slip through checks such as `lr <= 0`; every float option of
the verbs uses `FINITE_FLOAT` (or `POSITIVE_FLOAT`, `NON_NEGATIVE_FLOAT`) instead.
"""

from __future__ import annotations

import math

import click


def parse_scale(text: str) -> float | tuple[float, float]:
    """'4' -> 4.0; '3x5' -> (3.0, 5.0) meaning s_h = 3, s_w = 5."""
    parts = text.lower().split("x")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a scale: use a number (3.7) or HxW (3x5)") from None
    if len(values) not in (1, 2) or any(not v > 0 or v == float("inf") for v in values):
        raise click.BadParameter(f"scale {text!r} must be one positive number or two (HxW)")
    return values[0] if len(values) == 1 else (values[0], values[1])


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (W x H) -> (H, W) = (480, 640)."""
    parts = text.lower().split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size: use WxH, e.g. 640x480") from None
    if width <= 0 or height <= 0:
        raise click.BadParameter(f"size {text!r} must be positive")
    return height, width


def scale_tag(scale: float | tuple[float, float]) -> str:
    """Name part for an output file: x4, x3.7, x3x5."""

    def fmt(v: float) -> str:
        return f"{v:g}"

    if isinstance(scale, tuple):
        return f"x{fmt(scale[0])}x{fmt(scale[1])}"
    return f"x{fmt(scale)}"


class ScaleType(click.ParamType):
    name = "SCALE"

    def convert(self, value, param, ctx):
        return value if isinstance(value, (float, tuple)) else parse_scale(str(value))


class SizeType(click.ParamType):
    name = "WxH"

    def convert(self, value, param, ctx):
        return value if isinstance(value, tuple) else parse_size(str(value))


SCALE = ScaleType()
SIZE = SizeType()


DEVICE_HELP = "auto (a CUDA GPU when there is one, else cpu), cpu, cuda or cuda:N."

#: gaussian_field.backend_table.BACKEND_NAMES, repeated here so that `--help` does not import torch (tested).
BACKEND_NAMES = ("torch", "cpu", "triton")
#: --backend's help where a verb lists every renderer.
BACKEND_HELP = f"Renderer: auto, {', '.join(BACKEND_NAMES)}."


def device_option():
    """The same --device for every verb: auto by default."""
    return click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)


def backend_option(help_text: str = BACKEND_HELP):
    """The same --backend for every verb that renders: auto by default, checked by the library (`render`)."""
    return click.option("--backend", default="auto", show_default=True, help=help_text)


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; any other name is returned for the library to check."""
    if str(device).strip().lower() != "auto":
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FiniteFloat(click.ParamType):
    """A float that must be finite, optionally > 0 (`positive`) or >= 0 (`non_negative`)."""

    name = "NUMBER"

    def __init__(self, positive: bool = False, non_negative: bool = False) -> None:
        self.positive, self.non_negative = positive, non_negative

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        if self.positive and not number > 0:
            self.fail(f"{value!r} must be greater than 0", param, ctx)
        if self.non_negative and number < 0:
            self.fail(f"{value!r} must not be negative", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()
POSITIVE_FLOAT = FiniteFloat(positive=True)
NON_NEGATIVE_FLOAT = FiniteFloat(non_negative=True)
