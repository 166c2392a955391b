"""Weights shipped inside the package (safetensors exports), so that a model works without training or network.

`lite.safetensors` is the default model of `p2g upscale`, `p2g eval` and `sr_model.api.load_model()`; it is
written by `p2g export` and read like any other export (`sr_model.files.model_files`), its digest checked on load.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent
#: Bundled models by name -> file in this folder.
BUNDLED = {"lite": "lite.safetensors"}
DEFAULT_BUNDLED = "lite"


class BundledWeightsMissingError(FileNotFoundError):
    """The bundled weights are not in this installation."""


def bundled_path(name: str = DEFAULT_BUNDLED) -> Path:
    """The bundled weights file `name`, checked to exist."""
    if name not in BUNDLED:
        raise ValueError(f"no bundled model {name!r}; bundled: {', '.join(sorted(BUNDLED))}")
    path = WEIGHTS_DIR / BUNDLED[name]
    if not path.is_file():
        raise BundledWeightsMissingError(
            f"the bundled {name} weights are missing ({describe(path)} not found); reinstall pixel2gauss or name a "
            f"model file with --checkpoint"
        )
    return path


def describe(path: Path) -> str:
    """`path` relative to the package root when it is inside it (sr_model/weights/lite.safetensors)."""
    try:
        return str(Path(path).resolve().relative_to(WEIGHTS_DIR.parent.parent))
    except ValueError:
        return str(path)
