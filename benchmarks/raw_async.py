"""Naive raw asyncio writers: a connection each, one durable commit per step.

The asyncio counterparts of :class:`benchmarks.raw.RawSQLite` and :class:`RawPostgres`' ``step``,
with the same statements and durability settings, on aiosqlite and psycopg's async connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from benchmarks.raw import _dumps, row_of
from purpose_agent import PAEvent, RunState

_UPSERT = (
    "INSERT INTO raw_snapshots VALUES ({p}, {p}, {p}) ON CONFLICT (run_id) DO UPDATE SET "
    "seq = excluded.seq, state = excluded.state WHERE excluded.seq >= raw_snapshots.seq"
)


class RawAsyncSQLite:
    """aiosqlite on one connection, in autocommit; each step is BEGIN IMMEDIATE ... COMMIT."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, path: str, synchronous: str = "FULL") -> RawAsyncSQLite:
        import aiosqlite

        conn = await aiosqlite.connect(path, isolation_level=None, timeout=60)
        await conn.execute("PRAGMA journal_mode=wal")
        await conn.execute(f"PRAGMA synchronous={synchronous}")
        await conn.execute("PRAGMA busy_timeout=60000")
        return cls(conn)

    async def step(self, events: Iterable[PAEvent], state: RunState) -> None:
        rows = [row_of(e) for e in events]
        await self.conn.execute("BEGIN IMMEDIATE")
        await self.conn.executemany("INSERT INTO raw_events VALUES (?, ?, ?, ?, ?, ?)", rows)
        await self.conn.execute(
            _UPSERT.format(p="?"), (state.run_id, state.seq, _dumps(state.to_dict()))
        )
        await self.conn.execute("COMMIT")

    async def close(self) -> None:
        await self.conn.close()


class RawAsyncPostgres:
    """psycopg's async connection in autocommit; each step is one transaction."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, conninfo: str) -> RawAsyncPostgres:
        import psycopg

        return cls(await psycopg.AsyncConnection.connect(conninfo, autocommit=True))

    async def step(self, events: Iterable[PAEvent], state: RunState) -> None:
        rows = [row_of(e) for e in events]
        async with self.conn.transaction(), self.conn.cursor() as cur:
            await cur.executemany("INSERT INTO raw_events VALUES (%s, %s, %s, %s, %s, %s)", rows)
            await cur.execute(
                _UPSERT.format(p="%s"), (state.run_id, state.seq, _dumps(state.to_dict()))
            )

    async def close(self) -> None:
        await self.conn.close()
