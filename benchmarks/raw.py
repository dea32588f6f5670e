"""Raw-driver baselines: ``sqlite3`` and psycopg doing the same durable work as the store.

The baseline tables have the shape of the store's: events keyed by ``(run_id, seq)`` with the
kind, timestamp, lane and the payload as JSON text, and one snapshot row per run that a lower
``seq`` does not replace. They live beside the store's tables in the same database
(``raw_events`` and ``raw_snapshots``), so both sides share the disk, the server and its settings.

A baseline is the least a hand-written store could do for the same guarantee: take the same
``PAEvent`` objects, encode the payload with ``json.dumps``, commit; read with the primary-key
index and ``json.loads`` each payload. It does no validation and builds no ``PAEvent`` on reads.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from purpose_agent import PAEvent, RunState

EVENT_COLUMNS = "run_id, seq, kind, ts, lane_id, data"
_dumps = json.JSONEncoder(separators=(",", ":")).encode
_loads = json.loads

# Recovery in ONE statement (snapshot row first, then the tail after its seq): one statement
# reads one consistent view on both databases, with no transaction round trips around it.
RECOVER = (
    "SELECT 0 AS part, seq, NULL AS kind, NULL AS ts, NULL AS lane_id, state AS data "
    "FROM raw_snapshots WHERE run_id = {p} "
    "UNION ALL "
    "SELECT 1, seq, kind, ts, lane_id, data FROM raw_events WHERE run_id = {p} AND seq > "
    "COALESCE((SELECT seq FROM raw_snapshots WHERE run_id = {p}), 0) "
    "ORDER BY part, seq"
)

# The statements both drivers run, ``{p}`` their placeholder.
INSERT_EVENT = "INSERT INTO raw_events VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
UPSERT_SNAPSHOT = (
    "INSERT INTO raw_snapshots VALUES ({p}, {p}, {p}) ON CONFLICT (run_id) DO UPDATE SET "
    "seq = excluded.seq, state = excluded.state WHERE excluded.seq >= raw_snapshots.seq"
)
SNAPSHOT = "SELECT state FROM raw_snapshots WHERE run_id = {p}"
EVENTS_AFTER = (
    "SELECT seq, kind, ts, lane_id, data FROM raw_events "
    "WHERE run_id = {p} AND seq > {p} ORDER BY seq"
)

Row = tuple[str, int, str, float, str, str]
Loaded = tuple[int, str, float, str, Any]


def row_of(event: PAEvent) -> Row:
    """The columns of an event, its payload encoded as JSON text."""
    return (event.run_id, event.seq, event.kind.value, event.ts, event.lane_id, _dumps(event.data))


def _recovered(rows: list[Any]) -> tuple[Any, list[Loaded]]:
    state = None
    if rows and rows[0][0] == 0:
        state = _loads(rows[0][5])
        rows = rows[1:]
    return state, [(r[1], r[2], r[3], r[4], _loads(r[5])) for r in rows]


class _RawReads:
    """The reads both drivers run alike: one statement each, payloads decoded."""

    conn: Any
    _snapshot_sql: str
    _events_sql: str
    _recover_sql: str
    _no_limit: int | None  # what ``LIMIT`` takes for every row

    def load_latest(self, run_id: str) -> Any:
        """The decoded snapshot of a run, or ``None``."""
        row = self.conn.execute(self._snapshot_sql, (run_id,)).fetchone()
        return None if row is None else _loads(row[0])

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[Loaded]:
        """Events after ``since_seq`` by the primary-key index, payloads decoded."""
        rows = self.conn.execute(
            self._events_sql, (run_id, since_seq, self._no_limit if limit is None else limit)
        ).fetchall()
        return [(r[0], r[1], r[2], r[3], _loads(r[4])) for r in rows]

    def recover(self, run_id: str) -> tuple[Any, list[Loaded]]:
        """The snapshot and the events after it, in one statement."""
        rows = self.conn.execute(self._recover_sql, (run_id, run_id, run_id)).fetchall()
        return _recovered(rows)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


class RawSQLite(_RawReads):
    """``sqlite3`` on one connection, at the journal mode and synchronous level given."""

    name = "sqlite3"
    _insert_sql = INSERT_EVENT.format(p="?")
    _upsert_sql = UPSERT_SNAPSHOT.format(p="?")
    _snapshot_sql = SNAPSHOT.format(p="?")
    _iter_sql = EVENTS_AFTER.format(p="?")
    _events_sql = _iter_sql + " LIMIT ?"
    _recover_sql = RECOVER.format(p="?")
    _no_limit = -1
    batch_paths: Sequence[str] = ("executemany",)

    def __init__(self, path: str, journal_mode: str = "wal", synchronous: str | int = "FULL"):
        self.path = path
        self.journal_mode = journal_mode
        self.synchronous = synchronous
        # Autocommit at the driver level; every write below says BEGIN IMMEDIATE and COMMIT
        # itself, so each commit is exactly one durable transaction and concurrent writers wait
        # for the write lock up front (as the store does) instead of failing to upgrade a read.
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=60)
        self.conn.execute(f"PRAGMA journal_mode={journal_mode}")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        self.conn.execute("PRAGMA busy_timeout=60000")

    def clone(self) -> RawSQLite:
        """A new connection to the same file (one per writer thread)."""
        return RawSQLite(self.path, self.journal_mode, self.synchronous)

    def settings(self) -> dict[str, Any]:
        """The durability settings in force on this connection."""
        return {
            "journal_mode": self.conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self.conn.execute("PRAGMA synchronous").fetchone()[0],
        }

    def create_tables(self) -> None:
        """Create the baseline tables if they do not exist."""
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS raw_events (
                run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
                ts REAL NOT NULL, lane_id TEXT NOT NULL, data TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            );
            CREATE TABLE IF NOT EXISTS raw_snapshots (
                run_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL
            );
            """
        )

    # -- writes ---------------------------------------------------------------------------

    def insert_one(self, event: PAEvent) -> None:
        """One event, committed."""
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        execute(self._insert_sql, row_of(event))
        execute("COMMIT")

    def insert_many(self, events: Iterable[PAEvent]) -> None:
        """A batch in one transaction with ``executemany``."""
        rows = [row_of(e) for e in events]
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        self.conn.executemany(self._insert_sql, rows)
        execute("COMMIT")

    def step(self, events: Iterable[PAEvent], state: RunState) -> None:
        """A step: its events and the snapshot after it, in one transaction."""
        rows = [row_of(e) for e in events]
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        self.conn.executemany(self._insert_sql, rows)
        execute(
            self._upsert_sql,
            (state.run_id, state.seq, _dumps(state.to_dict())),
        )
        execute("COMMIT")

    def batch(self, path: str) -> Any:
        """The batch insert function named ``path``."""
        if path != "executemany":
            raise ValueError(path)
        return self.insert_many

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Upsert a snapshot; a lower ``seq`` than the stored one does not replace it."""
        text = _dumps(state.to_dict())
        execute = self.conn.execute
        execute("BEGIN IMMEDIATE")
        execute(
            self._upsert_sql,
            (run_id, state.seq, text),
        )
        execute("COMMIT")

    # -- reads ----------------------------------------------------------------------------

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[Loaded]:
        """Stream events; the sqlite3 cursor steps the statement row by row."""
        cursor = self.conn.execute(
            self._iter_sql,
            (run_id, since_seq),
        )
        for r in cursor:
            yield (r[0], r[1], r[2], r[3], _loads(r[4]))


class RawPostgres(_RawReads):
    """psycopg 3 on one autocommit connection (writes open a transaction only for batches)."""

    name = "psycopg"
    _insert_sql = INSERT_EVENT.format(p="%s")
    _upsert_sql = UPSERT_SNAPSHOT.format(p="%s")
    _snapshot_sql = SNAPSHOT.format(p="%s")
    _iter_sql = EVENTS_AFTER.format(p="%s")
    _events_sql = _iter_sql + " LIMIT %s"
    _recover_sql = RECOVER.format(p="%s")
    _no_limit = None
    batch_paths: Sequence[str] = ("copy", "executemany")

    def __init__(self, conninfo: str):
        import psycopg

        self.conninfo = conninfo
        self.conn = psycopg.connect(conninfo, autocommit=True)

    def clone(self) -> RawPostgres:
        """A new connection to the same database (one per writer thread)."""
        return RawPostgres(self.conninfo)

    def settings(self) -> dict[str, Any]:
        """The durability settings in force on this connection."""
        names = ("synchronous_commit", "fsync", "wal_sync_method", "full_page_writes")
        return {name: self.conn.execute(f"SHOW {name}").fetchone()[0] for name in names}

    def create_tables(self) -> None:
        """Create the baseline tables if they do not exist."""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_events ("
            " run_id VARCHAR(255) NOT NULL, seq BIGINT NOT NULL, kind VARCHAR(32) NOT NULL,"
            " ts DOUBLE PRECISION NOT NULL, lane_id VARCHAR(255) NOT NULL, data TEXT NOT NULL,"
            " PRIMARY KEY (run_id, seq))"
        )
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_snapshots ("
            " run_id VARCHAR(255) PRIMARY KEY, seq BIGINT NOT NULL, state TEXT NOT NULL)"
        )

    # -- writes ---------------------------------------------------------------------------

    def insert_one(self, event: PAEvent) -> None:
        """One event; an autocommit ``INSERT`` is its own committed transaction."""
        self.conn.execute(self._insert_sql, row_of(event))

    def insert_many(self, events: Iterable[PAEvent]) -> None:
        """A batch in one transaction with ``executemany`` (psycopg pipelines it)."""
        rows = [row_of(e) for e in events]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self._insert_sql, rows)

    def copy_many(self, events: Iterable[PAEvent]) -> None:
        """A batch in one transaction with ``COPY ... FROM STDIN``."""
        with (
            self.conn.transaction(),
            self.conn.cursor() as cur,
            cur.copy(f"COPY raw_events ({EVENT_COLUMNS}) FROM STDIN") as copy,
        ):
            for e in events:
                copy.write_row(row_of(e))

    def step(self, events: Iterable[PAEvent], state: RunState) -> None:
        """A step: its events and the snapshot after it, in one transaction."""
        rows = [row_of(e) for e in events]
        with self.conn.transaction(), self.conn.cursor() as cur:
            cur.executemany(self._insert_sql, rows)
            cur.execute(
                self._upsert_sql,
                (state.run_id, state.seq, _dumps(state.to_dict())),
            )

    def batch(self, path: str) -> Any:
        """The batch insert function named ``path``."""
        return {"copy": self.copy_many, "executemany": self.insert_many}[path]

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        """Upsert a snapshot; a lower ``seq`` than the stored one does not replace it."""
        self.conn.execute(
            self._upsert_sql,
            (run_id, state.seq, _dumps(state.to_dict())),
        )

    # -- reads ----------------------------------------------------------------------------

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[Loaded]:
        """Stream events through a server-side cursor, fetched 1,000 rows at a time."""
        with self.conn.transaction(), self.conn.cursor(name="raw_iter") as cur:
            cur.itersize = 1000
            cur.execute(
                self._iter_sql,
                (run_id, since_seq),
            )
            for r in cur:
                yield (r[0], r[1], r[2], r[3], _loads(r[4]))


Raw = RawSQLite | RawPostgres
