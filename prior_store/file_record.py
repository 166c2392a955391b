"""What each source image looked like when the store last checked it: size and mtime per path.

Kept as attributes of the store's ``integrity`` group (written by the client only; `prior_store.integrity`
keeps its own flag there too), so a resume can tell
untouched files (same size and mtime: no read needed) from files whose bytes must be hashed again.
"""

from __future__ import annotations

from prior_store.integrity import INTEGRITY_GROUP as RECORD_GROUP
from prior_store.store import PriorStore, json_object


def read_file_record(store: PriorStore) -> dict[str, list[int]]:
    """{source: [size, mtime_ns]} as last recorded (empty for stores that never recorded one)."""
    if RECORD_GROUP not in store.group:
        return {}
    files = json_object(store.group[RECORD_GROUP].attrs.get("files", {}), "the file record")
    return {str(k): [int(v[0]), int(v[1])] for k, v in files.items()}


def write_file_record(store: PriorStore, record: dict[str, list[int]]) -> None:
    """Store the record; an unchanged record writes nothing, so a rerun of a finished job touches no file."""
    files = {k: [int(v[0]), int(v[1])] for k, v in sorted(record.items())}
    if RECORD_GROUP in store.group and read_file_record(store) == files:
        return
    group = store.group.require_group(RECORD_GROUP)
    group.attrs.update({"files": files})


__all__ = ["RECORD_GROUP", "read_file_record", "write_file_record"]
