"""Options and argument types shared by several commands."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import click

from purpose_agent.cli.app import URL_NOTE
from purpose_agent.db.engine import URL_ENV, default_url

F = TypeVar("F", bound=Callable[..., Any])

_DEFAULT_HELP = f"Default: ${URL_ENV}, else sqlite:///purpose_agent.db."
URL_HELP = f"The store: a database URL, jsonl:PATH or seed-sqlite:PATH. {_DEFAULT_HELP}"
SQL_URL_HELP = (
    "The database: a SQLAlchemy URL such as sqlite:///PATH, "
    f"postgresql+psycopg://USER@HOST/DB or mariadb+pymysql://USER@HOST/DB. {_DEFAULT_HELP}"
)


def url_option(function: F) -> F:
    """Add ``--url`` to a command (``None`` when absent; see :func:`resolve_url`)."""
    return click.option("--url", "url", default=None, metavar="URL", help=URL_HELP)(function)


def sql_url_option(function: F) -> F:
    """Add ``--url`` to a command that works on SQL databases only (the ``db`` commands)."""
    return click.option("--url", "url", default=None, metavar="URL", help=SQL_URL_HELP)(function)


def selection_options(what: str) -> Callable[[F], F]:
    """Add ``--group NAME`` and ``--prefix TEXT``, which narrow a command to some runs.

    Args:
        what: The start of their help, such as ``"Prune only runs"``.

    """

    def add(function: F) -> F:
        with_prefix = click.option(
            "--prefix",
            default=None,
            metavar="TEXT",
            help=f"{what} whose id starts with TEXT (exact, case-sensitive).",
        )(function)
        return click.option(
            "--group", default=None, metavar="NAME", help=f"{what} of the group NAME."
        )(with_prefix)

    return add


def revision_argument(*, required: bool) -> Callable[[F], F]:
    """Add the target revision: ``REVISION``, or the older spelling ``--revision REV`` (hidden).

    ``db upgrade`` and ``db downgrade`` both take it as an argument, like ``alembic upgrade
    head``; ``--revision`` keeps scripts written for the first ``db upgrade`` working. The
    command passes both values to :func:`chosen_revision`.

    Args:
        required: Whether the command needs a revision (``db downgrade``): its usage line then
            shows ``REVISION``, not ``[REVISION]``. click cannot require the argument itself,
            since the hidden option may give it instead; :func:`chosen_revision` refuses none.

    """

    def add(function: F) -> F:
        with_option = click.option(
            "--revision", "revision_option", default=None, metavar="REV", hidden=True
        )(function)
        metavar = "REVISION" if required else "[REVISION]"
        return click.argument("revision", required=False, metavar=metavar)(with_option)

    return add


def chosen_revision(argument: str | None, option: str | None, default: str | None) -> str:
    """The revision a ``db`` command was given, whichever way it was spelled.

    Raises:
        click.UsageError: Two different revisions, or none where there is no default.

    """
    if argument is not None and option is not None and argument != option:
        raise click.UsageError(f"two revisions given: {argument!r} and --revision {option!r}")
    revision = argument if argument is not None else option
    if revision is not None:
        return revision
    if default is None:
        raise click.UsageError("say which revision: REVISION ('base' removes every table)")
    return default


def json_option(function: F) -> F:
    """Add ``--json``: one JSON document on standard output instead of tables."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print JSON for scripts instead of a table."
    )(function)


def resolve_url(url: str | None) -> str:
    """The URL a command uses: ``--url``, else ``PURPOSE_AGENT_DB_URL``, else the default.

    A URL taken from the environment is noted, so that an error naming it can say where it
    came from: the user did not type it.
    """
    if url is not None:
        return url
    ctx = click.get_current_context(silent=True)
    if ctx is not None and os.environ.get(URL_ENV):
        ctx.find_root().meta[URL_NOTE] = f" (the URL is ${URL_ENV}'s; --url names another)"
    return default_url()


def url_flag(given: str | None, shown: str) -> str:
    """The ``--url`` part of a command to suggest.

    Empty when no ``--url`` was given (the same environment finds the same store); otherwise
    the store as shown to people, with any password hidden.
    """
    return f" --url {shlex.quote(shown)}" if given is not None else ""


if TYPE_CHECKING:
    _AgeType = click.ParamType[timedelta]
else:  # click before 8.2 has no type parameters on ParamType
    _AgeType = click.ParamType


class Duration(_AgeType):
    """An age such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` (units may be combined)."""

    name = "age"
    _UNITS: ClassVar[dict[str, str]] = {
        "w": "weeks",
        "d": "days",
        "h": "hours",
        "m": "minutes",
        "s": "seconds",
    }
    _PART = re.compile(r"(\d+)([wdhms])")

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        """Parse the age, or fail with a usage error that shows the accepted forms."""
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        parts = self._PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            self.fail(f"{value!r} is not an age like 30d, 12h, 90m, 45s or 2w1d", param, ctx)
        amounts: dict[str, float] = {}
        for number, unit in parts:
            name = self._UNITS[unit]
            amounts[name] = amounts.get(name, 0) + int(number)
        try:
            return timedelta(**amounts)
        except OverflowError:
            self.fail(
                f"{value!r} is longer than any age ({timedelta.max.days:,}d at most)", param, ctx
            )
