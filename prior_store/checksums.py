"""Codecs of every store array: zstd, then a CRC32C of the compressed bytes.

Without the checksum, bytes overwritten inside a zstd frame can decode into plausible garbage; with it any
changed byte makes the read fail, so `prior_store.integrity` finds the damaged chunk instead of statistics
silently absorbing it. Stores created before the checksum still verify by decoding and by the finite check.
"""

from __future__ import annotations


def chunk_compressors() -> tuple:
    """The `compressors=` of every array a new store creates (inner chunks too when sharded)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return (ZstdCodec(level=0), Crc32cCodec())
