"""The `p2g` entry point. Library errors become a one-line message and exit code 2, here and only here.

Verbs are loaded lazily (click's documented lazy group): `p2g --help`, `p2g --version` and `p2g VERB --help`
import only click and the verb's own module, whose heavy imports (torch, dask, zarr) live inside its function.
Adding a verb is one entry in `VERBS`.

`--debug` (or P2G_DEBUG=1) prints the full traceback before the line. SIGTERM is handled like Ctrl-C, so
the verbs' cleanup runs and no partial file is left; its exit code is 143.
"""

from __future__ import annotations

import importlib
import os
import signal
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
    "export": "workflows.export_cmd:command",
    "view": "workflows.view_cmd:command",
}

#: Exceptions that mean "the input or the environment is wrong": one line, exit code 2, no traceback.
#: (OSError covers missing, unreadable and read-only files and a full disk.)
USER_ERRORS = (ValueError, OSError, EOFError)

#: Set to 1 to print the full traceback before the one-line error (as `p2g --debug` does).
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that cleanup runs as for Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def error_line(err: BaseException) -> str:
    """The one line printed for an exception: the message of a user error, or a request to report a bug."""
    if isinstance(err, USER_ERRORS):
        return f"error: {one_line(err)}"
    return (
        f"error: internal error ({type(err).__name__}: {one_line(err)}); rerun with --debug "
        f"(or {DEBUG_ENV}=1) for the traceback, and report it"
    )


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
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as err:
            if debug_requested(ctx):
                traceback.print_exc()
            hint = RESUME_HINTS.get(ctx.invoked_subcommand or "", "finished outputs are kept, no partial file is left")
            click.echo(f"{'terminated' if isinstance(err, Terminated) else 'interrupted'}: {hint}", err=True)
            ctx.exit(143 if isinstance(err, Terminated) else 130)
        except Exception as err:
            if debug_requested(ctx):
                traceback.print_exc()
            click.echo(error_line(err), err=True)
            ctx.exit(2 if isinstance(err, USER_ERRORS) else 1)


@click.group(cls=P2GGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    is_eager=True,
    expose_value=False,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option("--debug", is_flag=True, help=f"On an error, print the full traceback too (or {DEBUG_ENV}=1).")
def cli(debug: bool) -> None:
    """pixel2gauss: arbitrary-scale super-resolution with 2D Gaussian fields (ContinuousSR).

    Pipeline: fit-prior -> prior-stats -> train -> upscale / eval. `p2g VERB --help` for each verb.
    """


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="p2g")


if __name__ == "__main__":
    sys.exit(main())
