"""`p2g upscale`'s job: image files in, one encode each, one rendered file per requested scale or size.

Everything that can be refused is checked before the first output is written: missing inputs, unreadable
headers, clashing output names, the bit depth for the format, each encode's memory (with a --tile that fits)
and each output against the format's limits and the free disk space. Outputs are written atomically
(`gaussian_field.band_writer`), so an error or an interrupt leaves only complete files; `skip_existing` then
resumes an interrupted batch: outputs already on disk are complete, and an image with all of them is not encoded.

Outputs keep what the input file carries: its ICC profile (every format), its alpha channel (upscaled with bicubic
beside the colour field; a notice where the format has none: JPEG) and, unless a bit depth is asked for, its bit
depth as far as the format holds it (a 16-bit PNG gives 16-bit PNG/TIFF outputs).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gaussian_field.band_writer import BandedImage, WrittenImage, check_output, output_format, render_to_file
from gaussian_field.image_io import (
    FORMATS,
    IMAGE_SUFFIXES,
    check_quality,
    find_image_files,
    probe_image,
    read_image_file,
)
from gaussian_field.render import available_backends, resolve_geometry
from sr_model.data.datasets import by_stem
from sr_model.inference.encode import EncodePlan, encode_tiles, plan_encode
from sr_model.inference.streaming import StreamedOutput, stream_to_files, window_rows


@dataclass(frozen=True)
class RenderRequest:
    """One output per image: `tag` names the file (IMAGE_TAG.png); a scale (s or (s_h, s_w)) or a size (H, W)."""

    tag: str
    scale: float | tuple[float, float] | None = None
    size: tuple[int, int] | None = None


@dataclass
class ImageResult:
    """What one input gave: its LR size, tiles, the encode time and every output file."""

    source: Path
    lr_size: tuple[int, int]
    tiles: int
    encode_seconds: float = 0.0
    outputs: list[WrittenImage] = field(default_factory=list)
    field_path: Path | None = None
    notices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Job:
    source: Path
    plan: EncodePlan
    outputs: tuple[tuple[RenderRequest, Path], ...]
    field_path: Path | None
    bits: int
    keep_alpha: bool
    notices: tuple[str, ...]
    #: the field is rendered row of tiles by row of tiles, never whole (tiled, no field to save, a bounded reach)
    streamed: bool


def output_bits(source_bits: int, suffix: str) -> int:
    """The bit depth that keeps the source's as far as the format holds it (16-bit PNG in -> 16-bit PNG out)."""
    held = [b for b in FORMATS[suffix].bits if b <= max(8, source_bits)]
    return max(held)


def collect_inputs(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Image files given directly or found (recursively) in given folders; a missing path is an error.

    Files inside `out_dir` are never found in a folder (a rerun would upscale the outputs of the run before), and
    `out_dir` may not be an input folder itself (its outputs would sit among the inputs).
    """
    if not inputs:
        raise ValueError("no input images given")
    out = Path(out_dir).resolve() if out_dir is not None else None
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir() and out is not None and item.resolve() == out:
            raise ValueError(
                f"--out {out_dir} is the input folder {item}: its outputs would be read as inputs on the next run; "
                f"write them to another folder (e.g. {Path(item) / 'upscaled'})"
            )
        if item.is_dir():
            inside = out is not None and out.is_relative_to(item.resolve())  # outputs would land in this folder
            found = [path for path in find_image_files(item) if not (inside and path.resolve().is_relative_to(out))]
            if not found:
                raise ValueError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) found in folder {item}; give image files "
                    "or folders that hold some"
                )
            files += found
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input image not found: {item}")
    return files


def check_backend(backend: str, device: torch.device) -> None:
    """Refuse an unknown renderer, or one that cannot run on the model's device, before any work."""
    usable = available_backends(device)
    if backend != "auto" and backend not in usable:
        raise ValueError(
            f"render backend {backend!r} is not available for {device}; choose auto or one of: {', '.join(usable)}"
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plan_jobs(
    model: nn.Module,
    inputs: Sequence[Path],
    out_dir: Path,
    requests: Sequence[RenderRequest],
    suffix: str = ".png",
    bits: int | None = 8,
    save_field: bool = False,
    tile: int | None = None,
    context: int | None = None,
    budget: int | None = None,
    backend: str = "auto",
    skip_existing: bool = False,
) -> list[_Job]:
    """Check every input and output before any work; raises ValueError naming the first problem.

    `bits=None` keeps each source's bit depth where the format holds it. With `skip_existing`, outputs already
    on disk are left out, and so is an image with none left to write.
    """
    if not requests:
        raise ValueError("nothing to render: give at least one --scale or --size")
    fmt = output_format(f"x{suffix}", 8 if bits is None else bits)
    check_backend(backend, next(model.parameters()).device)
    by_stem(
        inputs,
        "inputs {first} and {second} would write the same output names ({stem}_*); rename one or run them separately",
    )
    jobs = []
    for source in inputs:
        probe = probe_image(source, verify=True)  # a damaged header raises ImageReadError naming the file
        height, width = probe.size
        job_bits = output_bits(probe.bits, suffix.lower()) if bits is None else bits
        keep_alpha = probe.has_alpha and fmt.alpha
        notices = (
            ()
            if keep_alpha or not probe.has_alpha
            else (
                f"{source.name} has transparency; {fmt.name} cannot hold it, so the outputs are opaque (use --format "
                "png, tif or webp to keep it)",
            )
        )
        field_path = out_dir / f"{source.stem}_field.npz" if save_field else None
        if skip_existing and field_path is not None and field_path.is_file():
            field_path = None
        stream = window_rows(model) if field_path is None else None  # a field to save must be whole
        plan = plan_encode(model, height, width, tile, context, budget, stream_rows=stream)
        if plan.note:
            notices += (plan.note,)
        outputs = []
        for request in requests:
            _, (out_h, out_w) = resolve_geometry((height, width), request.size, request.scale)
            path = out_dir / f"{source.stem}_{request.tag}{suffix}"
            if skip_existing and path.is_file():
                continue  # written whole earlier (outputs are renamed into place): nothing to check or write
            check_output(path, out_h, out_w, job_bits, channels=4 if keep_alpha else 3)
            outputs.append((request, path))
        if outputs or field_path is not None:
            streamed = plan.tiled and stream is not None
            jobs.append(_Job(source, plan, tuple(outputs), field_path, job_bits, keep_alpha, notices, streamed))
    return jobs


def upscale_files(
    model: nn.Module,
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    requests: Sequence[RenderRequest],
    *,
    suffix: str = ".png",
    bits: int | None = 8,
    quality: int | None = None,
    save_field: bool = False,
    tile: int | None = None,
    context: int | None = None,
    backend: str = "auto",
    budget: int | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
    tile_progress: Callable[[Iterable], Iterable] | None = None,
    on_result: Callable[[ImageResult], None] | None = None,
    field_metadata: dict | None = None,
    skip_existing: bool = False,
) -> list[ImageResult]:
    """Encode each input once and render it at every request into out_dir; returns one result per input
    encoded (with `skip_existing`, inputs whose outputs are all on disk are neither encoded nor returned).

    `bits=None` keeps each input's bit depth where the format holds it; `quality` (1-100) is for JPEG/WebP.
    `progress` wraps the list of images and `tile_progress` the tiles of a tiled encode (e.g. tqdm).
    """
    check_quality(quality)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"--out {out_dir} exists and is not a folder")
    jobs = plan_jobs(
        model,
        collect_inputs(inputs, out_dir),
        out_dir,
        requests,
        suffix,
        bits,
        save_field,
        tile,
        context,
        budget,
        backend,
        skip_existing,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for job in progress(jobs) if progress is not None else jobs:
        result = _run_job(model, job, backend, quality, tile_progress, field_metadata)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _run_job(
    model: nn.Module,
    job: _Job,
    backend: str,
    quality: int | None,
    tile_progress: Callable[[Iterable], Iterable] | None,
    field_metadata: dict | None,
) -> ImageResult:
    """One input: read, encode once (timed), then save the field and render every output of the job."""
    param = next(model.parameters())
    image = read_image_file(job.source)
    lr = torch.from_numpy(np.ascontiguousarray(image.rgb)).permute(2, 0, 1)[None].to(param.device, param.dtype)
    alpha = image.alpha if job.keep_alpha else None
    result = ImageResult(job.source, (job.plan.height, job.plan.width), len(job.plan.tiles), notices=list(job.notices))
    if job.streamed:
        result.outputs = _stream_job(model, lr, job, alpha, image.icc_profile, backend, quality, tile_progress, result)
        return result
    with torch.no_grad():
        _sync(param.device)
        start = time.perf_counter()
        gaussians = encode_tiles(model, lr, job.plan, tile_progress if job.plan.tiled else None)
        _sync(param.device)
        result.encode_seconds = time.perf_counter() - start
        if job.field_path is not None:
            gaussians.save(
                job.field_path,
                source=job.source.name,
                tiles=len(job.plan.tiles),
                context=job.plan.context,
                **(field_metadata or {}),
            )
            result.field_path = job.field_path
        for request, path in job.outputs:
            result.outputs.append(
                render_to_file(
                    gaussians,
                    path,
                    scale=request.scale,
                    size=request.size,
                    bits=job.bits,
                    backend=backend,
                    alpha=alpha,
                    icc_profile=image.icc_profile,
                    quality=quality,
                )
            )
    return result  # the image, its LR tensor and the field go with this frame, before the next input is read


def _stream_job(
    model: nn.Module,
    lr: torch.Tensor,
    job: _Job,
    alpha: np.ndarray | None,
    icc_profile: bytes | None,
    backend: str,
    quality: int | None,
    tile_progress: Callable[[Iterable], Iterable] | None,
    result: ImageResult,
) -> list[WrittenImage]:
    """Every output of a tiled job filled row of tiles by row of tiles (`sr_model.inference.streaming`); all or
    none written."""
    size = (job.plan.height, job.plan.width)
    with ExitStack() as stack:
        outputs = []
        for request, path in job.outputs:
            scale, out_size = resolve_geometry(size, request.size, request.scale)
            image = stack.enter_context(
                BandedImage(path, out_size, job.bits, alpha=alpha, icc_profile=icc_profile, quality=quality)
            )
            outputs.append(StreamedOutput(image, scale))
        result.encode_seconds = stream_to_files(model, lr, job.plan, outputs, backend, tile_progress)
        return [output.image.finish() for output in outputs]
