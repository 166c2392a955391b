"""Evaluation as the SR literature reports it: HR folder in, LR by MATLAB bicubic, PSNR/SSIM per protocol.

For every HR image and scale s:
1. the HR image is mod-cropped (top-left kept) so the LR size is whole: h = floor(H / s), and the HR crop is
   round(h * s) rows (for integer s simply H - H mod s; likewise for the width);
2. LR = MATLAB bicubic downscale by 1/s to (h, w) (`sr_model.data.imresize`), clipped and rounded to 8 bits as
   the benchmark LR files are;
3. the model encodes that LR once and renders the field at the HR crop size (both timed); the bicubic
   baseline upscales the same LR with MATLAB bicubic by s to the same size (timed as its "render");
4. SR and HR are rounded to 8 bits (BasicSR's `tensor2img`; 16-bit HR files are compared at 8 bits) and
   scored with BasicSR's PSNR/SSIM (`sr_model.evaluation.metrics`): protocol 'benchmark' = Y channel, shave s;
   'div2k' = RGB, shave s + 6 (ceil(s) for non-integer s).
Scores are averaged per image (mean of per-image PSNRs), as the literature does.

With existing LR files (`lr_sources`, e.g. DIV2K's HR/ and LR_bicubic/X4/), step 2 reads the LR file instead:
each LR is paired with the HR image of the same name, or of its name less a scale suffix (0801x4.png -> 0801.png),
the scale comes from the sizes (the suffix, when there is one, must agree), and the HR is mod-cropped to it.
`save_dir` keeps every super-resolved image (the model's, or bicubic's without a model) as NAME_x4.png.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from gaussian_field import GaussianField, render
from gaussian_field.image_io import (
    ImageReadError,
    ImageTooLargeError,
    probe_image,
    read_image,
    read_image_file,
    write_image,
)
from sr_model.data.datasets import (
    NoImagesError,
    SkippedImageWarning,
    by_stem,
    find_images,
    to_8bit_levels,
)
from sr_model.data.imresize import imresize
from sr_model.evaluation.metrics import protocol_settings, psnr, ssim
from sr_model.inference.encode import encode_tiles, plan_encode
from sr_model.networks.model import ContinuousSR

log = logging.getLogger(__name__)
BICUBIC = "bicubic"


class EncodesFields(Protocol):
    """What eval needs of a model: LR (1, 3, h, w) in [0, 1] -> GaussianField."""

    def encode(self, lr: torch.Tensor) -> GaussianField: ...


@dataclass(frozen=True)
class EvalRow:
    """One (image, scale, method) result; times in milliseconds (encode is empty for bicubic)."""

    image: str
    scale: float
    method: str
    hr_height: int
    hr_width: int
    lr_height: int
    lr_width: int
    psnr: float
    ssim: float
    encode_ms: float | None
    render_ms: float


@dataclass(frozen=True)
class LRPair:
    """An HR image, an existing LR file of it and the scale between them."""

    hr: Path
    lr: Path
    scale: float


#: An LR file name with a scale suffix: 0801x4, babyx2, imgx1.5.
_SCALE_SUFFIX = re.compile(r"^(?P<stem>.+?)x(?P<scale>\d+(?:\.\d+)?)$", re.IGNORECASE)


def pair_scale(hr_size: Sequence[int], lr_size: Sequence[int], named: float | None = None) -> float:
    """The scale s with floor(HR / s) = LR on both sides (an integer when one fits); ValueError if none."""
    hr_h, hr_w = hr_size
    h, w = lr_size
    candidates = [named] if named is not None else [round(hr_h / h), hr_h / h, hr_w / w]
    for scale in candidates:
        if scale and scale >= 1 and lr_geometry((hr_h, hr_w), scale)[0] == (h, w):
            return float(scale)
    said = f" (x{named:g} by its name)" if named is not None else ""
    raise ValueError(f"an LR of {w}x{h} px is not the HR's {hr_w}x{hr_h} px divided by one scale{said}")


def pair_lr_images(hr_paths: Sequence[Path], lr_paths: Sequence[Path]) -> list[LRPair]:
    """Each LR file with its HR image by name (same name, or the name less a scale suffix), scale from the sizes.

    An LR file without an HR image is skipped with a warning; no pair at all is an error.
    """
    hr_by_stem = by_stem(
        hr_paths,
        "HR images {first} and {second} have the same name; LR files are matched by name, so give one folder at a time",
    )
    pairs = []
    for lr in lr_paths:
        hr, named = hr_by_stem.get(lr.stem), None
        match = _SCALE_SUFFIX.match(lr.stem)
        if hr is None and match is not None:
            hr, named = hr_by_stem.get(match["stem"]), float(match["scale"])
        if hr is None:
            names = lr.stem if match is None else f"{match['stem']} or {lr.stem}"
            warnings.warn(f"skipping LR image {lr}: no HR image named {names}", SkippedImageWarning, stacklevel=2)
            continue
        # an unreadable or too large file: its own one-line error
        sizes = probe_image(hr, verify=True).size, probe_image(lr, verify=True).size
        try:
            scale = pair_scale(*sizes, named)
        except ValueError as err:
            raise ValueError(f"{lr} and {hr}: {err}") from None
        pairs.append(LRPair(hr, lr, scale))
    if not pairs:
        raise NoImagesError(
            f"none of the {len(lr_paths)} LR image(s) has an HR image of the same name "
            "(0801.png for 0801.png or 0801x4.png)"
        )
    return sorted(pairs, key=lambda p: (str(p.hr), p.scale))


def parse_scales(text: str) -> list[float]:
    """'2,3,4,6' -> [2.0, 3.0, 4.0, 6.0]; each a positive number, at least 1."""
    scales = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r} in --scales {text!r} is not a number; use e.g. 2,3,4") from None
        if not (math.isfinite(value) and value >= 1):
            raise ValueError(f"scale {part.strip()!r} must be a finite number >= 1 (an upscale factor)")
        scales.append(value)
    return scales


def lr_geometry(hr_size: Sequence[int], scale: float) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h, w) of the LR, (H', W') of the mod-cropped HR) for an HR image of hr_size at `scale`."""
    lr = tuple(int(math.floor(n / scale + 1e-9)) for n in hr_size)
    if min(lr) < 1:
        raise ValueError(f"an image of {hr_size[0]}x{hr_size[1]} px is too small for x{scale:g}")
    return lr, tuple(int(round(n * scale)) for n in lr)


def make_lr(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(mod-cropped HR, 8-bit-level LR), both float64 (H, W, 3) in [0, 1]."""
    (h, w), (crop_h, crop_w) = lr_geometry(hr.shape[:2], scale)
    hr = np.asarray(hr, dtype=np.float64)[:crop_h, :crop_w]
    lr = imresize(torch.from_numpy(hr).permute(2, 0, 1), scale=1 / scale, size=(h, w))
    return hr, to_8bit_levels(lr).permute(1, 2, 0).numpy()


def bicubic_upscale(lr: np.ndarray, scale: float, size: tuple[int, int]) -> np.ndarray:
    """The bicubic baseline: MATLAB bicubic upscale of the LR by `scale` to `size`, float64 (H, W, 3)."""
    out = imresize(torch.from_numpy(np.asarray(lr, dtype=np.float64)).permute(2, 0, 1), scale=scale, size=size)
    return out.permute(1, 2, 0).numpy()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and round to 8 bits, as BasicSR's tensor2img does before scoring."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_upscale(
    model: EncodesFields, lr: np.ndarray, size: tuple[int, int], device, notice: Callable[[str], None] | None = None
) -> tuple[np.ndarray, float, float]:
    """(SR (H, W, 3), encode seconds, render seconds): one encode, one render at `size`.

    A ContinuousSR model's encode is planned first (`sr_model.inference.encode.plan_encode`): refused over the memory
    budget, tiled by itself when the whole image does not fit, which `notice` (default: the log) is told.
    """
    device = torch.device(device)
    lr_t = torch.from_numpy(np.ascontiguousarray(lr, dtype=np.float32)).permute(2, 0, 1)[None].to(device)
    plan = plan_encode(model, *lr.shape[:2]) if isinstance(model, ContinuousSR) else None
    if plan is not None and plan.note:
        (notice or log.info)(plan.note)
    with torch.inference_mode():
        _sync(device)
        start = time.perf_counter()
        field = model.encode(lr_t) if plan is None else encode_tiles(model, lr_t, plan)
        _sync(device)
        encoded = time.perf_counter()
        sr = render(field, size=size)
        _sync(device)
        rendered = time.perf_counter()
    if tuple(sr.shape) != (1, 3, *size):
        raise ValueError(f"the model rendered {tuple(sr.shape)}, expected (1, 3, {size[0]}, {size[1]})")
    return sr[0].permute(1, 2, 0).double().cpu().numpy(), encoded - start, rendered - encoded


def _score(hr8: np.ndarray, sr: np.ndarray, protocol: str, scale: float) -> tuple[float, float]:
    border, y_channel = protocol_settings(protocol, scale)
    sr8 = to_uint8(sr)
    return psnr(hr8, sr8, border, y_channel), ssim(hr8, sr8, border, y_channel)


def evaluate(
    sources: Sequence[str | os.PathLike],
    scales: Sequence[float] | None,
    protocol: str = "benchmark",
    model: EncodesFields | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[Iterable], Iterable] | None = None,
    lr_sources: Sequence[str | os.PathLike] | None = None,
    save_dir: str | os.PathLike | None = None,
    notice: Callable[[str], None] | None = None,
) -> list[EvalRow]:
    """Score the bicubic baseline and, if given, the model on every image and scale (see module doc).

    With `lr_sources` the LR files found there are used (scales from their sizes; `scales`, if given, keeps
    only those); `save_dir` receives the super-resolved images.
    """
    protocol_settings(protocol, 2.0)  # unknown protocol: fail before any work
    if not scales and not lr_sources:
        raise ValueError("no scale to evaluate; give e.g. --scales 2,3,4")
    paths = find_images(sources)
    cases: dict[Path, list[tuple[float, Path | None]]] = {}
    if lr_sources:
        for pair in pair_lr_images(paths, find_images(lr_sources)):
            if not scales or any(math.isclose(pair.scale, s) for s in scales):
                cases.setdefault(pair.hr, []).append((pair.scale, pair.lr))
        if not cases:
            wanted = ", ".join(f"x{s:g}" for s in scales)
            raise NoImagesError(f"no LR image at {wanted} in {', '.join(map(str, lr_sources))}")
    else:
        cases = {path: [(scale, None) for scale in scales] for path in paths}
        refuse_too_large(paths)
    if save_dir is not None:
        _check_save_names(list(cases))
    if model is not None and hasattr(model, "eval"):
        model.eval()
    rows: list[EvalRow] = []
    skipped = 0
    for path in progress(list(cases)) if progress else list(cases):
        try:
            hr_full = read_image(path)
        except ImageTooLargeError:
            raise  # not broken: scores without it would mislead; the user raises the limit or leaves it out
        except ImageReadError as err:
            warnings.warn(f"skipping unreadable image {path}: {err}", SkippedImageWarning, stacklevel=2)
            skipped += 1
            continue
        for scale, lr_path in cases[path]:
            try:
                hr, lr = make_lr(hr_full, scale) if lr_path is None else _read_pair(hr_full, lr_path, scale)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
            rows += _score_case(path, hr, lr, scale, protocol, model, device, save_dir, notice)
    if not rows:
        raise NoImagesError(f"none of the {len(cases)} image(s) could be read ({skipped} unreadable)")
    return rows


def refuse_too_large(paths: Iterable[Path]) -> None:
    """Read every header before any work, so that an image over the pixel limit (ImageTooLargeError) stops the run
    before it starts; a damaged file is left to the scoring loop, which skips it with a warning."""
    for path in paths:
        try:
            probe_image(path, verify=True)
        except ImageTooLargeError:
            raise
        except (ImageReadError, OSError):
            continue


def _read_pair(hr_full: np.ndarray, lr_path: Path, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(HR mod-cropped to the LR file's size times `scale`, the LR file) as float64."""
    image = read_image_file(lr_path)
    if image.bits in (8, 16):  # the file's exact levels in float64, as make_lr's LR (float32 / 255 is not)
        peak = 255.0 if image.bits == 8 else 65535.0
        lr = np.round(image.rgb.astype(np.float64) * peak) / peak
    else:
        lr = image.rgb.astype(np.float64)
    (h, w), (crop_h, crop_w) = lr_geometry(hr_full.shape[:2], scale)
    if (h, w) != lr.shape[:2]:
        raise ValueError(f"{lr_path} is {lr.shape[1]}x{lr.shape[0]} px, not {w}x{h} (x{scale:g})")
    return np.asarray(hr_full, dtype=np.float64)[:crop_h, :crop_w], lr


def _check_save_names(paths: Sequence[Path]) -> None:
    by_stem(
        paths, "{first} and {second} would save the same NAME_xS.png; evaluate them separately or without --save-images"
    )


def _score_case(
    path: Path,
    hr: np.ndarray,
    lr: np.ndarray,
    scale: float,
    protocol: str,
    model: EncodesFields | None,
    device,
    save_dir,
    notice: Callable[[str], None] | None = None,
) -> list[EvalRow]:
    hr8 = to_uint8(hr)
    geometry = dict(
        image=str(path),
        scale=scale,
        hr_height=hr.shape[0],
        hr_width=hr.shape[1],
        lr_height=lr.shape[0],
        lr_width=lr.shape[1],
    )
    start = time.perf_counter()
    sr = bicubic_upscale(lr, scale, hr.shape[:2])
    seconds = time.perf_counter() - start
    rows = [
        EvalRow(
            method=BICUBIC,
            **geometry,
            **_scores(hr8, sr, protocol, scale, path),
            encode_ms=None,
            render_ms=seconds * 1e3,
        )
    ]
    if model is not None:
        sr, encode_s, render_s = model_upscale(model, lr, hr.shape[:2], device, notice)
        rows.append(
            EvalRow(
                method="model",
                **geometry,
                **_scores(hr8, sr, protocol, scale, path),
                encode_ms=encode_s * 1e3,
                render_ms=render_s * 1e3,
            )
        )
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        write_image(Path(save_dir) / f"{Path(path).stem}_x{scale:g}.png", to_uint8(sr) / 255.0)
    return rows


def _scores(hr8, sr, protocol, scale, path) -> dict[str, float]:
    try:
        value_psnr, value_ssim = _score(hr8, sr, protocol, scale)
    except ValueError as err:
        raise ValueError(f"{path} at x{scale:g}: {err}") from None
    return {"psnr": value_psnr, "ssim": value_ssim}


def load_eval_model(checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> EncodesFields | None:
    """None for 'bicubic' (baseline only), else the model of a checkpoint file."""
    if str(checkpoint) == BICUBIC:
        return None
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (or use --checkpoint bicubic for the baseline alone)")
    try:
        from sr_model.files.model_files import load_network
    except ImportError as err:
        raise ValueError(f"cannot load model checkpoints in this installation ({err})") from None
    return load_network(path, device)


def write_csv(rows: Sequence[EvalRow], path: str | os.PathLike) -> Path:
    """Per-image results, one row per (image, scale, method)."""
    path = Path(path)
    names = [f.name for f in fields(EvalRow)]
    tmp = path.with_name(f".{path.name}.partial")
    try:  # names that are not UTF-8 are written backslash-escaped, so the CSV stays valid UTF-8
        with open(tmp, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            for row in rows:
                record = asdict(row)
                for key in ("psnr", "ssim", "encode_ms", "render_ms"):
                    if record[key] is not None:
                        record[key] = f"{record[key]:.6f}"
                record["scale"] = f"{row.scale:g}"
                writer.writerow(record)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _mean(values: Iterable[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summarize(rows: Sequence[EvalRow]) -> list[dict]:
    """Per (scale, method): image count and mean PSNR, SSIM, encode ms, render ms; in scale order."""
    groups: dict[tuple[float, str], list[EvalRow]] = {}
    for row in rows:
        groups.setdefault((row.scale, row.method), []).append(row)
    return [
        {
            "scale": scale,
            "method": method,
            "images": len(group),
            "psnr": _mean(r.psnr for r in group),
            "ssim": _mean(r.ssim for r in group),
            "encode_ms": _mean(r.encode_ms for r in group),
            "render_ms": _mean(r.render_ms for r in group),
        }
        for (scale, method), group in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] != BICUBIC))
    ]


def summary_markdown(rows: Sequence[EvalRow], protocol: str, title: str = "", lr_from: str = "") -> str:
    """The summary as a markdown table: bicubic and model side by side, one line per scale."""
    border_rule = "Y channel, shave = scale" if protocol == "benchmark" else "RGB, shave = scale + 6"
    by_scale: dict[float, dict[str, dict]] = {}
    for entry in summarize(rows):
        by_scale.setdefault(entry["scale"], {})[entry["method"]] = entry
    has_model = any(row.method != BICUBIC for row in rows)
    images = len({row.image for row in rows})
    lines = [
        f"{title or 'Evaluation'}: protocol {protocol} ({border_rule}), {images} image(s), "
        f"LR {lr_from or 'by MATLAB bicubic (8-bit)'}; PSNR in dB, times in ms (mean per image)",
        "",
    ]
    if has_model:
        lines += [
            "| scale | bicubic PSNR | bicubic SSIM | model PSNR | model SSIM | PSNR gain | encode ms | render ms |",
            "|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += ["| scale | bicubic PSNR | bicubic SSIM | bicubic ms |", "|---|---|---|---|"]
    for scale, methods in by_scale.items():
        base = methods[BICUBIC]
        if has_model:
            model = methods["model"]
            lines.append(
                f"| x{scale:g} | {base['psnr']:.3f} | {base['ssim']:.4f} | {model['psnr']:.3f} | "
                f"{model['ssim']:.4f} | {model['psnr'] - base['psnr']:+.3f} | {model['encode_ms']:.1f} | "
                f"{model['render_ms']:.1f} |"
            )
        else:
            lines.append(f"| x{scale:g} | {base['psnr']:.3f} | {base['ssim']:.4f} | {base['render_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(
    rows: Sequence[EvalRow], out_dir: str | os.PathLike, protocol: str, title: str = "", lr_from: str = ""
) -> list[Path]:
    """per_image.csv and summary.md in out_dir (created)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = out_dir / "summary.md"
    tmp = out_dir / ".summary.md.partial"
    try:
        tmp.write_text(summary_markdown(rows, protocol, title, lr_from), encoding="utf-8", errors="backslashreplace")
        os.replace(tmp, summary)
    finally:
        tmp.unlink(missing_ok=True)
    return [write_csv(rows, out_dir / "per_image.csv"), summary]
