"""The ``purpose-agent`` command group, and how its failures reach the user.

Every failure a user can act on is printed as one line on standard error, prefixed
``error:``, with exit status 1: the package's own errors already say what to do (the upgrade
command for a schema that is behind, the URL of a database that is down). A traceback is shown
only with ``--debug`` (or ``PURPOSE_AGENT_DEBUG=1``), for reporting bugs. ``--debug`` goes
before the command or anywhere after it (``purpose-agent runs show RUN --debug``): the messages
say "run with --debug", and a user adds it at the end as often as at the start.

A reader that stops early (``purpose-agent runs events RUN | head -1``) is not a failure: the
command ends quietly with status 0, whether the pipe closes while it prints or when Python
flushes standard output on the way out. A command that prints as it works (``demo``) is not
done when its output closes, so it says so and ends with status 141, as a process killed by
``SIGPIPE``; the others print their report once the work is done, and those whose status is
what the work found (``runs verify``, ``copy``, ``import``, ``db check``) keep it
(:func:`print_then_fail`).

Ctrl-C ends any command with one line that says where it left the store (each such command
names it with :func:`on_interrupt`) and status 130, as a shell reports ``SIGINT``; never with
a traceback, nor with status 1, which ``runs verify`` gives when it finds damage. ``SIGTERM``
does the same (:class:`Terminated`), with status 143.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import click

from purpose_agent import __version__
from purpose_agent.cli.output import CommandFailed, escape_what_stdout_cannot_encode
from purpose_agent.errors import CheckpointError

DEBUG_ENV = "PURPOSE_AGENT_DEBUG"
INTERRUPTED_EXIT = 130
TERMINATED_EXIT = 143
PIPE_CLOSED_EXIT = 141
_LEFT = "purpose_agent.interrupted"
_PRINTS_AS_IT_WORKS = "purpose_agent.prints_as_it_works"
_QUIET_LOGS = "purpose_agent.quiet_logs"
# The loggers of the connection pools: SQLAlchemy's, and the package's own (db.thread_pool and
# its kin), which log under their module's name as SQLAlchemy's pools do under theirs.
_POOL_LOGGERS = ("sqlalchemy", "purpose_agent.db")
# Where an error names a URL the user did not type (see options.resolve_url): said after it.
URL_NOTE = "purpose_agent.url_note"


class Terminated(KeyboardInterrupt):
    """``SIGTERM`` (``kill``, ``timeout``, a supervisor), raised where Ctrl-C raises its own.

    Python's default for it ends the process at once: a progress bar left the terminal's
    cursor hidden, and nobody was told where the store was left. Raised instead, it unwinds
    the command as Ctrl-C does (the bar is taken down, transactions roll back, connections
    close), and every ``except KeyboardInterrupt`` on the way treats it alike.
    """


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


@contextmanager
def _terminate_by_unwinding() -> Iterator[None]:
    """Turn ``SIGTERM`` into :class:`Terminated` while a command runs (on the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set there (a test driving the command elsewhere)
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def on_interrupt(left: str, *, prints_as_it_works: bool = False) -> None:
    """Say, should the running command be stopped (Ctrl-C, output closed), where it leaves things.

    Args:
        left: What an operator needs to know, e.g. "what was pruned stays pruned; run the
            same command again to finish".
        prints_as_it_works: The command's output comes while it works (``demo``'s steps),
            so a closed pipe stops the work too; otherwise the report comes when it is done.
    """
    meta = click.get_current_context().meta
    meta[_LEFT] = left
    meta[_PRINTS_AS_IT_WORKS] = prints_as_it_works


def print_then_fail(show: Callable[[], None], failure: Exception | None) -> None:
    """Print a command's report with ``show``, then fail with ``failure``, if there is one.

    The exit status of ``runs verify``, ``copy``, ``import`` and ``db check`` is what their
    work found (damage, a run not copied, a schema behind), which a scheduled check alerts on:
    a reader that closes the pipe part-way through the report (``| head -1``) leaves that
    status and its ``error:`` line as they are, where a report that closes early otherwise
    ends with status 0.

    Args:
        show: Prints the report on standard output.
        failure: What the command ends with once the report is printed (a
            :class:`CommandFailed` or one of the package's errors), or ``None``.
    """
    try:
        show()
    except BrokenPipeError:
        if failure is None:
            raise
        _silence_stdout()
    if failure is not None:
        raise failure


class LazyCommand(NamedTuple):
    """A command whose module is imported only when it is run or asked for its own help.

    Attributes:
        target: ``module:attribute`` of the click command.
        summary: The first line of its docstring, for the root's ``--help`` (a test keeps
            the two equal).

    """

    target: str
    summary: str


# The commands import SQLAlchemy, pydantic and rich; `purpose-agent --version` and `--help`
# must not wait for them.
COMMANDS = {
    "copy": LazyCommand(
        "purpose_agent.cli.copy:copy",
        "Copy every run (events and snapshots) from SOURCE into DEST.",
    ),
    "db": LazyCommand(
        "purpose_agent.cli.db_commands:db",
        "Create, upgrade and inspect the schema of a SQL store.",
    ),
    "demo": LazyCommand(
        "purpose_agent.cli.demo:demo",
        "Run a small deterministic agent that checkpoints every step; run it again to resume.",
    ),
    "import": LazyCommand(
        "purpose_agent.cli.imports:import_group",
        "Import threads from another checkpointer into the store.",
    ),
    "prune": LazyCommand(
        "purpose_agent.cli.prune:prune",
        "Remove history a store no longer needs.",
    ),
    "runs": LazyCommand(
        "purpose_agent.cli.runs_commands:runs",
        "List, inspect, page through, verify and delete runs, and list run groups.",
    ),
}


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


def _debug_after_the_command(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """Turn ``--debug`` given after a command name into the root's ``--debug``."""
    if not value:
        return
    root = ctx.find_root()
    root.params["debug"] = True
    quiet = root.meta.pop(_QUIET_LOGS, None)
    if quiet is not None:
        for name in _POOL_LOGGERS:
            logging.getLogger(name).removeHandler(quiet)


def _accept_debug(command: click.Command) -> None:
    """Give a command and its subcommands a hidden ``--debug`` that acts as the root's."""
    if not any(param.name == "debug" for param in command.params):
        command.params.append(
            click.Option(
                ["--debug"],
                is_flag=True,
                hidden=True,
                expose_value=False,
                callback=_debug_after_the_command,
            )
        )
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _accept_debug(subcommand)


class App(click.Group):
    """The root group: loads commands on demand, and turns their exceptions into one line.

    Every failure becomes a :class:`CommandFailed`; a closed output pipe ends the command
    quietly with status 0.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Name every command, loaded or not, in alphabetical order."""
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Return a command, importing its module the first time it is asked for."""
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, _, attribute = COMMANDS[cmd_name].target.partition(":")
            command = getattr(importlib.import_module(module), attribute)
            _accept_debug(command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands with their summaries, as click does, without importing them."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            # An unloaded command is listed through a stand-in with its summary as help, so
            # that click shortens it exactly as it would the real one.
            command = self.commands.get(name) or click.Command(name, help=COMMANDS[name].summary)
            if not command.hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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
        escape_what_stdout_cannot_encode()
        if not ctx.params.get("debug"):
            # A connection closed while Ctrl-C unwinds the stack is logged by its
            # pool with the interrupt's traceback; the one line below says what happened.
            # Removed again by a --debug after the command name.
            quiet = ctx.meta[_QUIET_LOGS] = logging.NullHandler()
            for name in _POOL_LOGGERS:
                logging.getLogger(name).addHandler(quiet)
        try:
            with _terminate_by_unwinding():
                return super().invoke(ctx)
        except BrokenPipeError:
            _silence_stdout()
            left = ctx.meta.get(_LEFT)
            if left is None or not ctx.meta.get(_PRINTS_AS_IT_WORKS):
                # The reader has all it wanted (`... | head`); click alone would exit 1.
                raise click.exceptions.Exit(0) from None
            click.echo(f"stopped: its output was closed before it finished; {left}", err=True)
            raise click.exceptions.Exit(PIPE_CLOSED_EXIT) from None
        except KeyboardInterrupt as exc:
            if ctx.params.get("debug"):
                raise
            left = ctx.meta.get(_LEFT, "it stopped before it finished")
            if isinstance(exc, Terminated):
                click.echo(f"\nterminated: {left}", err=True)
                raise click.exceptions.Exit(TERMINATED_EXIT) from None
            click.echo(f"\ninterrupted: {left}", err=True)
            raise click.exceptions.Exit(INTERRUPTED_EXIT) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click reports these itself
        except CheckpointError as exc:
            if ctx.params.get("debug"):
                raise
            raise CommandFailed(f"{exc}{ctx.meta.get(URL_NOTE, '')}") from exc
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
    seed-sqlite:PATH; the db commands take database URLs only); without it,
    $PURPOSE_AGENT_DB_URL, else sqlite:///purpose_agent.db in the current directory.
    """


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
