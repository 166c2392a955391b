"""The `p2g` entry point. Library errors become a one-line message and exit code 2, here and only here.

Verbs are loaded lazily (click's documented lazy group): `p2g --help`, `p2g --version` and `p2g VERB --help`
import only click and the verb's own module, whose heavy imports (torch, dask, zarr) live inside its function.
Adding a verb is one entry in `VERBS`.

`--debug` (or P2G_DEBUG=1) prints the full traceback before the line. SIGTERM is handled like Ctrl-C, so
the verbs' cleanup runs and no partial file is left; its exit code is 143. An interrupt whose exception carries a
message (a verb that knows what it kept) prints that message; else the verb's line in `RESUME_HINTS`.

click's own refusals (a bad value, a missing option) are one `error:` line too, pointing to the verb's --help,
and Python warnings are one `warning:` line each (no source line).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback
import warnings

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

#: What an interrupted verb leaves behind and how to carry on (`p2g train` says it in its exception, as what it
#: kept depends on when it stopped).
RESUME_HINTS = {
    "fit-prior": "finished chunks are in the store; rerun the same command to fit only the rest",
    "upscale": "finished outputs are kept, no partial file is left; rerun with --skip-existing to do only the rest",
}


def one_line(err: BaseException) -> str:
    """`gaussian_field.integrity.first_line`, copied: importing gaussian_field at CLI start would load torch."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is so that cleanup runs as for Ctrl-C."""


def _terminate(signum, frame) -> None:
    raise Terminated()


class OneLineUsageError(click.UsageError):
    """A refusal of the command line (click's or a verb's) shown as one `error:` line that points to --help."""

    def __init__(self, err: click.UsageError, command_path: str) -> None:
        super().__init__(err.format_message(), ctx=err.ctx)
        self.command_path = err.ctx.command_path if err.ctx is not None else command_path

    def show(self, file=None) -> None:
        click.echo(f"error: {one_line(self).rstrip('.')} ({self.command_path} --help)", file=file, err=True)


def one_line_usage(err: click.UsageError, command_path: str) -> click.UsageError:
    """`err` as a `OneLineUsageError`; `p2g` alone (click's NoArgsIsHelpError) keeps showing the help."""
    if isinstance(err, (OneLineUsageError, click.exceptions.NoArgsIsHelpError)):
        return err
    return OneLineUsageError(err, command_path)


def format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning as the CLI prints it: one `warning: ...` line, without the source file and line."""
    return f"warning: {' '.join(str(message).split())}\n"


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

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as err:  # the group's own options: `p2g --bogus`
            raise one_line_usage(err, info_name or "p2g") from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a verb's options, an unknown verb, or a verb's own refusal
            raise one_line_usage(err, f"{ctx.command_path} {ctx.invoked_subcommand or ''}".strip()) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as err:
            if debug_requested(ctx):
                traceback.print_exc()
            default = "finished outputs are kept, no partial file is left"
            hint = one_line(err) if err.args else RESUME_HINTS.get(ctx.invoked_subcommand or "", default)
            click.echo(f"{'terminated' if isinstance(err, Terminated) else 'interrupted'}: {hint}", err=True)
            ctx.exit(143 if isinstance(err, Terminated) else 130)
        except Exception as err:
            if debug_requested(ctx):
                traceback.print_exc()
            click.echo(error_line(err), err=True)
            ctx.exit(2 if isinstance(err, USER_ERRORS) else 1)


@click.group("p2g", cls=P2GGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
    warnings.formatwarning = format_warning
    cli(prog_name="p2g")


if __name__ == "__main__":  # `python -m workflows.cli` (torchrun): run the importable module, so that the verbs
    from workflows.cli import main as module_main  # see the same classes (Terminated) as its signal handler raises

    sys.exit(module_main())
