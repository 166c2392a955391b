"""The fitting losses by name: the one table that `FitConfig`, the step loop and `p2g fit-prior --loss` read.

Adding a loss is one entry in `FIT_LOSSES`. This module imports no torch (the CLI reads the names at `--help`
time): the losses only call tensor methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def l2_per_crop(rendered: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each crop: (B, 3, H, W) render and target to (B,)."""
    diff = rendered - crops
    return (diff * diff).flatten(1).mean(1)


def l1_per_crop(rendered: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each crop: (B, 3, H, W) render and target to (B,)."""
    diff = rendered - crops
    return diff.abs().flatten(1).mean(1)


#: Name -> loss of each crop, reduced over that crop's pixels only (never across crops: a crop's result must not
#: depend on its batch). The order is the CLI's (`--loss [l2|l1]`); l2 is the presets' default.
FIT_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": l2_per_crop,
    "l1": l1_per_crop,
}


def either(names: Iterable[str]) -> str:
    """The names sorted and quoted for an error message: "'l1' or 'l2'", "'a', 'b' or 'c'"."""
    quoted = [repr(name) for name in sorted(names)]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
