"""One writer per store: an advisory lock file beside the store, naming the process that holds it.

The lock is `fcntl.flock` on ``STORE.lock`` (a sibling, so it exists before the store is created and guards
creation too). The kernel drops it when the holder dies, so a killed run never leaves a stale lock; the file
records pid, host and verb only for the refusal message. Stores on object storage (URLs) are not locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from prior_store.store import StoreError


class StoreLockedError(StoreError):
    """Another p2g process holds the store's lock."""


def lock_path(store: str | os.PathLike) -> Path:
    path = Path(store)
    return path.with_name(path.name + ".lock")


@contextlib.contextmanager
def store_lock(store: str | os.PathLike, verb: str) -> Iterator[None]:
    """Hold the store's lock for the block, or raise StoreLockedError naming the holder."""
    if "://" in str(store):
        yield
        return
    import fcntl

    path = lock_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)  # as creating the store would
    while True:
        try:
            handle = open(path, "a+")
        except OSError as err:
            raise PermissionError(
                f"cannot lock store {store}: {path} cannot be created ({err.strerror or err}); "
                "the store's folder must be writable"
            ) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            handle.close()
            raise StoreLockedError(
                f"another p2g {holder.get('verb', 'process')} is running on store {store} (pid "
                f"{holder.get('pid', '?')}, host {holder.get('host', '?')}); wait for it to finish, or stop it"
            ) from None
        # the holder before us may have removed the file between our open and our lock: retry on the new one
        try:
            same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "verb": verb}))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def check_writable(store: str | os.PathLike) -> None:
    """Refuse (PermissionError, one line) a local store this process cannot write, before any work."""
    if "://" in str(store) or not Path(store).exists():
        return
    probe = Path(store) / f".p2g-write-probe-{os.getpid()}"
    try:
        with open(probe, "w"):
            pass
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"store {store} is not writable ({err.strerror or err}); make it writable, or "
            "copy it somewhere writable and use the copy"
        ) from None


__all__ = ["StoreLockedError", "check_writable", "lock_path", "store_lock"]
