"""How much memory a job may plan to use: `$P2G_MEMORY_BUDGET`, or a share of what is free now.

One definition for every layer that sizes work before allocating it: the encode's tiles
(`sr_model.inference.encode`), and outputs that an encoder must hold whole (`gaussian_field.band_writer`).
"""

from __future__ import annotations

import os

import torch

#: Fraction of the free memory a job may plan to use (the rest is for the process and its neighbours).
BUDGET_FRACTION = 0.6
#: The environment variable that sets the budget (bytes, or with a unit: 8G, 512M, 1.5GiB).
BUDGET_VARIABLE = "P2G_MEMORY_BUDGET"


def parse_bytes(text: str) -> int:
    """'8G', '512M', '1.5GiB', '1000000' -> bytes."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    factor = units.get(value[-1:], 1)
    try:
        number = float(value[:-1] if value[-1:] in units else value)
    except ValueError:
        raise ValueError(f"memory size {text!r} is not a number of bytes (e.g. 8G, 512M)") from None
    if not number > 0 or number * factor >= 2**63:
        raise ValueError(f"memory size {text!r} must be positive and finite")
    return int(number * factor)


def budget_is_set() -> bool:
    return bool(os.environ.get(BUDGET_VARIABLE))


def memory_budget(device: str | torch.device = "cpu") -> int:
    """Bytes a job may use: $P2G_MEMORY_BUDGET if set, else a fraction of the device's free memory."""
    if budget_is_set():
        return parse_bytes(os.environ[BUDGET_VARIABLE])
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        import psutil

        free = psutil.virtual_memory().available
    return int(free * BUDGET_FRACTION)


def memory_size(count: int) -> str:
    """'3.42 GiB', '96.3 MiB': sizes in messages, never '0.00 GiB'."""
    return f"{count / 2**30:.2f} GiB" if count >= 2**30 else f"{count / 2**20:.1f} MiB"
