"""A verb's flags as a YAML file: `p2g train --config run.yaml` reads one, every run folder gets one (config.yaml).

The keys are the long flag names without dashes in front (`val-images`, `lr`, `model-option`; `val_images` works
too), values as YAML; a repeatable flag takes a list, an on/off flag true/false. The file becomes click's
`default_map`, so anything given on the command line overrides it, and click checks and converts its values as
it does the flags'.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

CONFIG_NAME = "config.yaml"


def flag_names(command: click.Command) -> dict[str, str]:
    """Config key -> click parameter name, for every option of `command` (its main long flag)."""
    names = {}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        longs = [o for o in param.opts if o.startswith("--")]
        if longs:
            names[longs[0][2:]] = param.name
    return names


def read_flag_config(path: str | os.PathLike, command: click.Command, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A YAML file of flags -> click default_map (parameter name -> value); ValueError naming a bad key or file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected KEY: VALUE lines (the flags of p2g {command.name})")
    names = flag_names(command)
    default_map = {}
    for key, value in data.items():
        flag = str(key).replace("_", "-")
        if flag not in names or flag in skip:
            known = ", ".join(sorted(k for k in names if k not in skip))
            raise ValueError(
                f"--config {path}: unknown key {key!r}; the keys are the flags of p2g {command.name}: {known}"
            )
        if isinstance(value, (list, tuple)):
            value = [_flag_text(v) for v in value]
        elif value is not None:
            value = _flag_text(value)
        default_map[names[flag]] = value
    return default_map


def _flag_text(value: Any) -> Any:
    """Values as click gets them from a command line (YAML gives 2e-4 as text, 4 as a number: both work)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        raise ValueError(f"{value!r}: a flag's value is a number, a word or a list of them")
    return value if isinstance(value, str) else str(value)


def write_flag_config(
    path: str | os.PathLike, command: click.Command, params: dict[str, Any], skip: tuple[str, ...] = ()
) -> Path:
    """The resolved flags of a run (click's `ctx.params`) as YAML that `read_flag_config` reads back; written
    atomically."""
    import yaml

    names = flag_names(command)
    data = {}
    for flag, name in names.items():
        if flag in skip or name not in params:
            continue
        value = params[name]
        if isinstance(value, tuple):
            value = [_plain(v) for v in value]
        data[flag] = _plain(value)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(
        f"# p2g {command.name} settings (keys: its flags); repeat with p2g {command.name} --config THIS_FILE "
        "--out NEW_FOLDER\n" + yaml.safe_dump(data, sort_keys=False)
    )
    os.replace(tmp, path)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return str(value)
    return value
