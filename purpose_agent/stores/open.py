"""Naming a store with one string, and opening it: the one factory over every backend.

The command line and :func:`~purpose_agent.ops.copy.copy_runs` take a store as one string, so
that moving data between backends reads the same whatever they are::

    memory:                          a store in this process (for tests and trials)
    jsonl:./checkpoints              a JSONL folder (the seed's layout reads as it is)
    seed-sqlite:./old.db             a SQLite file the seed wrote, read-only
    sqlite:///runs.db                a SQL store; a seed-era file is detected and read-only
    postgresql+psycopg://u@h/db      a SQL store (any URL SQLAlchemy and the package support)
    ./checkpoints  or  ./old.db      an existing folder or file, recognised by what it is
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy.engine import URL

from purpose_agent.db.engine import parse_url, require_directory, shown_url
from purpose_agent.db.migrate import upgrade_command
from purpose_agent.errors import InvalidInput
from purpose_agent.legacy.jsonl import SeedJSONLReader
from purpose_agent.legacy.sqlite import SeedSQLiteReader, is_seed_sqlite
from purpose_agent.protocol import Checkpointer
from purpose_agent.stores.jsonl import JSONLCheckpointer
from purpose_agent.stores.memory import InMemoryCheckpointer
from purpose_agent.stores.sql import SQLCheckpointer

MEMORY_PREFIX = "memory:"
JSONL_PREFIX = "jsonl:"
SEED_SQLITE_PREFIX = "seed-sqlite:"


class TargetKind(StrEnum):
    """Which backend a target string names."""

    MEMORY = "memory"
    JSONL = "jsonl"
    SEED_SQLITE = "seed-sqlite"
    SQL = "sql"


@dataclass(frozen=True)
class Target:
    """A parsed target: the backend and where its data lives.

    Attributes:
        kind: The backend.
        path: The folder or file, for JSONL and seed SQLite targets.
        url: The database URL, for SQL targets.

    """

    kind: TargetKind
    path: Path | None = None
    url: URL | None = None

    @property
    def sqlite_file(self) -> Path | None:
        """The database file of a SQLite URL (``None`` for in-memory SQLite and other kinds)."""
        if self.url is None or self.url.get_backend_name() != "sqlite":
            return None
        database = self.url.database
        if database in (None, "", ":memory:") or database.startswith("file:"):
            return None
        return Path(database)

    def same_store(self, other: Target) -> bool:
        """Whether two targets name the same store (paths compared once resolved).

        A seed-era SQLite file read as ``seed-sqlite:PATH`` and written as ``sqlite:///PATH``
        are different stores in one file (the seed's tables and the current ones), which is
        how a seed file is upgraded in place.
        """
        if self.kind is not other.kind:
            return False
        mine = self.path or self.sqlite_file
        theirs = other.path or other.sqlite_file
        if mine is not None and theirs is not None:
            return mine.resolve() == theirs.resolve()
        return self.kind is not TargetKind.MEMORY and str(self) == str(other)

    def __str__(self) -> str:
        if self.kind is TargetKind.MEMORY:
            return MEMORY_PREFIX
        if self.kind is TargetKind.SQL and self.url is not None:
            return shown_url(self.url)
        return f"{self.kind.value}:{self.path}"


def parse_target(text: str) -> Target:
    """Parse a target string (see the module docstring for the forms).

    Raises:
        InvalidInput: If the string names no store, or a bare path that does not exist.

    """
    if not text.strip():
        # Not the current folder as a JSONL store: `--url "$UNSET"` in a script means a
        # mistake, not a store.
        raise InvalidInput(
            "an empty URL names no store: give one, or leave --url out for "
            "$PURPOSE_AGENT_DB_URL, else sqlite:///purpose_agent.db"
        )
    if text in ("memory", MEMORY_PREFIX):
        return Target(TargetKind.MEMORY)
    prefixes = ((JSONL_PREFIX, TargetKind.JSONL), (SEED_SQLITE_PREFIX, TargetKind.SEED_SQLITE))
    for prefix, kind in prefixes:
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            if not rest:
                raise InvalidInput(f"{text!r} names no path: write {prefix}PATH")
            return Target(kind, path=Path(rest))
    if "://" in text:
        return Target(TargetKind.SQL, url=parse_url(text))
    path = Path(text)
    if path.is_dir():
        return Target(TargetKind.JSONL, path=path)
    if path.is_file():
        return Target(TargetKind.SQL, url=URL.create("sqlite", database=str(path)))
    raise InvalidInput(
        f"{text!r} is neither a database URL nor an existing folder or file; write "
        f"{JSONL_PREFIX}PATH for a new JSONL folder or sqlite:///PATH for a new SQLite file"
    )


def require_sqlite_directory(target: Target) -> None:
    """Refuse a SQLite file whose directory does not exist, naming both.

    SQLite itself says only ``unable to open database file``, which does not tell a user that
    the path is the problem, nor which part of it.

    Raises:
        InvalidInput: The target is a SQLite file in a directory that does not exist.

    """
    file = target.sqlite_file
    if file is not None:
        require_directory(file)


def open_store(
    target: str | Target, *, create: bool = True, read_only: bool = False
) -> Checkpointer:
    """Open the store a target names.

    Args:
        target: A target string or a parsed :class:`Target`.
        create: Whether the store may be created or its schema upgraded. Commands that only
            read or delete pass ``False``: a missing file or folder is then an error, and a SQL
            schema that is behind raises ``SchemaNotCurrent`` with the command to fix it,
            instead of being changed by a command that was not asked to.
        read_only: Whether the caller only reads. A JSONL folder is then opened through
            :class:`~purpose_agent.legacy.jsonl.SeedJSONLReader`, which also maps the seed's
            snapshots and refuses writes; otherwise it is the
            :class:`~purpose_agent.stores.jsonl.JSONLCheckpointer` itself.

    Returns:
        The store. A seed-era SQLite file opened with ``create=False`` is a read-only
        :class:`~purpose_agent.legacy.sqlite.SeedSQLiteReader`; with ``create=True`` the
        current schema is added beside the seed's tables, which stay untouched.

    Raises:
        InvalidInput: A malformed target, a missing file or folder with ``create=False``, or
            a SQLite file in a directory that does not exist.
        SchemaNotCurrent: The SQL schema is not at head and ``create`` is false.
        StoreUnavailable: The database cannot be reached.

    """
    parsed = parse_target(target) if isinstance(target, str) else target
    if parsed.kind is TargetKind.MEMORY:
        return InMemoryCheckpointer()
    if parsed.kind is TargetKind.JSONL:
        assert parsed.path is not None  # set by parse_target for this kind
        if not create and not parsed.path.is_dir():
            raise InvalidInput(f"no JSONL folder at {parsed.path}")
        if read_only:
            return SeedJSONLReader(parsed.path)
        return JSONLCheckpointer(parsed.path)
    if parsed.kind is TargetKind.SEED_SQLITE:
        assert parsed.path is not None  # set by parse_target for this kind
        return SeedSQLiteReader(parsed.path)
    assert parsed.url is not None  # set by parse_target for this kind
    file = parsed.sqlite_file
    if file is not None:
        require_sqlite_directory(parsed)
        if not create and not file.is_file():
            raise InvalidInput(
                f"no database at {file}; `{upgrade_command(parsed.url)}` creates an empty one, "
                f"`purpose-agent demo --url {shlex.quote(str(parsed))}` one with a run in it"
            )
        if not create and file.is_file() and is_seed_sqlite(file):
            return SeedSQLiteReader(file)
    # A destination may be the seed file itself, its runs imported in place.
    return SQLCheckpointer(parsed.url, migrate=create, allow_seed_tables=create)


def describe(store: Checkpointer) -> str:
    """Name a store for people: its URL, folder or file."""
    if isinstance(store, SQLCheckpointer):
        return store.url
    if isinstance(store, JSONLCheckpointer | SeedJSONLReader):
        return f"{JSONL_PREFIX}{store.base_dir}"
    if isinstance(store, SeedSQLiteReader):
        return f"{SEED_SQLITE_PREFIX}{store.path}"
    if isinstance(store, InMemoryCheckpointer):
        return MEMORY_PREFIX
    return repr(store)
