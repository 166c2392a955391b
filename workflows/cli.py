"""The `p2g` entry point. Library errors become a one-line message and exit code 2, here and only here.

Verbs are loaded lazily (click's documented lazy group): `p2g --help`, `p2g --version` and `p2g VERB --help`
import only click and the verb's own module, whose heavy imports (torch, dask, zarr) live inside its function.
Adding a verb is one entry in `VERBS`.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

#: Every verb: name -> "module:attribute" of its click command; the modules are imported on first use.
VERBS = {
    "render": "workflows.render_cmd:command",
    "upscale": "workflows.upscale_cmd:command",
    "eval": "workflows.eval_cmd:command",
    "fit-prior": "workflows.fit_prior_cmd:command",
    "prior-stats": "workflows.prior_stats_cmd:command",
    "info": "workflows.info_cmd:command",
    "migrate-store": "workflows.migrate_store_cmd:command",
    "train": "workflows.train_cmd:command",
    "import-official": "workflows.import_official_cmd:command",
    "bench": "workflows.bench_cmd:command",
}

#: Exceptions that mean "the user's input is wrong": one line, exit code 2, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)

#: Set to 1 to print the full traceback instead of the one-line error (as `p2g --debug` does).
DEBUG_ENV = "P2G_DEBUG"

#: What an interrupted verb leaves behind and how to carry on (only stage 1 and training resume).
RESUME_HINTS = {
    "fit-prior": "finished chunks are in the store; rerun the same command to fit only the rest",
    "train": "last.pt holds the latest checkpoint; rerun with --resume to continue",
    "upscale": "finished outputs are kept, no partial file is left; rerun with --skip-existing to do only the rest",
}


def one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def error_line(err: BaseException) -> str | None:
    """The one line printed for a user error, or None for an exception that is a bug (traceback kept)."""
    if isinstance(err, USER_ERRORS):
        return f"error: {one_line(err)}"
    return None


def debug_requested(ctx: click.Context | None = None) -> bool:
    """--debug on the command line, or P2G_DEBUG set to anything but '', '0', 'false', 'no'."""
    if ctx is not None and ctx.params.get("debug"):
        return True
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def package_version() -> str:
    """The installed package's version from its metadata (no import of the package, which loads torch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pixel2gauss")
    except PackageNotFoundError:  # run from a source tree that is not installed
        from gaussian_field import __version__

        return __version__


def _print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"p2g, version {package_version()}")
        ctx.exit()


def load_verb(name: str) -> click.Command:
    """Import the module of one verb and return its command."""
    module_name, _, attribute = VERBS[name].partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{VERBS[name]} is not a click command")
    return command


class P2GGroup(click.Group):
    """Lazy verbs, and the one place where exceptions become what the user sees."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*VERBS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in VERBS:
            return load_verb(cmd_name)
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except KeyboardInterrupt:
            hint = RESUME_HINTS.get(ctx.invoked_subcommand or "", "finished outputs are kept, no partial file is left")
            click.echo(f"interrupted: {hint}", err=True)
            ctx.exit(130)
        except Exception as err:
            line = error_line(err)
            if line is None:
                raise
            if debug_requested(ctx):
                traceback.print_exc()
            else:
                click.echo(line, err=True)
            ctx.exit(2)


@click.group(cls=P2GGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, is_eager=True, expose_value=False, callback=_print_version,
              help="Show the version and exit.")
@click.option("--debug", is_flag=True, help=f"Print the full traceback instead of a one-line error (or {DEBUG_ENV}=1).")
def cli(debug: bool) -> None:
    """pixel2gauss: arbitrary-scale super-resolution with 2D Gaussian fields (ContinuousSR).

    Pipeline: fit-prior -> prior-stats -> train -> upscale / eval. `p2g VERB --help` for each verb.
    """


def main() -> None:
    cli(prog_name="p2g")


if __name__ == "__main__":
    sys.exit(main())
