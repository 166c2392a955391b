"""Before fitting into an existing store: is it intact, and are its images still the ones it was fitted from?

Damaged storage keys (`prior_store.integrity`) are reset to their planned state so the job refits their crops.
Images are compared by size and mtime against the store's file record, and only files that differ are hashed
against the content hashes stored with their fitted crops; a file whose bytes changed is refused (the store
would mix fits of two contents) unless the caller asks to refit its crops.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from prior_store import STATUS_DONE, STATUS_FAILED, STATUS_PENDING, PriorStore
from prior_store.file_record import read_file_record, write_file_record
from prior_store.integrity import record_verification, reset_crops, verify_store
from prior_store.store import StoreError


class CorpusChangedError(StoreError):
    """Images whose contents changed since their crops were fitted."""


def unencodable_names(sources: Sequence[str]) -> list[str]:
    """Paths that cannot be stored as UTF-8 (file names that are not UTF-8 on disk)."""
    bad = []
    for source in sources:
        try:
            str(source).encode("utf-8")
        except UnicodeEncodeError:
            bad.append(str(source))
    return bad


def refuse_unencodable(sources: Sequence[str]) -> None:
    bad = sorted(set(unencodable_names(sources)))
    if bad:
        shown = ", ".join(ascii(name) for name in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(
            f"{len(bad)} image file name(s) are not valid UTF-8 and cannot be recorded in the store: "
            f"{shown}; rename them (e.g. `convmv -f latin1 -t utf8`) or leave them out"
        )


def _stat(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def _digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def record_files(store: PriorStore, sources: Sequence[str], root: str | os.PathLike = ".") -> None:
    """Record size and mtime of every source (done when the store is created)."""
    record = {}
    for source in sorted(set(sources)):
        now = _stat(Path(root) / source)
        if now is not None:
            record[source] = now
    write_file_record(store, record)


def changed_sources(store: PriorStore, root: str | os.PathLike = ".") -> tuple[list[str], dict[str, list[int]]]:
    """(sources whose bytes differ from those their crops were fitted from, the updated file record)."""
    status = store.status()
    sources = store.read("crops/source")
    hashes = store.read("crops/content_hash")
    record = read_file_record(store)
    fitted: dict[str, set[str]] = {}
    live: set[str] = set()
    for source, code, digest in zip(sources, status, hashes):
        if code in (STATUS_PENDING, STATUS_DONE) or (code == STATUS_FAILED and digest):
            live.add(source)
        if code in (STATUS_DONE, STATUS_FAILED) and digest:
            fitted.setdefault(source, set()).add(digest)
    changed = []
    for source in sorted(live):
        path = Path(root) / source
        now = _stat(path)
        if now is None or record.get(source) == now:
            continue  # a vanished file fails its crops in the worker, with the reason
        known = fitted.get(source)
        if not known:
            record[source] = now  # nothing fitted from it yet: its pending crops will see the new bytes
            continue
        if known == {_digest(path)}:
            record[source] = now  # touched, same bytes
        else:
            changed.append(source)
    return changed, record


def check_store_before_resume(
    store: PriorStore,
    sources: Sequence[str],
    boxes: np.ndarray,
    status: np.ndarray,
    reasons: Sequence[str],
    refit_changed: bool = False,
    root: str | os.PathLike = ".",
    echo: Callable[[str], None] = print,
) -> None:
    """Mend damaged keys and check the images of an existing store (plan arrays as planned for this run)."""
    report = verify_store(store)
    if not report.ok:
        ranges = reset_crops(store, report.crop_ranges(), sources, boxes, status, reasons)
        crops = sum(stop - start for start, stop in ranges)
        echo(
            f"mending: {len(report.damage)} damaged storage key(s) ({', '.join(d.key for d in report.damage[:3])}"
            f"{' ...' if len(report.damage) > 3 else ''}); {crops} crops marked pending to refit"
        )
        record_verification(store, report, "p2g fit-prior", mended=True)  # a clean resume writes nothing
    changed, record = changed_sources(store, root)
    if changed and not refit_changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise CorpusChangedError(
            f"{len(changed)} image(s) changed since their crops were fitted into {store.path}: {shown}; restore "
            "them, or rerun with --refit-changed to refit their crops"
        )
    if changed:
        names = set(changed)
        stored = store.read("crops/source")
        rows = np.flatnonzero([s in names for s in stored])
        step = store.chunk_size
        ranges = sorted({(int(i) - int(i) % step, min(store.num_crops, int(i) - int(i) % step + step)) for i in rows})
        reset = reset_crops(store, ranges, sources, boxes, status, reasons)
        for source in changed:
            record[source] = _stat(Path(root) / source)
        echo(
            f"refitting the {len(rows)} crops of {len(changed)} changed image(s) "
            f"({sum(b - a for a, b in reset)} crops in their chunks)"
        )
    write_file_record(store, {k: v for k, v in record.items() if v is not None})


__all__ = [
    "CorpusChangedError",
    "changed_sources",
    "check_store_before_resume",
    "record_files",
    "refuse_unencodable",
    "unencodable_names",
]
