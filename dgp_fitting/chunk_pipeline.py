"""A fitting task's chunks as a three-stage pipeline: while the device fits chunk i, one CPU thread decodes and
crops chunk i+1's images and another writes chunk i-1 into the store.

On a GPU a batch of crops fits in seconds, so decoding its photos (plus a SHA-256 of each file) and rewriting a
shard file are no longer small beside it; done in line they leave the device idle between batches. Here they
overlap with fitting. What stays exact:

- writes keep chunk order and never overlap: one writer thread, because a chunk write rewrites its shard's file
  (read, replace the chunk, write back), so two concurrent writes would lose one;
- a chunk whose loading, fitting or writing raises is retried after the pipeline has drained, in line, so a
  retry never races a queued write; a chunk's result does not depend on which attempt fitted it;
- a kill loses at most the chunk being fitted and the one being written (both in flight); reruns skip the rest.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgp_fitting.fitting import FitConfig, crop_seed, fit_crops
from gaussian_field.image_io import ImageReadError, read_image
from prior_store import STATUS_DONE, STATUS_FAILED, STATUS_PENDING
from prior_store.atomic_store import is_disk_full
from prior_store.store import PriorStore

#: The result arrays a chunk's fitting fills in (the others of RESULT_ARRAYS are per-crop records).
FITTED_ARRAYS = ("field/means", "field/chol", "field/colors", "crops/psnr", "crops/iterations")


def crops_needing_work(status: np.ndarray, boxes: np.ndarray, crop: int) -> np.ndarray:
    """Mask of the crops a run fits: pending, or failed while fitting (its box is a whole crop); a crop that
    failed at planning (its box is not a whole crop) stays failed."""
    refit = (status == STATUS_FAILED) & (boxes[:, 2] == crop) & (boxes[:, 3] == crop)
    return (status == STATUS_PENDING) | refit


@dataclass
class ChunkWork:
    """One chunk between the stages: its records as read, the crops to fit, and the results as they land."""

    index: int
    todo: list[int]  # crops of the chunk this run fits
    ready: list[int]  # of those, the ones whose pixels are in `crops` (the others failed to load)
    crops: torch.Tensor | None  # (len(ready), 3, S, S) float32 on the CPU, pinned when fitting on CUDA
    seeds: list[int]
    values: dict[str, Any]  # the chunk's result arrays, updated in place and written whole
    fitted_psnr: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: load, fit, write

    @property
    def status(self) -> np.ndarray:
        return self.values["crops/status"]

    def summary(self) -> dict:
        todo = self.todo
        return {
            "chunk": self.index,
            "fitted": len(todo),
            "done": int((self.status[todo] == STATUS_DONE).sum()) if todo else 0,
            "failed": int((self.status[todo] == STATUS_FAILED).sum()) if todo else 0,
            "psnr": self.fitted_psnr,
            "seconds": sum(self.seconds.values()),
            **{f"{stage}_seconds": s for stage, s in self.seconds.items()},
        }


def file_digest(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class ImageCache:
    """Decoded images of the current and previous chunk: consecutive chunks of a shard mostly crop the same
    photos, which are then decoded (and hashed) once. `threads` > 1 decodes a chunk's photos in parallel (Pillow
    and hashlib release the GIL), for a GPU worker whose CPU cores would otherwise wait. Used by one thread at a
    time."""

    def __init__(self, root: str | Path, threads: int = 1) -> None:
        self.root = Path(root)
        self.threads = max(1, threads)
        self._entries: dict[str, tuple[np.ndarray | str, str]] = {}

    def _decode(self, source: str) -> tuple[np.ndarray | str, str]:
        path, digest = self.root / source, ""
        try:
            digest = file_digest(path)  # kept for a file that exists but does not decode
            return read_image(path), digest
        except (ImageReadError, OSError) as err:
            return (str(err).strip() or type(err).__name__).splitlines()[0], digest

    def prefetch(self, sources: Sequence[str]) -> None:
        """Decode the sources not cached yet, `threads` at a time."""
        missing = sorted(set(sources) - set(self._entries))
        if self.threads > 1 and len(missing) > 1:
            with ThreadPoolExecutor(min(self.threads, len(missing)), "p2g-decode") as pool:
                self._entries.update(zip(missing, pool.map(self._decode, missing)))
        else:
            self._entries.update((source, self._decode(source)) for source in missing)

    def get(self, source: str) -> tuple[np.ndarray | str, str]:
        """(pixels, or the one-line reason they could not be read; the file's SHA-256, "" if it cannot be read)."""
        if source not in self._entries:
            self._entries[source] = self._decode(source)
        return self._entries[source]

    def keep_only(self, sources: set[str]) -> None:
        self._entries = {s: e for s, e in self._entries.items() if s in sources}


def decode_threads(device: torch.device) -> int:
    """Decoding threads for a task: several beside a GPU (its CPU cores are otherwise idle), one beside CPU
    fitting (which has the worker's cores)."""
    return min(8, os.cpu_count() or 1) if device.type == "cuda" else 1


def load_chunk(store: PriorStore, index: int, cache: ImageCache, pin: bool = False) -> ChunkWork:
    """Read chunk `index`'s records, decode its images and cut the crops that need fitting (CPU only)."""
    started = time.perf_counter()
    crop = store.config.crop_size
    data = store.read_chunk(index)
    boxes = data["crops/box"]
    values: dict[str, Any] = {k: np.array(data[k], copy=True) for k in FITTED_ARRAYS}
    values["crops/status"] = data["crops/status"].copy()
    values["crops/content_hash"] = list(data["crops/content_hash"])
    values["crops/reason"] = list(data["crops/reason"])
    status, hashes, reasons = values["crops/status"], values["crops/content_hash"], values["crops/reason"]
    todo = np.flatnonzero(crops_needing_work(status, boxes, crop)).tolist()
    fit = FitConfig.from_dict(store.config.fitting)
    ready, pixels = [], []
    sources = {data["crops/source"][i] for i in todo}
    cache.prefetch(sorted(sources))
    for i in todo:
        image, digest = cache.get(data["crops/source"][i])
        hashes[i] = digest
        top, left, height, width = (int(v) for v in boxes[i])
        if isinstance(image, str):
            status[i], reasons[i] = STATUS_FAILED, image
        elif top + height > image.shape[0] or left + width > image.shape[1]:
            status[i], reasons[i] = (
                STATUS_FAILED,
                f"box {top},{left},{height}x{width} lies outside the {image.shape[1]}x{image.shape[0]} image "
                "(the file changed since the store was planned; use a new --store)",
            )
        else:
            ready.append(i)
            pixels.append(image[top : top + height, left : left + width])
    cache.keep_only(sources)
    crops = None
    if ready:
        crops = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
        if pin:
            crops = crops.pin_memory()
    work = ChunkWork(index, todo, ready, crops, [crop_seed(fit.seed, hashes[i], boxes[i]) for i in ready], values)
    work.seconds["load"] = time.perf_counter() - started
    return work


def fit_loaded(work: ChunkWork, store: PriorStore, device: torch.device) -> None:
    """Fit the loaded crops on `device` and put their results (and statuses) into `work.values`."""
    started = time.perf_counter()
    values, status, reasons = work.values, work.status, work.values["crops/reason"]
    if work.crops is not None:
        config = store.config
        crops = work.crops.to(device, non_blocking=True)
        result = fit_crops(crops, work.seeds, FitConfig.from_dict(config.fitting), config.reference_scale, config.k)
        for j, i in enumerate(work.ready):
            values["field/means"][i] = result.means[j].numpy()
            values["field/chol"][i] = result.chol[j].numpy()
            values["field/colors"][i] = result.colors[j].numpy()
            values["crops/psnr"][i] = float(result.psnr[j])
            values["crops/iterations"][i] = int(result.iterations[j])
            if result.failed[j]:
                status[i], reasons[i] = STATUS_FAILED, result.failed[j]
            else:
                status[i], reasons[i] = STATUS_DONE, ""
                work.fitted_psnr.append(float(result.psnr[j]))
    for i in work.todo:  # a crop that did not make it to the end of fitting has no valid parameters
        if status[i] != STATUS_DONE:
            values["crops/psnr"][i] = np.nan
    work.seconds["fit"] = time.perf_counter() - started


def write_fitted(work: ChunkWork, store: PriorStore) -> dict:
    """Write the whole chunk (status last) and return its summary; a chunk with nothing to fit is not rewritten."""
    started = time.perf_counter()
    if work.todo:
        store.write_chunk(work.index, work.values)
    work.seconds["write"] = time.perf_counter() - started
    return work.summary()


def run_pipelined(
    chunks: Sequence[int],
    load: Callable[[int], ChunkWork],
    fit: Callable[[ChunkWork], None],
    write: Callable[[ChunkWork], dict],
    retry: Callable[[int], dict],
    retries: int,
) -> list[dict]:
    """Summaries of `chunks` in order: load on one thread (one chunk ahead), fit on the caller's thread, write
    on another; a chunk that raised in any stage is retried `retries` times with `retry` (load, fit and write
    in line) once every write has landed, then reported as {"chunk": i, "error": repr}.

    A full disk is not retried: once a write fails for lack of space no further chunk is fitted, and the chunks
    not written are reported as {"chunk": i, "error": ..., "no_space": True} (each left as it was in the store).
    """
    summaries: dict[int, dict] = {}
    errors: dict[int, Exception] = {}
    writes: list[tuple[int, Future]] = []

    def disk_full() -> bool:
        return any(is_disk_full(e) for e in errors.values()) or any(
            f.done() and f.exception() is not None and is_disk_full(f.exception()) for _, f in writes
        )

    with ThreadPoolExecutor(1, "p2g-load") as loader, ThreadPoolExecutor(1, "p2g-write") as writer:
        next_load = loader.submit(load, chunks[0]) if chunks else None
        for n, index in enumerate(chunks):
            assert next_load is not None
            this_load = next_load
            if disk_full():
                this_load.cancel()
                break
            next_load = loader.submit(load, chunks[n + 1]) if n + 1 < len(chunks) else None
            try:
                work = this_load.result()
                fit(work)
            except Exception as err:
                errors[index] = err
                continue
            writes.append((index, writer.submit(write, work)))
        for index, future in writes:  # the writer drains before any retry runs
            try:
                summaries[index] = future.result()
            except Exception as err:
                errors[index] = err
    full = disk_full()
    for index in (i for i in chunks if i not in summaries):
        if full or is_disk_full(errors.get(index)):
            error = errors.get(index)
            summaries[index] = {"chunk": index, "error": repr(error) if error else "not run", "no_space": True}
            continue
        for _ in range(retries):
            try:
                summaries[index] = retry(index)
                break
            except Exception as err:
                errors[index] = err
                if is_disk_full(err):
                    break
        if index not in summaries:
            summaries[index] = {"chunk": index, "error": repr(errors[index])}
            if is_disk_full(errors[index]):
                summaries[index]["no_space"] = True
    return [summaries[i] for i in chunks]
