"""The ``purpose-agent`` command group, and how its failures reach the user.

Every failure a user can act on is printed as one line on standard error, prefixed
``error:``, with exit status 1: the package's own errors already say what to do (the upgrade
command for a schema that is behind, the URL of a database that is down). A traceback is shown
only with ``--debug`` (or ``PURPOSE_AGENT_DEBUG=1``), for reporting bugs.

A reader that stops early (``purpose-agent runs events RUN | head -1``) is not a failure: the
command ends quietly with status 0, whether the pipe closes while it prints or when Python
flushes standard output on the way out.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

import click

from purpose_agent import __version__
from purpose_agent.cli.copy import copy
from purpose_agent.cli.db_commands import db
from purpose_agent.cli.demo import demo
from purpose_agent.cli.output import CommandFailed
from purpose_agent.cli.prune import prune
from purpose_agent.cli.runs_commands import runs
from purpose_agent.errors import CheckpointError

DEBUG_ENV = "PURPOSE_AGENT_DEBUG"


def _silence_stdout() -> None:
    """Point standard output at the null device once its reader has gone.

    Python's documentation advises it: whatever is still buffered is flushed again at
    interpreter exit, and a second ``BrokenPipeError`` there would print "Exception ignored"
    and end with status 120.
    """
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return  # not a real file (a test runner's buffer): nothing is flushed to a pipe later
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, descriptor)
    finally:
        os.close(devnull)


class App(click.Group):
    """The root group: turns exceptions from any command into :class:`CommandFailed`."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the options; ``--version`` or ``--help`` into a closed pipe ends quietly."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(0) from None

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; translate failures unless ``--debug`` asks for the traceback."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # The reader has all it wanted (`... | head`); click alone would exit 1.
            _silence_stdout()
            raise click.exceptions.Exit(0) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click reports these itself
        except CheckpointError as exc:
            if ctx.params.get("debug"):
                raise
            raise CommandFailed(str(exc)) from exc
        except Exception as exc:  # a bug or an unforeseen environment: one line, not a trace
            if ctx.params.get("debug"):
                raise
            raise CommandFailed(
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
            ) from exc


@click.group(cls=App, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=f"Show tracebacks instead of one-line errors (also ${DEBUG_ENV}=1).",
)
@click.version_option(__version__, prog_name="purpose-agent")
def cli(debug: bool) -> None:
    """Durable agent runs: run the demo, inspect runs, copy and prune stores, migrate schemas.

    Every command that needs a store takes --url (a database URL, jsonl:PATH or
    seed-sqlite:PATH); without it, $PURPOSE_AGENT_DB_URL, else sqlite:///purpose_agent.db in
    the current directory.
    """


cli.add_command(demo)
cli.add_command(runs)
cli.add_command(copy)
cli.add_command(prune)
cli.add_command(db)


def main() -> None:
    """Entry point of the ``purpose-agent`` console script and ``python -m purpose_agent``.

    Standard output is flushed here rather than at interpreter exit, so that a reader that
    closed the pipe before the last buffer was written still gets status 0 and no message.
    """
    status: str | int | None = 0
    try:
        cli.main(prog_name="purpose-agent")
    except SystemExit as exc:  # click always ends this way in standalone mode
        status = exc.code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.exit(status)
