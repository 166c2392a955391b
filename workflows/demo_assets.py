"""Bundled demo material: small crops of scikit-image's photographs, and a first field built from one.

`python -m workflows.demo_assets --out DIR` writes DIR/photos/*.png and DIR/astronaut_lr.png plus
DIR/astronaut_field.npz; the Makefile's demo target then runs the `p2g` verbs on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from gaussian_field.image_io import write_image
from gaussian_field.initial import field_from_image

#: (name, row slice, column slice) of the colour photographs shipped inside scikit-image's wheel.
DEMO_CROPS = (
    ("astronaut", slice(0, 256), slice(128, 384)),
    ("coffee", slice(80, 336), slice(160, 416)),
    ("chelsea", slice(20, 276), slice(100, 356)),
    ("rocket", slice(100, 356), slice(200, 456)),
    ("hubble_deep_field", slice(300, 556), slice(300, 556)),
    ("immunohistochemistry", slice(128, 384), slice(128, 384)),
)


def bundled_photo(name: str) -> np.ndarray:
    """A scikit-image photograph as float RGB in [0, 1] (no network: these ship in the wheel)."""
    import skimage.data

    return getattr(skimage.data, name)()[..., :3].astype(np.float64) / 255.0


def write_demo_photos(out_dir: Path, crops=DEMO_CROPS) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_image(out_dir / f"{name}.png", bundled_photo(name)[rows, cols]) for name, rows, cols in crops]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    photos = write_demo_photos(args.out / "photos")
    lr = bundled_photo("astronaut")[40:200, 160:352]
    lr = lr.reshape(20, 8, 24, 8, 3).mean(axis=(1, 3))  # 8x8 box mean: a 20x24 LR image
    write_image(args.out / "astronaut_lr.png", lr)
    field = field_from_image(torch.from_numpy(lr).permute(2, 0, 1).float())
    field.save(args.out / "astronaut_field.npz", source="skimage.data.astronaut()[40:200, 160:352], 8x8 box mean")
    print(f"wrote {len(photos)} photos to {args.out / 'photos'} and {args.out / 'astronaut_field.npz'}")


if __name__ == "__main__":
    main()
