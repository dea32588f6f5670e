"""A read-only view of a SQLite file the seed's ``SQLiteCheckpointer`` wrote.

The seed kept two tables, ``events`` (no unique key on ``(run_id, seq)``) and ``snapshots`` (one
row per run, no ``seq``). This source reads them through the checkpointer protocol so that
``purpose-agent copy`` and ``purpose-agent runs`` work on them like on any store; every write
is refused, because the point is to move the data into a current store, not to keep writing
the old format.
"""

from __future__ import annotations

import itertools
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    Float,
    Integer,
    String,
    Text,
    and_,
    cast,
    column,
    create_engine,
    func,
    inspect,
    or_,
    pool,
    select,
    table,
    union_all,
)
from sqlalchemy.exc import SQLAlchemyError

from purpose_agent.codec import decode
from purpose_agent.db.engine import read_only_query
from purpose_agent.db.migrate import SEED_TABLES, VERSION_TABLE
from purpose_agent.errors import CorruptRecord, InvalidInput, translated
from purpose_agent.legacy.mapping import map_seed_event, map_seed_state
from purpose_agent.legacy.read_only import LegacyReader
from purpose_agent.protocol import Recovery
from purpose_agent.records import check_limit, check_run_id, check_since
from purpose_agent.runtime.events import PAEvent
from purpose_agent.runtime.state import RunState

T = TypeVar("T")


_events = table(
    "events",
    column("id", Integer),
    column("run_id", String),
    column("seq", Integer),
    column("ts", Float),
    column("kind", String),
    column("lane_id", String),
    column("data", Text),
    column("created_at", Float),
)
_snapshots = table(
    "snapshots", column("run_id", String), column("state", Text), column("updated_at", Float)
)
_PAGE = 1000


def _read_only_engine(path: Path) -> Engine:
    # A URI with mode=ro: reading an old file must never create, migrate or lock it for writing.
    query = {name: value for name, value in read_only_query(path).items() if name != "uri"}
    uri = f"{path.resolve().as_uri()}?{urllib.parse.urlencode(query)}"
    return create_engine(
        "sqlite://",
        creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False),
        poolclass=pool.NullPool,
    )


def sqlite_tables(path: Path) -> set[str]:
    """Return the names of the tables in a SQLite file, opened read-only.

    Raises:
        InvalidInput: If the file is not a SQLite database.

    """
    engine = _read_only_engine(path)
    try:
        return set(inspect(engine).get_table_names())
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        raise InvalidInput(f"{path} is not a readable SQLite database: {cause}") from exc
    finally:
        engine.dispose()


def is_seed_sqlite(path: Path) -> bool:
    """Whether a SQLite file holds the seed's tables and was never migrated by this package."""
    tables = sqlite_tables(path)
    return tables >= SEED_TABLES and VERSION_TABLE not in tables


class SeedSQLiteReader(LegacyReader):
    """The runs of a seed-era SQLite file, read through the checkpointer protocol.

    Events are read page by page (keyset on ``seq`` and the row id, so the seed's duplicate
    rows come out too and the destination decides whether they are retries or conflicts);
    snapshots are mapped with :func:`~purpose_agent.legacy.mapping.map_seed_state`, which counts in
    :attr:`notes` whatever it could not carry over exactly.

    Args:
        path: The seed's database file.

    Raises:
        InvalidInput: If the file does not exist or lacks the seed's tables.

    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InvalidInput(f"no seed SQLite file at {self.path}")
        missing = SEED_TABLES - sqlite_tables(self.path)
        if missing:
            raise InvalidInput(
                f"{self.path} has no seed-era table {', '.join(sorted(missing))}; "
                "is it a current store (use sqlite:///PATH)?"
            )
        super().__init__()
        self._engine = _read_only_engine(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def _query(self, action: str, operation: Callable[[], T]) -> T:
        with translated(action, f"seed file {self.path}", SQLAlchemyError):
            return operation()

    # -- reads ----------------------------------------------------------------------------

    def _page(self, run_id: str, since_seq: int, after: tuple[int, int] | None) -> list[Any]:
        cols = (_events.c.seq, _events.c.id, _events.c.kind, _events.c.ts, _events.c.lane_id)
        stmt = select(*cols, _events.c.data).where(_events.c.run_id == run_id)
        if after is None:
            stmt = stmt.where(_events.c.seq > since_seq)
        else:
            seq, row_id = after
            stmt = stmt.where(
                or_(_events.c.seq > seq, and_(_events.c.seq == seq, _events.c.id > row_id))
            )
        stmt = stmt.order_by(_events.c.seq, _events.c.id).limit(_PAGE)

        def fetch() -> list[Any]:
            with self._engine.connect() as conn:
                return list(conn.execute(stmt))

        return self._query("reading events", fetch)

    def _event(self, run_id: str, row: Any) -> PAEvent:
        seq, _row_id, kind, ts, lane_id, text = row
        try:
            record = decode(text)
        except (ValueError, TypeError) as exc:
            raise CorruptRecord(run_id, seq, f"seed event is not JSON: {exc}") from exc
        columns = {"kind": kind, "ts": ts, "lane_id": lane_id}
        return map_seed_event(run_id, seq, record, columns, self.notes)

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream the run's events with ``seq > since_seq``, a page per query."""
        check_run_id(run_id)
        check_since(since_seq)
        return self._iterate(run_id, since_seq)

    def _iterate(self, run_id: str, since_seq: int) -> Iterator[PAEvent]:
        after: tuple[int, int] | None = None
        while True:
            page = self._page(run_id, since_seq, after)
            for row in page:
                yield self._event(run_id, row)
            if len(page) < _PAGE:
                return
            after = (page[-1][0], page[-1][1])

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        """Return events with ``seq > since_seq``, at most ``limit`` (duplicates included)."""
        check_since(since_seq, limit)
        return list(itertools.islice(self.iter_events(run_id, since_seq), limit))

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the run's snapshot mapped onto :class:`RunState`, or ``None``."""
        check_run_id(run_id)
        stmt = select(_snapshots.c.state).where(_snapshots.c.run_id == run_id)

        def fetch() -> Any:
            with self._engine.connect() as conn:
                return conn.execute(stmt).scalar()

        text = self._query("reading a snapshot", fetch)
        if text is None:
            return None
        try:
            record = decode(text)
        except (ValueError, TypeError) as exc:
            raise CorruptRecord(run_id, None, f"seed snapshot is not JSON: {exc}") from exc
        return map_seed_state(run_id, record, self.notes)

    def recover(self, run_id: str) -> Recovery | None:
        """Return the mapped snapshot and the events after its ``seq`` (0 when it has none)."""
        state = self.load_latest(run_id)
        events = self.list_events(run_id, state.seq if state is not None else 0)
        if state is None and not events:
            return None
        return Recovery(state, events)

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Return run ids with events or a snapshot, most recently written first.

        The seed stamped events with whole seconds (as text) and snapshots with float
        seconds; both are read as numbers so that the two compare.
        """
        check_limit(limit)
        check_limit(offset, "offset")
        written = union_all(
            select(_events.c.run_id, cast(_events.c.created_at, Float).label("at")),
            select(_snapshots.c.run_id, cast(_snapshots.c.updated_at, Float).label("at")),
        ).subquery()
        last = func.max(written.c.at)
        stmt = (
            select(written.c.run_id)
            .group_by(written.c.run_id)
            .order_by(last.desc(), written.c.run_id)
            .offset(offset)
        )
        if limit is not None:
            stmt = stmt.limit(limit)

        def fetch() -> list[str]:
            with self._engine.connect() as conn:
                return [str(run_id) for run_id in conn.execute(stmt).scalars()]

        return self._query("listing runs", fetch)

    # -- writes are refused by LegacyReader ----------------------------------------------

    def write_refusal(self) -> str:
        """Point at the command that moves the runs into a store that takes writes."""
        return (
            f"{self.path} is a seed-era SQLite file and is read-only here; move its runs into "
            f"a current store with `purpose-agent copy seed-sqlite:{self.path} DEST`"
        )

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Release the read-only engine."""
        self._engine.dispose()
