"""The `p2g` entry point. Library errors become a one-line message and exit code 2, here and only here.

`--debug` (or P2G_DEBUG=1) prints the full traceback before the line. SIGTERM is handled like Ctrl-C, so
the verbs' cleanup runs and no partial file is left; its exit code is 143.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback

import click

from gaussian_field import __version__

#: Exceptions that mean "the input or the environment is wrong": one line, exit code 2, no traceback.
#: (OSError covers missing, unreadable and read-only files and a full disk.)
USER_ERRORS = (ValueError, OSError, EOFError)


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


def debug_wanted(ctx: click.Context) -> bool:
    return bool(ctx.params.get("debug")) or os.environ.get("P2G_DEBUG", "").strip().lower() in ("1", "true", "yes")


class P2GGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt as err:
            if debug_wanted(ctx):
                traceback.print_exc()
            hint = RESUME_HINTS.get(ctx.invoked_subcommand or "", "finished outputs are kept, no partial file is left")
            click.echo(f"{'terminated' if isinstance(err, Terminated) else 'interrupted'}: {hint}", err=True)
            ctx.exit(143 if isinstance(err, Terminated) else 130)
        except Exception as err:
            if debug_wanted(ctx):
                traceback.print_exc()
            if isinstance(err, USER_ERRORS):
                click.echo(f"error: {one_line(err)}", err=True)
                ctx.exit(2)
            click.echo(f"error: internal error ({type(err).__name__}: {one_line(err)}); rerun with --debug "
                       "(or P2G_DEBUG=1) for the traceback, and report it", err=True)
            ctx.exit(1)


@click.group(cls=P2GGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="p2g")
@click.option("--debug", is_flag=True, help="On an error, print the full traceback too (or set P2G_DEBUG=1).")
def cli(debug: bool) -> None:
    """pixel2gauss: arbitrary-scale super-resolution with 2D Gaussian fields (ContinuousSR).

    Pipeline: fit-prior -> prior-stats -> train -> upscale / eval. `p2g VERB --help` for each verb.
    """


def _register() -> None:
    from workflows import (bench_cmd, eval_cmd, fit_prior_cmd, import_official_cmd, info_cmd, prior_stats_cmd,
                           render_cmd, train_cmd, upscale_cmd)

    for module in (render_cmd, eval_cmd, import_official_cmd, fit_prior_cmd, info_cmd, prior_stats_cmd, train_cmd,
                   bench_cmd, upscale_cmd):
        cli.add_command(module.command)


_register()


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    cli(prog_name="p2g")


if __name__ == "__main__":
    sys.exit(main())
