"""Shared fixtures: the golden reference files (copied from the team's shared reference set) and photo crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN_DIR = Path(__file__).parent / "golden"
GOLDEN_MODELS = ("continuoussr_swinir_small.pt", "continuoussr_hat_small.pt")


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN_DIR


@pytest.fixture(scope="session", params=GOLDEN_MODELS)
def golden_model(request) -> dict:
    return torch.load(GOLDEN_DIR / request.param)


@pytest.fixture(scope="session")
def photo():
    """A function returning a float RGB crop of a bundled scikit-image photo."""
    from workflows.demo_assets import bundled_photo

    def crop(name: str = "astronaut", top: int = 0, left: int = 0, size: int = 64) -> np.ndarray:
        return bundled_photo(name)[top : top + size, left : left + size]

    return crop


@pytest.fixture
def one_thread():
    """Tiny matrices: one torch thread avoids OpenMP hand-offs that dominate on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster on 127.0.0.1 for the whole session (skipped where it cannot start)."""
    from tests import slurm_cluster as slurm

    reason = slurm.missing()
    if reason:
        pytest.skip(reason)
    cluster = slurm.start(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        slurm.stop(cluster)
