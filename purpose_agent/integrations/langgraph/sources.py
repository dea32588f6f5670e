"""Opening LangGraph's own checkpointers from a URL, to import their threads.

``postgres://...`` and ``postgresql://...`` (a ``+driver`` part is dropped: psycopg reads a
libpq URL) open ``PostgresSaver.from_conn_string``; ``sqlite:PATH`` and ``sqlite:///PATH``
open ``SqliteSaver.from_conn_string``. Each needs LangGraph's package for it, which this
package does not depend on: only an import needs them, and a missing one is named with the
command that installs it.

A source is only read. ``SqliteSaver`` creates its tables when first used, so a path that is
not a file of its tables is refused before it is opened: a mistyped path must not leave an
empty database behind, nor import nothing without a word. ``PostgresSaver`` reads without
setting up; a database without its tables is refused by the first read.
"""

from __future__ import annotations

import contextlib
import importlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

from purpose_agent.db.engine import shown_text
from purpose_agent.errors import InvalidInput, unavailable

_POSTGRES = ("postgres", "postgresql")
# libpq takes a password in the query string as well as before the host.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
_INSTALL = "pip install 'purpose-agent[langgraph]' {package}"


class Source(NamedTuple):
    """A parsed source URL.

    Attributes:
        kind: ``"postgres"`` or ``"sqlite"``.
        location: The conninfo URL for psycopg, or the SQLite file's path.
        shown: The URL as it may be printed (any password hidden).

    """

    kind: str
    location: str
    shown: str


def parse_source(text: str) -> Source:
    """Parse ``postgres://...``, ``postgresql[+driver]://...``, ``sqlite:PATH`` or ``sqlite:///PATH``.

    Raises:
        InvalidInput: Any other form.
    """
    scheme, _, rest = text.partition(":")
    base = scheme.split("+", 1)[0].lower()
    if base in _POSTGRES and rest.startswith("//"):
        try:
            parts = urlsplit(text)
        except ValueError as exc:  # a malformed host, such as an unclosed "[" of IPv6
            raise InvalidInput(f"{_shown(text)} is not a valid postgres URL ({exc})") from exc
        if "@" in parts.netloc.rpartition("@")[0]:
            # libpq ends the password at its first '@' and takes the rest for the host, which
            # its error ("failed to resolve host ...") would print.
            raise InvalidInput(
                f"{_shown(text)} is not a valid postgres URL (write an '@' in the user name or "
                "password as %40)"
            )
        location = urlunsplit(("postgresql", *parts[1:]))
        return Source("postgres", location, _hidden(location))
    if base == "sqlite":
        # sqlite:///PATH as SQLAlchemy writes it (four slashes for an absolute path), or
        # sqlite:PATH; sqlite://HOST/... names no file.
        path = rest[3:] if rest.startswith("///") else "" if rest.startswith("//") else rest
        if path:
            return Source("sqlite", path, f"sqlite:{path}")
    raise InvalidInput(
        f"{_shown(text)!r} is not a LangGraph checkpointer this command reads: give "
        "postgres://USER@HOST/DB (PostgresSaver) or sqlite:PATH (SqliteSaver)"
    )


def _hidden(url: str) -> str:
    """The URL with its password, before the host or in the query string, as ``***``.

    A password holding a '/', '?' or '#' ends the host part for urllib, which then sees no
    password: the text up to the last '@' is hidden as well (:func:`shown_text`).
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{pair.partition('=')[0]}=***"
        if unquote(pair.partition("=")[0]).lower() in _SECRET_PARAMETERS
        else pair
        for pair in parts.query.split("&")
    )
    return shown_text(urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment)))


def _shown(text: str) -> str:
    """Text given as a source, as it may be printed: a URL's password hidden."""
    try:
        return _hidden(text)
    except ValueError:
        # Not a URL urllib can split: only its scheme can be shown safely.
        return f"{text.partition(':')[0]}:..."


def _module(name: str, package: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise InvalidInput(
            f"reading this source needs {package}, which is not installed: "
            + _INSTALL.format(package=package)
        ) from exc


def _sqlite_tables(path: str) -> None:
    """Refuse a path that is not a SQLite file holding ``SqliteSaver``'s tables.

    Raises:
        InvalidInput: No such file, or not a ``SqliteSaver`` database.
    """
    if not Path(path).is_file():
        raise InvalidInput(f"no SQLite file at {path!r}: give the path SqliteSaver was opened on")
    try:
        with contextlib.closing(
            sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            found = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path!r} is not a SQLite database ({exc})") from exc
    if not {"checkpoints", "writes"} <= found:
        raise InvalidInput(
            f"{path!r} holds no SqliteSaver checkpoints (no tables checkpoints and writes)"
        )


@contextlib.contextmanager
def open_source(source: Source) -> Iterator[BaseCheckpointSaver[Any]]:
    """The LangGraph checkpointer a source names, closed on exit.

    Raises:
        InvalidInput: Its package is missing, or a SQLite path holds no checkpoints.
        StoreUnavailable: The database cannot be reached.
    """
    if source.kind == "sqlite":
        saver_class = _module("langgraph.checkpoint.sqlite", "langgraph-checkpoint-sqlite")
        _sqlite_tables(source.location)
        with saver_class.SqliteSaver.from_conn_string(source.location) as saver:
            yield saver
        return
    saver_class = _module("langgraph.checkpoint.postgres", "langgraph-checkpoint-postgres")
    psycopg = importlib.import_module("psycopg")
    with contextlib.ExitStack() as stack:
        try:
            saver = stack.enter_context(saver_class.PostgresSaver.from_conn_string(source.location))
        except psycopg.Error as exc:
            raise unavailable("connecting to LangGraph's checkpoints", source.shown, exc) from exc
        _postgres_tables(saver, source, psycopg)
        yield saver


def _postgres_tables(saver: Any, source: Source, psycopg: Any) -> None:
    """Refuse a database without ``PostgresSaver``'s tables, before anything is read.

    Raises:
        InvalidInput: The tables are missing.
        StoreUnavailable: The database cannot be read.
    """
    try:
        with saver.conn.cursor() as cursor:
            cursor.execute(
                "SELECT to_regclass('checkpoints') AS c, to_regclass('checkpoint_writes') AS w"
            )
            row = cursor.fetchone()
    except psycopg.Error as exc:
        raise unavailable("reading LangGraph's checkpoints", source.shown, exc) from exc
    if row is None or row["c"] is None or row["w"] is None:
        raise InvalidInput(
            f"{source.shown} holds no PostgresSaver checkpoints (no tables checkpoints and "
            "checkpoint_writes in its search path)"
        )
