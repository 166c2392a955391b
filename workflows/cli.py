"""The `p2g` entry point. Library errors become a one-line message and exit code 2, here and only here."""

from __future__ import annotations

import sys

import click


#: Exceptions that mean "the user's input is wrong": one line, exit code 2, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


#: What an interrupted verb leaves behind and how to carry on (only stage 1 and training resume).
RESUME_HINTS = {
    "fit-prior": "finished chunks are in the store; rerun the same command to fit only the rest",
    "train": "last.pt holds the latest checkpoint; rerun with --resume to continue",
    "upscale": "finished outputs are kept, no partial file is left; rerun with --skip-existing to do only the rest",
}


def one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


class P2GGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException:
            raise
        except USER_ERRORS as err:
            click.echo(f"error: {one_line(err)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            hint = RESUME_HINTS.get(ctx.invoked_subcommand or "", "finished outputs are kept, no partial file is left")
            click.echo(f"interrupted: {hint}", err=True)
            ctx.exit(130)


@click.group(cls=P2GGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixel2gauss", prog_name="p2g")  # from the metadata: no torch import
def cli() -> None:
    """pixel2gauss: arbitrary-scale super-resolution with 2D Gaussian fields (ContinuousSR).

    Pipeline: fit-prior -> prior-stats -> train -> upscale / eval. `p2g VERB --help` for each verb.
    """


#: Verb -> module holding its click `command`, imported only when that verb runs (or for `--help`), so that
#: light verbs such as `p2g info` do not pay for importing torch and every model.
VERBS = {
    "render": "workflows.render_cmd",
    "eval": "workflows.eval_cmd",
    "import-official": "workflows.import_official_cmd",
    "fit-prior": "workflows.fit_prior_cmd",
    "info": "workflows.info_cmd",
    "migrate-store": "workflows.migrate_store_cmd",
    "prior-stats": "workflows.prior_stats_cmd",
    "train": "workflows.train_cmd",
    "bench": "workflows.bench_cmd",
    "upscale": "workflows.upscale_cmd",
}


def _list_commands(ctx: click.Context) -> list[str]:
    return sorted(VERBS)


def _get_command(ctx: click.Context, name: str) -> click.Command | None:
    if name not in VERBS:
        return None
    import importlib

    return importlib.import_module(VERBS[name]).command


cli.list_commands = _list_commands
cli.get_command = _get_command


def main() -> None:
    cli(prog_name="p2g")


if __name__ == "__main__":
    sys.exit(main())
