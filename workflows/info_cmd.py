"""`p2g info STORE [--json]`: what a prior store holds (config, counts by status, PSNR, stage-2 contents)."""

from __future__ import annotations

import json
from pathlib import Path

import click


def info_lines(info: dict) -> list[str]:
    """Human-readable lines of `describe_store`'s dict."""
    from prior_store.dictionary import dictionary_line

    status, chunks, psnr = info["status"], info["chunks"], info["psnr"]
    fitting = ", ".join(f"{k}={v}" for k, v in info["fitting"].items())
    lines = [
        f"store       {info['store']} (schema {info['schema_version']}, pixel2gauss {info['package_version']}, "
        f"created {info['created']})",
        f"crops       {info['crops']} of {info['crop_size']}x{info['crop_size']} px, reference scale "
        f"x{info['reference_scale']}, lattice {info['lattice'][0]}x{info['lattice'][1]} k={info['k']}",
        f"status      {status['done']} done, {status['failed']} failed, {status['pending']} pending",
        f"chunks      {chunks['total']} of {info['chunk_size']} crops: {chunks['finished']} finished, "
        f"{chunks['with_pending']} with pending crops, {chunks['with_failed']} with failed crops",
        f"shards      {info['shards']} of {info['shard_size']} crops (one file per array per shard)",
        "psnr        "
        + (
            f"median {psnr['median']:.2f} dB, 5th percentile {psnr['p5']:.2f} dB, "
            f"min {psnr['min']:.2f}, max {psnr['max']:.2f} ({psnr['count']} crops)"
            if psnr["count"]
            else "no fitted crops yet"
        ),
        f"fitting     {fitting}",
        "statistics  " + (", ".join(info["statistics"]) or "not computed yet"),
        "dictionary  " + dictionary_line(info.get("dictionary_summary")),
    ]
    for reason, count in sorted(info["failure_reasons"].items(), key=lambda item: -item[1]):
        lines.append(f"failed      {count} x {reason}")
    lines.append("integrity   " + integrity_line(info.get("last_verified"), info["store"]))
    return lines


def integrity_line(last: dict | None, store: str) -> str:
    """What the last full read of the store found, and how to check again: plain `info` reads no chunk, so it
    cannot see damage itself."""
    if not last:
        return f"never verified; `p2g info --verify {store}` reads every chunk and reports damage"
    when = f"{last.get('at', '?')} by {last.get('by', '?')}"
    damaged = int(last.get("damaged_keys", 0))
    if not damaged:
        found = "no damage"
    elif last.get("mended"):
        found = f"{damaged} damaged storage key(s), mended"
    else:
        found = f"{damaged} damaged storage key(s); rerun the p2g fit-prior command that made the store to mend them"
    return f"{found} when last verified ({when}); `p2g info --verify {store}` checks again"


@click.command("info")
@click.argument("store", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option(
    "--verify",
    is_flag=True,
    help="Read every chunk (in parallel) and report missing or undecodable ones by crop range; exit 1 if any.",
)
def command(store: Path, as_json: bool, verify: bool) -> None:
    """Describe the prior store STORE."""
    from prior_store import open_store
    from prior_store.integrity import verify_store

    if verify:
        report = verify_store(open_store(store))
        remember_verification(store, report)
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        else:
            for line in report.lines():
                click.echo(line)
        if not report.ok:
            raise SystemExit(1)
        return
    info = describe_or_refuse(store)
    if as_json:
        click.echo(json.dumps(info, indent=2, allow_nan=False, default=str))
    else:
        for line in info_lines(info):
            click.echo(line)


def remember_verification(store: Path, report) -> None:
    """Record the result for plain `info`, unless another p2g holds the store or it cannot be written (then the
    verification still stands for this run, it is only not remembered)."""
    from prior_store import open_store
    from prior_store.integrity import record_verification
    from prior_store.lock import store_lock
    from prior_store.store import StoreError

    try:
        with store_lock(store, "info --verify"):
            record_verification(open_store(store, mode="r+"), report, "p2g info --verify")
    except (OSError, StoreError):
        pass


def describe_or_refuse(store: Path) -> dict:
    """`describe_store`, or, when the store's bytes cannot be read, one line naming the damaged keys."""
    from prior_store import describe_store, open_store
    from prior_store.integrity import StoreDamagedError, verify_store

    opened = open_store(store)  # missing, foreign or newer stores are refused here
    try:
        return describe_store(store)
    except Exception:  # codec errors of damaged chunks (zstd, checksum) have no common type
        report = verify_store(opened)
        if report.ok:
            raise
        raise StoreDamagedError(report.one_line()) from None
