"""The ``purpose-agent`` command group, and how its failures reach the user.

Every failure a user can act on is printed as one line on standard error, prefixed
``error:``, with exit status 1: the package's own errors already say what to do (the upgrade
command for a schema that is behind, the URL of a database that is down). A traceback is shown
only with ``--debug`` (or ``PURPOSE_AGENT_DEBUG=1``), for reporting bugs.
"""

from __future__ import annotations

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


class App(click.Group):
    """The root group: turns exceptions from any command into :class:`CommandFailed`."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; translate failures unless ``--debug`` asks for the traceback."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            # Click reports these itself; a closed pipe (`... | head`) ends output quietly.
            raise
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
    """Entry point of the ``purpose-agent`` console script and ``python -m purpose_agent``."""
    cli(prog_name="purpose-agent")
