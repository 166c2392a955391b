"""`make data`: a local corpus of 2-6K photographs from Debian's wallpaper packages, split into train and val.

    python -m workflows.make_corpus --out data

Downloads the packages with `apt-get download` (no root needed; the only step that uses the network, never
run by tests), unpacks them with `dpkg -x`, and copies the photographs, chosen by eye from each package (the
packages also hold drawings, gradients and logos, which would teach a super-resolution model the wrong
statistics), to OUT/wallpapers/{train,val}/PACKAGE__NAME.EXT with the packages' copyright files beside them
and a manifest.tsv. The split is fixed by a hash of each file name, so reruns and new machines agree.
Rerunning skips what is already there; the .deb files stay in OUT/debs so a rerun needs no network.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PhotoSource:
    """Which files of a package are photographs: globs relative to the package root, minus exclusions."""

    package: str
    include: tuple[str, ...]
    exclude: tuple[str, ...] = ()


PLASMA_PHOTOS = (
    "BytheWater",
    "ColdRipple",
    "ColorfulCups",
    "DarkestHour",
    "EveningGlow",
    "FallenLeaf",
    "Grey",
    "OneStandsOut",
    "Path",
    "Volna",
    "summer_1am",
)

PHOTO_SOURCES = (
    PhotoSource("lomiri-wallpapers-16.04", ("usr/share/backgrounds/*.jpg",), ("*/umang_by_Abhishek_Mudgal.jpg",)),
    PhotoSource("lomiri-wallpapers-20.04", ("usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg",)),
    PhotoSource("mate-backgrounds", ("usr/share/backgrounds/mate/nature/*.jpg",)),
    PhotoSource(
        "plasma-workspace-wallpapers", tuple(f"usr/share/wallpapers/{name}/contents/images/*" for name in PLASMA_PHOTOS)
    ),
)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class CorpusError(RuntimeError):
    """The corpus could not be assembled; the message says what to do."""


def download(package: str, debs: Path) -> Path:
    """The package's .deb in `debs`, fetched with `apt-get download` unless already there."""
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise CorpusError("apt-get not found: `make data` needs a Debian or Ubuntu system")
    debs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if result.returncode != 0 or not found:
        detail = (result.stderr.strip().splitlines() or ["no .deb appeared"])[-1]
        raise CorpusError(f"apt-get download {package} failed ({detail}); run `apt-get update` and retry")
    return found[-1]


def unpack(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg", "-x", str(deb), str(into)], check=True)
    return into


def _pixel_count(path: Path) -> int:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None  # wallpapers are large on purpose
    with Image.open(path) as img:
        return img.size[0] * img.size[1]


def select_photos(root: Path, source: PhotoSource) -> list[Path]:
    """The photographs of one unpacked package: matching files, and of several sizes of one picture (a folder
    of WxH renditions, as Plasma ships) only the largest."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    chosen = [
        p
        for p in files
        if any(fnmatch.fnmatch(p.relative_to(root).as_posix(), g) for g in source.include)
        and not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), g) for g in source.exclude)
    ]
    by_folder: dict[Path, list[Path]] = {}
    for path in chosen:
        by_folder.setdefault(path.parent, []).append(path)
    photos = []
    for folder, paths in by_folder.items():
        if folder.name == "images" and folder.parent.name == "contents":  # Plasma: one picture, many sizes
            paths = [max(paths, key=_pixel_count)]
        photos += paths
    return sorted(photos)


def split_of(name: str, val_fraction: float) -> str:
    """'val' for a stable pseudo-random `val_fraction` of names, else 'train'."""
    digest = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return "val" if digest / 0xFFFFFFFF < val_fraction else "train"


def collect(root: Path, source: PhotoSource, out: Path, val_fraction: float) -> list[dict]:
    """Copy one unpacked package's photographs (and its copyright file) into out/{train,val}."""
    rows = []
    for path in select_photos(root, source):
        stem = path.parent.parent.parent.name if path.parent.name == "images" else path.stem
        name = f"{source.package}__{stem}{path.suffix.lower()}"
        split = split_of(name, val_fraction)
        target = out / split / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(path, target)
        rows.append(
            {"file": f"{split}/{name}", "package": source.package, "source": "/" + path.relative_to(root).as_posix()}
        )
    copyright_file = root / "usr" / "share" / "doc" / source.package / "copyright"
    if copyright_file.is_file():
        (out / "licenses").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(copyright_file, out / "licenses" / f"{source.package}.copyright")
    return rows


def build_corpus(out: Path, sources=PHOTO_SOURCES, val_fraction: float = 0.15) -> list[dict]:
    """Download, unpack and collect every source; returns the manifest rows (also written to manifest.tsv)."""
    wallpapers, debs = out / "wallpapers", out / "debs"
    out.mkdir(parents=True, exist_ok=True)
    rows, failures = [], []
    for source in sources:
        try:
            deb = download(source.package, debs)
        except CorpusError as err:
            failures.append(str(err))
            print(f"warning: {err}", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            found = collect(unpack(deb, Path(tmp)), source, wallpapers, val_fraction)
        for row in found:
            row["deb"] = deb.name
        print(f"{source.package}: {len(found)} photographs from {deb.name}")
        rows += found
    if not rows:
        raise CorpusError("no photographs collected: " + "; ".join(failures))
    with open(wallpapers / "manifest.tsv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "package", "deb", "source"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"), help="Output folder (default: data).")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="Share held out for validation.")
    args = parser.parse_args(argv)
    try:
        rows = build_corpus(args.out, val_fraction=args.val_fraction)
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = {split: sum(r["file"].startswith(split + "/") for r in rows) for split in ("train", "val")}
    print(f"{len(rows)} photographs in {args.out / 'wallpapers'}: {counts['train']} train, {counts['val']} val")
    return 0


if __name__ == "__main__":
    sys.exit(main())
