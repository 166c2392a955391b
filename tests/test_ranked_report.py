"""benchmarks/peers/ranked.py's report: gains over bicubic, per-photo win counts and head-to-head differences."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from benchmarks.peers.ranked import SCALES, SHIPPED, report  # noqa: E402


def scores(psnr: list[float]) -> dict:
    return {f"x{s:g}": {"psnr": list(psnr), "ssim": [0.5] * len(psnr)} for s in SCALES}


def test_report_counts_wins_per_photo_and_takes_differences_of_means():
    results = {
        "settings": {"steps": 10, "batch": 2, "patch": 8, "scales": "1-4", "lr": 0.002, "seed": 0},
        "hardware": "CPU test",
        "photos": {"set": ["a", "b", "c"]},
        "bicubic": {"set": scores([30.0, 30.0, 30.0])},
        "models": {
            "ContinuousSR-lite": {"steps": 10, "train_seconds": 60, "scores": {"set": scores([31.0, 29.0, 30.5])},
                                  "val_curve": [{"step": 5, "x4": 28.0, "x8": 25.0}]},
            "LIIF": {"steps": 10, "train_seconds": 60, "scores": {"set": scores([30.0, 30.0, 30.0])}},
        },
        SHIPPED: {"set": scores([30.0, 31.0, 29.0])},
    }  # fmt: skip
    text = report(results)
    assert "| ContinuousSR-lite | +0.17 (2/3) |" in text  # mean 30.17 vs 30; 31 and 30.5 beat bicubic, 29 does not
    assert "| LIIF | +0.00 (0/3) |" in text
    assert "| ContinuousSR-lite - LIIF | +0.17 |" in text and f"| {2 * len(SCALES)}/{3 * len(SCALES)} |" in text
    assert "- ContinuousSR-lite (1 min): 5: 28.00 / 25.00" in text
    assert "| bundled lite weights (model card) | +0.00 (1/3) |" in text
    assert "| ContinuousSR-lite - bundled lite weights | +0.17 |" in text
