"""`p2g migrate-store OLD NEW`: copy a schema-1 prior store into the current sharded layout."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("migrate-store")
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
def command(old: Path, new: Path) -> None:
    """Copy the schema-1 prior store OLD into a new store NEW (sharded, with dimension names); OLD is kept."""
    from prior_store.migrate import migrate_store

    store = migrate_store(old, new)
    counts = store.status_counts()
    click.echo(
        f"migrated {old} -> {new}: {store.num_crops} crops ({counts['done']} done, {counts['failed']} "
        f"failed, {counts['pending']} pending) in {store.num_shards} shards of {store.shard_size} crops"
    )
