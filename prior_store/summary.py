"""A JSON-ready description of a store: its config, counts by status, PSNR summary, stage-2 contents.

What `p2g info` prints; also handy in notebooks to check a store before using it.
"""

from __future__ import annotations

from pathlib import Path

from prior_store.dictionary import dictionary_summary
from prior_store.integrity import last_verification
from prior_store.schema import STATS_GROUP
from prior_store.store import open_store


def describe_store(path: str | Path) -> dict:
    """Config, crop counts by status, chunk counts, PSNR summary, failure reasons, stats/ members and the last
    full verification (`prior_store.integrity.record_verification`; None if never)."""
    store = open_store(path)
    attrs = store.attrs
    status = store.status()  # read once: a million crops are a thousand files
    chunks = store.chunk_status_counts(status)
    stats = store.stats_members()
    return {
        "store": str(path),
        "schema_version": attrs["schema_version"],
        "package_version": attrs.get("package_version", "unknown"),
        "created": attrs.get("created", ""),
        "crop_size": store.config.crop_size,
        "reference_scale": store.config.reference_scale,
        "k": store.config.k,
        "lattice": list(store.config.lattice),
        "chunk_size": store.chunk_size,
        "shard_size": store.shard_size,
        "shards": store.num_shards,
        "fitting": store.config.fitting,
        "crops": store.num_crops,
        "status": store.status_counts(status),
        "chunks": {
            "total": store.num_chunks,
            "finished": int(((chunks[:, 0] == 0) & (chunks[:, 2] == 0)).sum()),
            "with_pending": int((chunks[:, 0] > 0).sum()),
            "with_failed": int((chunks[:, 2] > 0).sum()),
        },
        "psnr": store.psnr_summary(status),
        "failure_reasons": store.failure_reasons(status),
        "statistics": [m for m in stats if not m.startswith(f"{STATS_GROUP}/dictionary")],
        "dictionary": [m for m in stats if m.startswith(f"{STATS_GROUP}/dictionary")],
        "dictionary_summary": dictionary_summary(path),
        "last_verified": last_verification(store),
    }
