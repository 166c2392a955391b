"""Every write of a local store replaces its file whole: the new bytes go to a hidden sibling, are flushed to disk,
and are renamed over the old file, so a full disk, a kill or a crash leaves the previous version or the new one,
never a truncated or missing file.

zarr's own `LocalStore` did not do this before zarr 3.1.3 (it truncated the file and wrote in place), and this
package accepts older zarr 3 releases; the store class below does it whatever zarr's version is. A leftover
``.*.p2g-partial`` file (a process killed while writing) is never read as a key of an array.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from zarr.core.buffer import Buffer
from zarr.storage import LocalStore

#: Suffix of a file being written (renamed onto its key when complete).
PARTIAL_SUFFIX = ".p2g-partial"


#: errno values that mean "the disk (or the user's quota) is full": no retry helps until space is freed.
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class StoreDiskFullError(OSError):
    """The store's disk (or quota) is full: what was written before is intact; free space and rerun."""


def is_disk_full(err: BaseException | None) -> bool:
    """Whether `err` (or an error it was raised from) is a full disk or quota."""
    seen: BaseException | None = err
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


def replace_file(path: Path, data: bytes | bytearray | memoryview, exclusive: bool = False) -> int:
    """Write `data` to a hidden sibling of `path`, flush it to disk and rename it onto `path`.

    On any error (ENOSPC included) the sibling is removed and `path` keeps its previous contents. `exclusive`
    refuses (FileExistsError) to replace an existing file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{PARTIAL_SUFFIX}")
    try:
        with open(scratch, "xb") as handle:
            written = handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(scratch, path)  # FileExistsError if a writer got there first
            os.unlink(scratch)
        else:
            os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise
    return written


class AtomicLocalStore(LocalStore):
    """A zarr `LocalStore` whose writes never truncate the file they replace (see the module's docstring)."""

    def _checked_path(self, key: str, value: Buffer) -> Path:
        self._check_writable()
        if not isinstance(value, Buffer):
            raise TypeError(f"store values must be zarr Buffers, got {type(value).__name__}")
        return self.root / key

    async def set(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        path = self._checked_path(key, value)
        await asyncio.to_thread(replace_file, path, _bytes_of(value))

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        if not self._is_open:
            await self._open()
        path = self._checked_path(key, value)
        with contextlib.suppress(FileExistsError):
            await asyncio.to_thread(replace_file, path, _bytes_of(value), True)

    def set_sync(self, key: str, value: Buffer) -> None:
        self._ensure_open_sync()
        replace_file(self._checked_path(key, value), _bytes_of(value))

    async def list(self) -> AsyncIterator[str]:
        async for key in super().list():
            if not key.endswith(PARTIAL_SUFFIX):
                yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in super().list_prefix(prefix):
            if not key.endswith(PARTIAL_SUFFIX):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        async for key in super().list_dir(prefix):
            if not key.endswith(PARTIAL_SUFFIX):
                yield key


def _bytes_of(value: Buffer) -> bytes | bytearray | memoryview:
    return value.as_buffer_like() if hasattr(value, "as_buffer_like") else value.to_bytes()


def zarr_store(path: str | os.PathLike, read_only: bool = False) -> AtomicLocalStore | str:
    """What `zarr.open_group` should open for `path`: the atomic store for a local folder, the URL otherwise."""
    if "://" in str(path):
        return str(path)
    return AtomicLocalStore(Path(path), read_only=read_only)


__all__ = [
    "NO_SPACE_ERRNOS",
    "PARTIAL_SUFFIX",
    "AtomicLocalStore",
    "StoreDiskFullError",
    "is_disk_full",
    "replace_file",
    "zarr_store",
]
