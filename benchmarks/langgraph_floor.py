"""``python -m benchmarks.langgraph_floor``: each SQLite saver's SQL, with no Python above it.

``benchmarks.langgraph_savers`` times ``PurposeAgentSaver`` against LangGraph's ``SqliteSaver``
call for call. This study asks how fast each could be at best. Raw ``sqlite3`` runs exactly
the statements each saver sends for ``put``, ``put_writes`` and ``get_tuple`` (the latest),
with rows of the sizes each saver stores (taken from a real call of each), on one WAL file at
``synchronous=FULL`` (both savers' setting), in interleaved rounds; the savers' own calls run
in the same rounds for comparison. ``--synchronous NORMAL`` sets every connection to commit
without waiting for the disk: an fsync here takes 0.1 to 1 ms, varying more from one commit
to the next than the statements differ, and without it what is left is the work itself.

``SqliteSaver.put`` is one ``INSERT OR REPLACE`` into one table. The store's append also moves
the run's row (its last seq, which gives the next seq without a read, and its write time,
which orders ``list_runs``) and the event key's index, in one transaction. Where "ours, raw
SQL" is slower than "SqliteSaver, whole call", no saver built on the store's append can be
faster than ``SqliteSaver`` on that operation, whatever its Python costs. "cheapest append"
goes further: whatever layout a saver chose, each ``put_writes`` is at least one durable
append, and the cheapest one (one event, no key, to an existing run with no group) is timed
against ``SqliteSaver``'s whole ``put_writes``; the last line says which is faster.

Usage: ``python -m benchmarks.langgraph_floor [--rounds 2000] [--synchronous NORMAL]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.sqlite import SqliteSaver

from benchmarks.langgraph_savers import checkpoint_at
from purpose_agent import SQLCheckpointer
from purpose_agent.integrations.langgraph import PurposeAgentSaver

OPS = ("put", "put_writes", "get_tuple_latest")
SIDES = (
    "ours, raw SQL",
    "cheapest append, raw",
    "SqliteSaver, raw SQL",
    "PurposeAgentSaver",
    "SqliteSaver",
)

# The store's statements for an append with keys to a grouped run (see
# purpose_agent.db.queries: advance_for_append, insert_keyed, events_in).
_ADVANCE = (
    "INSERT INTO pa_runs (run_id, created_ns, updated_ns, last_seq, group_id) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
    "updated_ns = excluded.updated_ns, last_seq = (pa_runs.last_seq + excluded.last_seq), "
    "group_id = coalesce(excluded.group_id, pa_runs.group_id) RETURNING last_seq"
)
_INSERT = (
    'INSERT INTO pa_events (run_id, seq, kind, ts, lane_id, data, "key") '
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_NEWEST = (
    "SELECT seq, kind, ts, lane_id, data FROM pa_events "
    "WHERE run_id = ? AND seq > 0 ORDER BY seq DESC LIMIT 1"
)
_WHOLE = "SELECT seq, kind, ts, lane_id, data FROM pa_events WHERE run_id = ? ORDER BY seq"
# SqliteSaver's statements (langgraph.checkpoint.sqlite).
_THEIR_PUT = (
    "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
    "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# The columns of a pending write after its key, as SqliteSaver's release writes them (those
# before 3.1 have no task_path).
_WRITE_COLUMNS = ("task_id", "task_path", "idx", "channel", "type", "value")
_THEIR_LATEST = (
    "SELECT thread_id, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata "
    "FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
    "ORDER BY checkpoint_id DESC LIMIT 1"
)
_THEIR_PENDING = (
    "SELECT task_id, channel, type, value FROM writes WHERE thread_id = ? AND "
    "checkpoint_ns = ? AND checkpoint_id = ? ORDER BY task_id, idx"
)


class SaverCalls:
    """One saver's own calls on its own thread."""

    def __init__(self, saver: Any, thread_id: str) -> None:
        self.saver = saver
        self.thread_id = thread_id
        self.parent: str | None = None
        self.last: dict[str, Any] | None = None
        self.n = 0

    def put(self) -> None:
        self.n += 1
        configurable: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": ""}
        if self.parent is not None:
            configurable["checkpoint_id"] = self.parent
        checkpoint = checkpoint_at(self.n)
        versions = dict(checkpoint["channel_versions"])
        self.last = self.saver.put(
            {"configurable": configurable},
            checkpoint,
            {"source": "loop", "step": self.n, "parents": {}},
            versions,
        )
        self.parent = checkpoint["id"]

    def put_writes(self) -> None:
        assert self.last is not None
        self.saver.put_writes(
            self.last, [("messages", f"reply {self.n}"), ("step", self.n + 1)], f"task-{self.n}"
        )

    def get_tuple_latest(self) -> None:
        found = self.saver.get_tuple(
            {"configurable": {"thread_id": self.thread_id, "checkpoint_ns": ""}}
        )
        assert found is not None


class OurSQL:
    """The store's statements for the saver's calls, on a raw connection."""

    def __init__(self, raw: sqlite3.Connection, store_file: sqlite3.Connection) -> None:
        self.raw = raw
        # A checkpoint event and a pending write event exactly as the saver stored them.
        checkpoint_run, group = store_file.execute(
            "SELECT run_id, group_id FROM pa_runs WHERE run_id LIKE 'lg:%' LIMIT 1"
        ).fetchone()
        self.checkpoint = store_file.execute(
            "SELECT kind, ts, lane_id, data FROM pa_events WHERE run_id = ?", (checkpoint_run,)
        ).fetchone()
        writes_run = store_file.execute(
            "SELECT run_id FROM pa_runs WHERE run_id LIKE 'lgw:%' LIMIT 1"
        ).fetchone()[0]
        self.writes = store_file.execute(
            "SELECT kind, ts, lane_id, data, key FROM pa_events WHERE run_id = ? ORDER BY seq",
            (writes_run,),
        ).fetchall()
        self.group = f"{group}-floor"
        self.run_id = f"{checkpoint_run}-floor"
        self.writes_prefix = f"{writes_run}-floor-"
        self.n = 0

    def put(self) -> None:
        self.n += 1
        execute, now = self.raw.execute, time.time_ns()
        execute("BEGIN IMMEDIATE")
        (last,) = execute(_ADVANCE, (self.run_id, now, now, 1, self.group)).fetchone()
        kind, ts, lane, data = self.checkpoint
        execute(_INSERT, (self.run_id, last, kind, ts, lane, data, f"floor-{self.n}"))
        execute("COMMIT")

    def put_writes(self) -> None:
        execute, now = self.raw.execute, time.time_ns()
        run_id = f"{self.writes_prefix}{self.n}"
        execute("BEGIN IMMEDIATE")
        (last,) = execute(_ADVANCE, (run_id, now, now, len(self.writes), self.group)).fetchone()
        first = last - len(self.writes) + 1
        self.raw.executemany(
            _INSERT, [(run_id, first + i, *row) for i, row in enumerate(self.writes)]
        )
        execute("COMMIT")

    def get_tuple_latest(self) -> None:
        assert self.raw.execute(_NEWEST, (self.run_id,)).fetchall()
        assert self.raw.execute(_WHOLE, (f"{self.writes_prefix}{self.n}",)).fetchall()


class CheapestSQL:
    """The least any saver built on the store's append can send for one durable write.

    Every ``put`` and every ``put_writes`` must be durable when it returns, so each is at least
    one append: here one event with no key, to a run that already exists and has no group
    (the fewest index entries an append moves), the row copied from a real checkpoint event.
    ``get_tuple_latest`` is the one statement that reads a run's newest event.
    """

    def __init__(self, raw: sqlite3.Connection, store_file: sqlite3.Connection) -> None:
        self.raw = raw
        checkpoint_run = store_file.execute(
            "SELECT run_id FROM pa_runs WHERE run_id LIKE 'lg:%' LIMIT 1"
        ).fetchone()[0]
        self.event = store_file.execute(
            "SELECT kind, ts, lane_id, data FROM pa_events WHERE run_id = ?", (checkpoint_run,)
        ).fetchone()
        self.run_id = "floor-cheapest"
        self.append()

    def append(self) -> None:
        execute, now = self.raw.execute, time.time_ns()
        execute("BEGIN IMMEDIATE")
        (last,) = execute(_ADVANCE, (self.run_id, now, now, 1, None)).fetchone()
        execute(_INSERT, (self.run_id, last, *self.event, None))
        execute("COMMIT")

    def put(self) -> None:
        self.append()

    def put_writes(self) -> None:
        self.append()

    def get_tuple_latest(self) -> None:
        assert self.raw.execute(_NEWEST, (self.run_id,)).fetchall()


class TheirSQL:
    """SqliteSaver's statements for the same calls, on a raw connection."""

    def __init__(self, raw: sqlite3.Connection, store_file: sqlite3.Connection) -> None:
        self.raw = raw
        self.checkpoint = store_file.execute(
            "SELECT type, checkpoint, metadata FROM checkpoints LIMIT 1"
        ).fetchone()
        present = {row[1] for row in store_file.execute("PRAGMA table_info(writes)")}
        columns = [column for column in _WRITE_COLUMNS if column in present]
        listed = ", ".join(columns)
        self.writes = store_file.execute(f"SELECT {listed} FROM writes ORDER BY idx").fetchall()
        self.insert_writes = (
            "INSERT OR REPLACE INTO writes (thread_id, checkpoint_ns, checkpoint_id, "
            f"{listed}) VALUES (?, ?, ?, {', '.join('?' for _ in columns)})"
        )
        self.thread_id = "floor"
        self.parent: str | None = None
        self.n = 0

    def put(self) -> None:
        self.n += 1
        checkpoint_id = str(uuid6(clock_seq=self.n))
        self.raw.execute("BEGIN")
        self.raw.execute(
            _THEIR_PUT, (self.thread_id, "", checkpoint_id, self.parent, *self.checkpoint)
        )
        self.raw.execute("COMMIT")
        self.parent = checkpoint_id

    def put_writes(self) -> None:
        self.raw.execute("BEGIN")
        self.raw.executemany(
            self.insert_writes, [(self.thread_id, "", self.parent, *row) for row in self.writes]
        )
        self.raw.execute("COMMIT")

    def get_tuple_latest(self) -> None:
        found = self.raw.execute(_THEIR_LATEST, (self.thread_id, "")).fetchone()
        assert found is not None
        assert self.raw.execute(_THEIR_PENDING, (self.thread_id, "", found[1])).fetchall()


def measure(path: Path, rounds: int, synchronous: str = "FULL") -> dict[str, dict[str, float]]:
    """Operations per second of each side, each operation timed alone, sides interleaved."""
    url = f"sqlite:///{path}"
    durability = "full" if synchronous == "FULL" else "normal"
    with SQLCheckpointer(url, durability=durability) as store:
        ours = SaverCalls(PurposeAgentSaver(store), "ours")
        theirs_connection = sqlite3.connect(path, check_same_thread=False)
        theirs_connection.execute(f"PRAGMA synchronous = {synchronous}")
        theirs = SaverCalls(SqliteSaver(theirs_connection), "theirs")
        theirs.saver.setup()
        for calls in (ours, theirs):  # one real call of each, whose rows the raw sides copy
            calls.put()
            calls.put_writes()
        raw = sqlite3.connect(path, isolation_level=None)
        raw.execute(f"PRAGMA synchronous = {synchronous}")
        raw.execute("PRAGMA busy_timeout = 60000")
        sides: dict[str, Any] = {
            "ours, raw SQL": OurSQL(raw, raw),
            "cheapest append, raw": CheapestSQL(raw, raw),
            "SqliteSaver, raw SQL": TheirSQL(raw, raw),
            "PurposeAgentSaver": ours,
            "SqliteSaver": theirs,
        }
        spent = {side: dict.fromkeys(OPS, 0.0) for side in SIDES}
        try:
            for n in range(rounds):
                order = SIDES if n % 2 == 0 else SIDES[::-1]
                for op in OPS:
                    for side in order:
                        call: Callable[[], None] = getattr(sides[side], op)
                        start = time.perf_counter()
                        call()
                        spent[side][op] += time.perf_counter() - start
        finally:
            raw.close()
            theirs_connection.close()
    return {
        side: {op: rounds / seconds if seconds else float("inf") for op, seconds in ops.items()}
        for side, ops in spent.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.langgraph_floor")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lgfloor") as folder:
        figures = measure(Path(folder) / "floor.db", args.rounds, args.synchronous)
    print(
        f"SQLite, WAL, synchronous={args.synchronous}, {args.rounds} rounds; operations per second"
    )
    print(f"{'':22}" + "".join(f"{op:>18}" for op in OPS))
    base = figures["SqliteSaver"]
    for side in SIDES:
        cells = "".join(
            f"{figures[side][op]:>10,.0f} {figures[side][op] / base[op]:5.2f}x" for op in OPS
        )
        print(f"{side:22}{cells}")
    print("(x: over SqliteSaver's whole call)")
    cheapest = figures["cheapest append, raw"]["put_writes"] / base["put_writes"]
    verdict = "slower" if cheapest < 1 else "faster"
    print(
        f"The cheapest durable append is {cheapest:.2f}x SqliteSaver's whole put_writes "
        f"({verdict}): "
        + (
            "no saver built on the store's append can be faster on put_writes."
            if cheapest < 1
            else "a saver built on the store's append could be faster on put_writes."
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
