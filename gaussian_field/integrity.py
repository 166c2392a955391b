"""What every file of tensors the project writes shares: it is written whole or not at all, and it carries a digest.

- `write_atomically`: the bytes go to `NAME.partial` beside the file, are flushed to the disk (fsync) and renamed
  over it, so a kill or a full disk leaves the previous file as it was; a failed write is one `SaveError` line.
- `DamagedFileError`: a file whose contents no longer match the digest it was saved with (refused, one line).
- `UnverifiedFileWarning`: a file that carries no digest (official ContinuousSR files, files written before
  digests existed); it is loaded, and the user is told once.

Field files (`gaussian_field.field`), checkpoints (`sr_model.files.checkpoint`) and exports
(`sr_model.files.export`) use these; each computes its digest over its own names, dtypes, shapes and bytes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

DIGEST_ALGORITHM = "sha256"


def first_line(err: BaseException) -> str:
    """The first line of an error's message (its type's name if empty): what a one-line error quotes of a library's
    own message. (The CLI keeps a copy, `workflows.cli.one_line`: importing this package would load torch.)"""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


class DamagedFileError(ValueError):
    """A file whose tensors do not match the digest it was saved with (or that lost its digest)."""


class UnverifiedFileWarning(UserWarning):
    """A file loaded without a digest to check it against: damage to it cannot be detected."""


class SaveError(OSError):
    """A file that could not be written; the previous version at that path is intact."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.errno = code


def damaged(
    path: str | os.PathLike, what: str, redo: str = "write it again", cls: type[DamagedFileError] = DamagedFileError
) -> DamagedFileError:
    """The one-line refusal of a file whose digest does not match (`cls`: a subclass the caller's users catch)."""
    return cls(f"{path} is damaged: its {what} do not match the digest it was saved with; restore a copy or {redo}")


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err` (itself, or the cause/context torch and numpy chain to their own errors)."""
    seen = 0
    while err is not None and seen < 16:
        if isinstance(err, OSError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _save_error(path: Path, err: OSError, existed: bool) -> SaveError:
    reason = os.strerror(err.errno) if err.errno else (str(err) or type(err).__name__)
    kept = f"the previous {path.name} is intact" if existed else "nothing was written"
    hint = "; free some space on that disk and run again" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return SaveError(f"cannot save {path}: {reason.splitlines()[0]}; {kept}{hint}", err.errno)


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); systems that cannot open a folder skip it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` through `write(file)`: into `NAME.partial`, fsync'd, then renamed over `path`.

    A failure of the disk (full, read-only, quota) becomes one `SaveError` line, and whatever `path` held before
    is left untouched; an interrupt removes the partial file and goes on.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    existed = path.exists()
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        cause = _os_error(err) if isinstance(err, Exception) and not isinstance(err, SaveError) else None
        if cause is None:  # an interrupt, or a failure that is not the disk's: as it came
            raise
        raise _save_error(path, cause, existed) from err
    _sync_folder(path.parent)
    return path
