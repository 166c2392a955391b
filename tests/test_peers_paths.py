"""benchmarks/compare_peers.py records paths in its results.json without naming the machine's folders, and reads
them back."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_peers.py"


@pytest.fixture()
def peers(monkeypatch):
    """The script as a module (its name clashes with the benchmarks/peers package); its sys.path edits undone."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("peers_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paths_inside_the_out_folder_are_recorded_as_out(peers, tmp_path):
    out = tmp_path / "run"
    checkpoint = out / "runs" / "liif-1-4" / "liif.pt"
    recorded = peers.recorded_path(checkpoint, out)
    assert recorded == "OUT/runs/liif-1-4/liif.pt"
    assert peers.recorded_path(out, out) == "OUT"
    elsewhere = tmp_path / "other_out"
    assert peers.resolved_path(recorded, elsewhere) == elsewhere / "runs" / "liif-1-4" / "liif.pt"


def test_other_paths_are_recorded_relative_to_the_repository(peers):
    results = peers.REPO / "benchmarks" / "peers" / "results"
    recorded = peers.recorded_path(results, peers.REPO / "runs" / "peers")
    assert recorded == "benchmarks/peers/results"
    assert peers.resolved_path(recorded, Path("anywhere")) == results


def test_settings_name_no_absolute_path(peers, tmp_path):
    args = argparse.Namespace(
        out=tmp_path / "run",
        results=peers.REPO / "benchmarks" / "peers" / "results",
        merge=[tmp_path / "run" / "ablations"],
        steps=150,
        probe_method=None,
    )
    settings = peers.recorded_settings(args)
    assert settings == {
        "out": "OUT",
        "results": "benchmarks/peers/results",
        "merge": ["OUT/ablations"],
        "steps": 150,
    }


def test_absolute_paths_of_older_results_still_load(peers, tmp_path):
    legacy = tmp_path / "run" / "runs" / "liif-1-4" / "liif.pt"
    assert peers.resolved_path(str(legacy), tmp_path / "elsewhere") == legacy
