"""The encoder table is the one place per-encoder facts live: every consumer answers from it."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
from pathlib import Path

import click
import pytest

from sr_model.files.official_import import IMPORTABLE_ENCODERS, OfficialCheckpointError, encoder_overrides
from sr_model.inference.tiling import encoder_layers, has_global_context, tile_alignment
from sr_model.networks.encoder_specs import ENCODER_SPECS, EncoderSpec
from sr_model.networks.presets import ENCODERS, PRESETS, ModelConfig, preset
from sr_model.training.config import TrainConfig
from workflows import train_cmd

ENCODERS_MODULE = "sr_model.networks.encoders"  # what every encoder shares (_UpsamplingTail)


def test_presets_encoders_and_cli_choices_are_the_table():
    assert ENCODERS == tuple(ENCODER_SPECS) == tuple(PRESETS)
    choice = next(p for p in train_cmd.command.params if p.name == "preset")
    assert isinstance(choice.type, click.Choice) and tuple(choice.type.choices) == ENCODERS
    assert IMPORTABLE_ENCODERS == ("swinir", "hat")
    for name, spec in ENCODER_SPECS.items():
        config = PRESETS[name]
        assert config.preset == config.encoder == spec.name == name
        assert all(getattr(config, key) == value for key, value in spec.preset.items())


@pytest.mark.parametrize("name", list(ENCODER_SPECS))
def test_every_consumer_reads_the_entry(name):
    spec, config = ENCODER_SPECS[name], preset(name)
    assert spec.encoder_class().__name__ == spec.class_name
    # the class takes exactly its own settings, by name: it needs neither ModelConfig nor this table
    assert list(inspect.signature(spec.encoder_class()).parameters) == list(spec.settings)
    assert set(spec.settings) <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert tile_alignment(config) == (config.window_size if spec.window_aligned else 1)
    assert has_global_context(config) is spec.global_context
    assert encoder_layers(config)[0] == spec.layers(config)
    if spec.importable:
        assert spec.spandrel_architecture().id.lower() == spec.spandrel_arch.lower()
        assert {f for f, _ in spec.official_fields} <= {f.name for f in dataclasses.fields(ModelConfig)}


def test_encoder_classes_import_nothing_of_the_table_or_the_config():
    """No import circle: the table names the class modules, and they do not import it (or ModelConfig) back."""
    for module in {spec.module for spec in ENCODER_SPECS.values()}:
        tree = ast.parse(Path(importlib.import_module(module).__file__).read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {name for name in imported if name and name.startswith("sr_model")} - {ENCODERS_MODULE}, module


def test_a_changed_entry_changes_what_tiling_answers(monkeypatch):
    """Tiling has no encoder branch of its own: flipping the entry's facts flips its answers."""
    lite = ENCODER_SPECS["lite"]
    monkeypatch.setitem(ENCODER_SPECS, "lite", dataclasses.replace(lite, window_aligned=True, global_context=True))
    config = preset("lite")
    assert tile_alignment(config) == config.window_size and has_global_context(config)


def test_foreign_weights_are_refused_by_the_entry_architecture():
    with pytest.raises(OfficialCheckpointError, match="not a hat network"):
        encoder_overrides("hat", {"conv_first.weight": None})


def test_train_option_defaults_are_train_config_defaults():
    defaults = {p.name: p.default for p in train_cmd.command.params}
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    for name in (
        "preset",
        "steps",
        "batch",
        "patch",
        "lr_gamma",
        "freq_weight",
        "grad_clip",
        "val_every",
        "val_crop",
        "log_every",
        "seed",
        "amp",
    ):
        assert defaults[name] == fields[name], name
    assert defaults["learning_rate"] == fields["lr"]
    assert defaults["scales"] == f"{fields['scale_min']:g}-{fields['scale_max']:g}"
    assert tuple(float(s) for s in defaults["val_scales"].split(",")) == fields["val_scales"]


def test_spec_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ENCODER_SPECS["lite"].global_context = True  # type: ignore[misc]
    assert isinstance(ENCODER_SPECS["hat"], EncoderSpec)
