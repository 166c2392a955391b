"""`p2g train --config run.yaml` and RUN/config.yaml: a run started from a run folder's config.yaml is the same run."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from click.testing import CliRunner

from sr_model.training.state import TrainConfig
from tests.test_training import TINY_CLI, folders, train_cli_args  # noqa: F401  (fixture)
from workflows.cli import cli


def train_args(folders, out) -> list[str]:
    return train_cli_args(folders, out, 2, "--lr", "1e-3", "--lr-decay", "0.5", "--variant", "fixed-centres")


def saved_config(run) -> TrainConfig:
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    return TrainConfig.from_dict(checkpoint["train_config"])


def test_a_run_started_from_its_config_yaml_has_the_same_train_config(folders, tmp_path, monkeypatch):
    root = folders["root"]
    monkeypatch.chdir(root)  # relative paths in the first run: config.yaml must hold absolute ones
    args = train_args(folders, "first")
    args = [a.replace(str(root) + "/", "") for a in args]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    written = yaml.safe_load((root / "first" / "config.yaml").read_text())
    assert (
        written["steps"] == 2 and written["variant"] == "fixed-centres" and written["images"] == [str(folders["train"])]
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    second = CliRunner().invoke(
        cli, ["train", "--config", str(root / "first" / "config.yaml"), "--out", str(root / "second")]
    )
    assert second.exit_code == 0, second.output
    a, b = saved_config(root / "first"), saved_config(root / "second")
    assert a.out != b.out
    assert dataclasses.replace(a, out=b.out) == b
    assert a.model_overrides["positions"] == "fixed" and a.lr_milestones == (1,)
    resumed = CliRunner().invoke(cli, ["train", "--config", str(root / "first" / "config.yaml"), "--resume"])
    assert resumed.exit_code == 2 and "drop --config" in resumed.output
    # and the second run's config.yaml is the first's but for --out
    again = yaml.safe_load((root / "second" / "config.yaml").read_text())
    assert {**written, "out": again["out"]} == again


def test_flags_override_the_config_file(folders, monkeypatch):
    captured = []

    def fake_train(config, **runtime):
        captured.append((config, runtime))
        raise KeyboardInterrupt  # stop here: the test is about the settings

    monkeypatch.setattr("sr_model.training.loop.train", fake_train)
    config_file = folders["root"] / "run.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "prior": str(folders["prior"]),
                "images": [str(folders["train"])],
                "out": str(folders["root"] / "run"),
                "steps": 7,
                "batch": 2,
                "patch": 8,
                "lr": "2e-4",
                "val_images": [str(folders["val"])],
                "amp": False,
                "model-option": [item for item in TINY_CLI if item != "--model-option"],
                "device": "cpu",
                "workers": 1,
            }
        )
    )
    result = CliRunner().invoke(cli, ["train", "--config", str(config_file), "--steps", "9", "--batch", "3"])
    assert result.exit_code == 130, result.output
    config, runtime = captured[0]
    assert (config.steps, config.batch, config.patch, config.lr, config.amp) == (9, 3, 8, 2e-4, False)
    assert config.val_images == (str(folders["val"]),) and config.model_overrides["lite_channels"] == 8
    assert runtime["device"] == "cpu" and runtime["workers"] == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ("steps: 5\nstepz: 6\n", "unknown key 'stepz'"),
        ("resume: true\n", "unknown key 'resume'"),
        ("- steps\n", "expected KEY: VALUE"),
        ("steps: [1\n", "not valid YAML"),
        ("steps: many\n", "many"),
    ],
)
def test_a_bad_config_file_is_one_line(folders, content, message):
    config_file = folders["root"] / "bad.yaml"
    config_file.write_text(content)
    result = CliRunner().invoke(cli, ["train", "--config", str(config_file), "--out", str(folders["root"] / "x")])
    assert result.exit_code == 2, result.output
    assert message in result.output, result.output
    assert not (folders["root"] / "x").exists()


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_config(folders, monkeypatch):
    def failing_train(config, **runtime):
        assert (folders["root"] / "failed" / "config.yaml").is_file()  # written before the first step
        raise ValueError("no images to train on")

    monkeypatch.setattr("sr_model.training.loop.train", failing_train)
    result = CliRunner().invoke(cli, train_args(folders, folders["root"] / "failed"))
    assert result.exit_code == 2 and result.output.startswith("error: no images to train on")
    assert not (folders["root"] / "failed").exists()
