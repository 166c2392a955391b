"""All or nothing for stage 2: the store's ``stats/`` group and the files of ``--out`` change together or not at all.

The previous ``stats/`` folder is copied aside before the new one is written and put back if anything fails
(local stores; on object storage the old group is simply replaced). Files are written into a hidden staging
folder inside ``--out`` and renamed into place only after everything succeeded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from prior_store.schema import STATS_GROUP


@contextlib.contextmanager
def stats_transaction(store: str | os.PathLike, out: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder for the files; on success move them into `out`, on failure restore the store."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / f".prior-stats-partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    local = "://" not in str(store)
    stats_dir = Path(store) / STATS_GROUP
    backup = Path(store) / f".{STATS_GROUP}-previous-{os.getpid()}"
    moved = False
    try:
        if local and stats_dir.exists():
            shutil.copytree(stats_dir, backup)  # a copy: --reuse-stats keeps the statistics it reads
            moved = True
        yield staging
        for item in sorted(staging.iterdir()):
            os.replace(item, out / item.name)
    except BaseException:
        if local:
            shutil.rmtree(stats_dir, ignore_errors=True)
            if moved:
                os.rename(backup, stats_dir)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if moved and backup.exists():
            shutil.rmtree(backup, ignore_errors=True)


__all__ = ["stats_transaction"]
