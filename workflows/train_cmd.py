"""`p2g train --prior STORE|DICT.npy --images DIR... --out RUN`: train a ContinuousSR model; `--resume` continues it.

`--config run.yaml` gives the same flags as a YAML file (flags on the command line override it); every run folder
gets RUN/config.yaml, the run's flags with absolute paths, which `--config` reads back to repeat the run.

Multi-GPU / multi-node: launch the same command with `torchrun --nproc_per_node N -m workflows.cli train ...`.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from sr_model.networks.presets import PRESETS
from sr_model.training.config import TrainConfig
from workflows.options import NON_NEGATIVE_FLOAT, POSITIVE_FLOAT, device_option
from workflows.run_config import CONFIG_NAME, read_flag_config, write_flag_config

if TYPE_CHECKING:
    from sr_model.training.loop import TrainResult

VARIANTS = {"full": {}, "fixed-centres": {"positions": "fixed"}, "no-dictionary": {"covariance": "free"}}
#: Flags that are not settings of a run: never read from nor written to a config file.
NOT_IN_CONFIG = ("config", "resume", "print-job-script", "cluster-config")
#: Option defaults are TrainConfig's field defaults (sr_model.training.config imports no heavy package).
DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}


def _setting_option(decl: str, *more: str, **kwargs):
    """An option whose default, shown in --help, is the TrainConfig field its flag names (--lr-gamma: lr_gamma)."""
    field = decl.split("/")[0].lstrip("-").replace("-", "_")
    return click.option(decl, *more, default=DEFAULTS[field], show_default=True, **kwargs)


def _listed(values: tuple[float, ...]) -> str:
    return ",".join(f"{v:g}" for v in values)


def parse_scale_range(text: str) -> tuple[float, float]:
    """'4-8' or '4,8' -> (4.0, 8.0); '4' -> (4.0, 4.0)."""
    parts = [p for p in text.replace(",", "-").split("-") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a scale range: use MIN-MAX, e.g. 4-8") from None
    if len(values) not in (1, 2):
        raise click.BadParameter(f"{text!r} is not a scale range: use MIN-MAX, e.g. 4-8")
    return values[0], values[-1]


def parse_model_options(items) -> dict:
    """('lite_channels=16', 'cov_hidden=[32]') -> {'lite_channels': 16, 'cov_hidden': [32]} (values as YAML)."""
    import yaml

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r}: use KEY=VALUE, e.g. lite_channels=16")
        options[key.strip()] = yaml.safe_load(value)
    return options


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _read_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Eager: the file's flags become the defaults of the others, so that command-line flags override them."""
    if value is not None:
        ctx.default_map = {**(ctx.default_map or {}), **read_flag_config(value, ctx.command, NOT_IN_CONFIG)}


def _absolute(value):
    return str(Path(value).absolute())


def run_flags(params: dict, images: tuple) -> dict:
    """The run's resolved flags with absolute paths, for RUN/config.yaml (readable from any folder)."""
    flags = dict(params)
    flags["images"] = tuple(map(_absolute, images))
    flags["val_images"] = tuple(map(_absolute, params["val_images"]))
    flags["out_dir"] = _absolute(params["out_dir"])
    if params["prior"] is not None and params["prior"] != "official":
        flags["prior"] = _absolute(params["prior"])
    return flags


def refuse_stale_dictionary(prior: str | None) -> None:
    """A store's dictionary derived from statistics that no longer describe its crops is refused, as
    `p2g prior-stats --reuse-stats` refuses those statistics."""
    if not prior or not Path(prior).is_dir():
        return
    from dgp_fitting.prior_stats import is_current, load_statistics
    from prior_store.statistics import has_statistics

    if not has_statistics(prior):
        return
    stats = load_statistics(prior)
    why = is_current(stats, prior, stats.summary["config"]["min_psnr"])
    if why is not None:
        raise ValueError(
            f"the dictionary in {prior} is out of date (its statistics: {why}); rerun "
            f"`p2g prior-stats --store {prior} --out DIR` to rebuild it"
        )


def describe(result: TrainResult, validating: bool | None = None) -> list[str]:
    """The lines printed when a run ends (`validating`: whether validation images were given; None if unknown)."""
    state = f"stopped at step {result.step} (resume with --resume)" if result.stopped_early else f"{result.step} steps"
    lines = [f"trained: {state}, {result.seconds:.0f} s of training in total"]
    if result.best_val:
        val = result.best_val["val"]
        scores = ", ".join(
            f"{k} {v['psnr']:.2f} dB (bicubic {v['bicubic']:.2f}, {v['gain']:+.2f})"
            for k, v in val.items()
            if k.startswith("x")
        )
        lines.append(f"best validation (step {result.best_val['step']}, Y-PSNR, shave = scale): {scores}")
        lines.append(f"wrote {result.best}")
    elif validating is False:
        lines.append("no validation (give --val-images to score against bicubic and keep best.pt)")
    else:
        lines.append(f"no validation yet (stopped at step {result.step}, before the first one)")
    lines.append(f"wrote {result.last} and {result.last.parent / 'metrics.jsonl'}")
    return lines


def _write_run_config(ctx: click.Context, out_dir: Path, images: tuple) -> tuple[Path, bool]:
    """RUN/config.yaml before the first step (so that an interrupted run has it too); (its path, folder created)."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    return write_flag_config(out_dir / CONFIG_NAME, ctx.command, run_flags(ctx.params, images), NOT_IN_CONFIG), created


def _remove_unused(written: tuple[Path, bool], out_dir: Path) -> Path | None:
    """A run that failed before its first checkpoint leaves nothing behind: config.yaml goes, and the folder if
    it was made for it and is empty. Returns what was removed (the folder or config.yaml), None if nothing."""
    path, created = written
    if (out_dir / "last.pt").exists():
        return None
    path.unlink(missing_ok=True)
    if created and not any(out_dir.iterdir()):
        out_dir.rmdir()
        return out_dir
    return path


def interrupted_note(out_dir: Path, removed: Path | None = None) -> str:
    """What an interrupted run kept, as the CLI's `interrupted:` / `terminated:` line says it (`removed`: what
    the interrupted start removed again)."""
    last = out_dir / "last.pt"
    if last.exists():
        return f"{last} holds the latest checkpoint; rerun with --resume to continue"
    note = "no checkpoint was saved (stopped before the first one)"
    return f"{note} and {removed} was removed; start the run again" if removed else note


def stop_exception(result: TrainResult) -> KeyboardInterrupt:
    """The interrupt a run stopped early by a signal ends with (exit 130 for Ctrl-C, 143 for SIGTERM)."""
    from workflows.cli import Terminated

    note = f"{result.last} holds step {result.step}; rerun with --resume to continue"
    return Terminated(note) if result.stop_signal == signal.SIGTERM else KeyboardInterrupt(note)


@click.command("train")
@click.argument("more_images", nargs=-1, type=click.Path(path_type=Path), metavar="[DIR...]")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=_read_config,
    help="YAML file of these flags (keys as the flags: steps, val-images, model-option ...; lists for "
    "repeatable ones); flags given here override it. RUN/config.yaml repeats a run.",
)
@click.option("--prior", help="Covariance dictionary: a prior store (p2g prior-stats), a .npy file, or 'official'.")
@click.option(
    "--images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="HR training images: folder (recursive) or file; repeatable, or list several after it.",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder: best.pt, last.pt, metrics.jsonl.",
)
@_setting_option("--preset", type=click.Choice(list(PRESETS)))
@click.option(
    "--variant",
    default="full",
    show_default=True,
    type=click.Choice(list(VARIANTS)),
    help="The paper's ablations: Gaussians fixed on the lattice, or a free covariance without dictionary.",
)
@click.option(
    "--model-option",
    "model_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a model config field, e.g. lite_channels=16; repeatable.",
)
@_setting_option("--steps", type=int, help="Total optimisation steps.")
@_setting_option("--batch", type=int, help="Patches per step (per process under torchrun).")
@_setting_option("--patch", type=int, help="LR patch side in pixels.")
@click.option(
    "--scales",
    default=f"{DEFAULTS['scale_min']:g}-{DEFAULTS['scale_max']:g}",
    show_default=True,
    help="Training scale range MIN-MAX (one scale per batch).",
)
@_setting_option("--lr", "learning_rate", type=POSITIVE_FLOAT, help="Adam learning rate.")
@click.option(
    "--lr-decay",
    default="0.5,0.8",
    show_default=True,
    help="Fractions of --steps where the rate is multiplied by --lr-gamma ('' for none).",
)
@_setting_option("--lr-gamma", type=POSITIVE_FLOAT)
@_setting_option(
    "--freq-weight",
    type=NON_NEGATIVE_FLOAT,
    help="Weight of the frequency (FFT L1) loss; > 0 gives the paper's '+' variant.",
)
@_setting_option("--grad-clip", type=NON_NEGATIVE_FLOAT, help="Max gradient norm (0: no clipping).")
@click.option(
    "--val-images",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Held-out HR images for validation (centre crops of --val-crop px); repeatable.",
)
@click.option("--val-scales", default=_listed(DEFAULTS["val_scales"]), show_default=True)
@_setting_option("--val-every", type=int, help="Validate and checkpoint every N steps.")
@_setting_option("--val-crop", type=int)
@_setting_option("--log-every", type=int)
@_setting_option("--seed", type=int)
@_setting_option("--amp/--no-amp", help="Mixed precision on CUDA (ignored on CPU).")
@device_option()
@click.option("--workers", type=int, help="DataLoader workers (default: 0 on CPU, up to 4 on CUDA).")
@click.option(
    "--time-limit", type=POSITIVE_FLOAT, help="Stop after this many minutes (last.pt saved; --resume continues)."
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt, bit for bit.")
@click.option(
    "--print-job-script",
    is_flag=True,
    help="Print a SLURM script that runs this training under srun (resources from --cluster-config) and exit.",
)
@click.option(
    "--cluster-config",
    type=click.Path(path_type=Path),
    help="YAML of SLURM resources for --print-job-script (as fit-prior's: jobs = nodes, gpus, cores, memory ...).",
)
@click.pass_context
def command(
    ctx: click.Context,
    more_images,
    images,
    out_dir: Path,
    val_images,
    device,
    workers,
    time_limit,
    resume,
    print_job_script,
    cluster_config,
    **_settings,  # the run's other settings, read from ctx.params by _config_fields
) -> None:
    """Train ContinuousSR on HR photos with a covariance dictionary; validate against bicubic as it goes.

    L1 loss (plus the frequency loss with --freq-weight), Adam with step decay, gradient clipping, AMP on CUDA.
    Checkpoints RUN/best.pt (best mean validation PSNR) and RUN/last.pt load with `p2g eval --checkpoint`.
    """
    if print_job_script:
        from dgp_fitting.clusters import cluster_spec
        from workflows.train_job import train_job_script

        click.echo(train_job_script(cluster_spec(cluster_config, kind=None if cluster_config else "slurm")), nl=False)
        return
    if cluster_config is not None:
        raise click.UsageError("--cluster-config is for --print-job-script; to train on SLURM, run the printed script")
    images = tuple(images) + tuple(more_images)
    fields = _config_fields(ctx.params, images)
    runtime = dict(device=device, workers=workers, time_limit=None if time_limit is None else time_limit * 60)
    try:
        result = _resume(ctx, out_dir, fields, runtime) if resume else _start(ctx, out_dir, fields, runtime)
    except KeyboardInterrupt as err:  # before the first step, or a second Ctrl-C / SIGTERM: say what is kept
        if not err.args:
            err.args = (interrupted_note(out_dir),)
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        for line in describe(result, None if resume else bool(val_images)):
            click.echo(line)
    if result.stop_signal is not None:  # Ctrl-C or SIGTERM stopped it after a step and last.pt was saved
        raise stop_exception(result)


def _config_fields(params: dict, images: tuple) -> dict:
    """TrainConfig's settings (all but `out`) from the verb's flags: scales, schedule and model options parsed."""
    from sr_model.evaluation.evaluate import parse_scales
    from sr_model.training.state import milestones_from_fractions

    scale_min, scale_max = parse_scale_range(params["scales"])
    overrides = {**VARIANTS[params["variant"]], **parse_model_options(params["model_options"])}
    decay = [f for f in params["lr_decay"].split(",") if f.strip()]
    return dict(
        images=images,
        prior=params["prior"],
        preset=params["preset"],
        model_overrides=overrides,
        steps=params["steps"],
        batch=params["batch"],
        patch=params["patch"],
        scale_min=scale_min,
        scale_max=scale_max,
        lr=params["learning_rate"],
        lr_milestones=milestones_from_fractions(params["steps"], decay),
        lr_gamma=params["lr_gamma"],
        freq_weight=params["freq_weight"],
        grad_clip=params["grad_clip"],
        val_images=tuple(params["val_images"]),
        val_scales=tuple(parse_scales(params["val_scales"])),
        val_every=params["val_every"],
        val_crop=params["val_crop"],
        log_every=params["log_every"],
        seed=params["seed"],
        amp=params["amp"],
    )


def _resume(ctx: click.Context, out_dir: Path, fields: dict, runtime: dict) -> TrainResult:
    """Continue the run in `out_dir`; only the settings given on the command line are passed on as changes."""
    from sr_model.training.loop import resume_training

    if ctx.default_map:
        raise click.UsageError("--resume continues RUN from its last.pt, which holds the run's settings; drop --config")
    given = {
        "images": _given(ctx, "images") or bool(ctx.params["more_images"]),
        "model_overrides": _given(ctx, "variant") or _given(ctx, "model_options"),
        "scale_min": _given(ctx, "scales"),
        "scale_max": _given(ctx, "scales"),
        "lr": _given(ctx, "learning_rate"),
        "lr_milestones": _given(ctx, "lr_decay"),
    }
    changes = {k: v for k, v in fields.items() if given.get(k, _given(ctx, k))}
    if "lr_milestones" in changes:
        raise click.UsageError("a resumed run keeps its learning-rate schedule; drop --lr-decay")
    return resume_training(out_dir, changes, **runtime)


def _start(ctx: click.Context, out_dir: Path, fields: dict, runtime: dict) -> TrainResult:
    """A new run in `out_dir`, its config.yaml written first (and removed again if it fails before a checkpoint)."""
    from sr_model.training.loop import train

    images = fields["images"]
    if not images:
        raise click.UsageError("give training images with --images DIR")
    refuse_stale_dictionary(fields["prior"])
    config = TrainConfig(out=str(out_dir), **fields)  # checks every setting before anything is written
    written = None
    if int(os.environ.get("RANK", "0")) == 0 and not (out_dir / "last.pt").exists():
        written = _write_run_config(ctx, out_dir, images)
    try:
        return train(config, **runtime)
    except BaseException as err:
        removed = _remove_unused(written, out_dir) if written is not None else None
        if isinstance(err, KeyboardInterrupt) and not err.args:
            err.args = (interrupted_note(out_dir, removed),)
        raise
