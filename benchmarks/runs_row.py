"""What a single append pays for the runs table, and what other layouts would pay.

Every append writes its event and moves its run's row in ``pa_runs`` (``updated_ns`` for
``list_runs``' newest-first order, ``last_seq`` for appends that let the store pick the seq).
This study runs the same single-event append, committed, on the raw driver against tables
laid out several ways, side by side in one database, in interleaved rounds so that the
machine's noise hits every layout alike:

- ``events only``: the raw baseline, an events table keyed by ``(run_id, seq)`` and nothing else;
- ``current``: the store's schema at revision 0002 (the event key's unique index, the runs row
  with its ``updated_ns`` and ``(group_id, updated_ns)`` indexes), event and run row in one
  transaction (SQLite) or one statement (Postgres), as the store writes them;
- ``partial indexes``: the same, with the key index and the group index holding only rows that
  have a key or a group (``WHERE ... IS NOT NULL``), so an unkeyed event in an ungrouped run
  does not touch them;
- ``partial + without rowid`` (SQLite): the events and runs tables clustered on their primary
  keys, so a row is one b-tree entry instead of a table entry and a key index entry;
- ``partial + runs without rowid`` (SQLite): only the small runs rows clustered;
- ``run row once``: the runs row only inserted, never moved; what the store would pay if it
  did not keep ``updated_ns``/``last_seq`` per append (not a design the contract allows:
  ``list_runs`` is newest-written first);
- ``no updated index`` (Postgres): the runs row moved but ``updated_ns`` not indexed, so the
  update can be HOT; ``list_runs`` would then sort the whole table.

Usage: ``python -m benchmarks.runs_row [--seconds 2] [--backends sqlite,postgres]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

DATA = json.dumps({"tool": "search", "args": {"q": "x" * 80}, "n": 1})

_SQLITE_EVENTS = (
    "CREATE TABLE e (run_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, "
    "ts REAL NOT NULL, lane_id TEXT NOT NULL, data TEXT NOT NULL, key TEXT, "
    "PRIMARY KEY (run_id, seq))"
)
_SQLITE_RUNS = (
    "CREATE TABLE r (run_id TEXT PRIMARY KEY, created_ns INTEGER NOT NULL, "
    "updated_ns INTEGER NOT NULL, last_seq INTEGER NOT NULL, group_id TEXT)"
)
_FULL_INDEXES = [
    "CREATE UNIQUE INDEX e_key ON e (run_id, key)",
    "CREATE INDEX r_updated ON r (updated_ns)",
    "CREATE INDEX r_group ON r (group_id, updated_ns)",
]
_PARTIAL_INDEXES = [
    "CREATE UNIQUE INDEX e_key ON e (run_id, key) WHERE key IS NOT NULL",
    "CREATE INDEX r_updated ON r (updated_ns)",
    "CREATE INDEX r_group ON r (group_id, updated_ns) WHERE group_id IS NOT NULL",
]

SQLITE_LAYOUTS: dict[str, list[str]] = {
    "events only": [_SQLITE_EVENTS],
    "current": [_SQLITE_EVENTS, _SQLITE_RUNS, *_FULL_INDEXES],
    "partial indexes": [_SQLITE_EVENTS, _SQLITE_RUNS, *_PARTIAL_INDEXES],
    "partial + without rowid": [
        _SQLITE_EVENTS + " WITHOUT ROWID",
        _SQLITE_RUNS + " WITHOUT ROWID",
        *_PARTIAL_INDEXES,
    ],
    "partial + runs without rowid": [
        _SQLITE_EVENTS,
        _SQLITE_RUNS + " WITHOUT ROWID",
        *_PARTIAL_INDEXES,
    ],
    "run row once": [_SQLITE_EVENTS, _SQLITE_RUNS, *_FULL_INDEXES],
}

_SQLITE_RUN_UPSERT = (
    "INSERT INTO r VALUES (?, ?, ?, ?, NULL) ON CONFLICT (run_id) DO UPDATE SET "
    "updated_ns = excluded.updated_ns, last_seq = max(r.last_seq, excluded.last_seq)"
)
_SQLITE_RUN_ONCE = "INSERT INTO r VALUES (?, ?, ?, ?, NULL) ON CONFLICT (run_id) DO NOTHING"


def _sqlite_appender(path: str, layout: str) -> Callable[[int], None]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for ddl in SQLITE_LAYOUTS[layout]:
        conn.execute(ddl)
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    execute = conn.execute
    runs = (
        None
        if layout == "events only"
        else (_SQLITE_RUN_ONCE if layout == "run row once" else _SQLITE_RUN_UPSERT)
    )

    def append(seq: int) -> None:
        now = time.time_ns()
        execute("BEGIN IMMEDIATE")
        execute(
            "INSERT INTO e VALUES (?, ?, 'tool_call', 1.0, 'main', ?, NULL)", (run_id, seq, DATA)
        )
        if runs is not None:
            execute(runs, (run_id, now, now, seq))
        execute("COMMIT")

    return append


PG_TABLES = {
    "events": (
        "CREATE TABLE {s}.e (run_id VARCHAR(255) NOT NULL, seq BIGINT NOT NULL, "
        "kind VARCHAR(64) NOT NULL, ts DOUBLE PRECISION NOT NULL, lane_id VARCHAR(255) NOT NULL, "
        "data JSONB NOT NULL, key VARCHAR(255), PRIMARY KEY (run_id, seq))"
    ),
    "runs": (
        "CREATE TABLE {s}.r (run_id VARCHAR(255) PRIMARY KEY, created_ns BIGINT NOT NULL, "
        "updated_ns BIGINT NOT NULL, last_seq BIGINT NOT NULL, group_id VARCHAR(255))"
    ),
}

PG_LAYOUTS: dict[str, list[str]] = {
    "events only": [PG_TABLES["events"]],
    "current": [
        PG_TABLES["events"],
        "CREATE UNIQUE INDEX ON {s}.e (run_id, key)",
        PG_TABLES["runs"],
        "CREATE INDEX ON {s}.r (updated_ns)",
        "CREATE INDEX ON {s}.r (group_id, updated_ns)",
    ],
    "partial indexes": [
        PG_TABLES["events"],
        "CREATE UNIQUE INDEX ON {s}.e (run_id, key) WHERE key IS NOT NULL",
        PG_TABLES["runs"],
        "CREATE INDEX ON {s}.r (updated_ns)",
        "CREATE INDEX ON {s}.r (group_id, updated_ns) WHERE group_id IS NOT NULL",
    ],
    "no updated index": [
        PG_TABLES["events"],
        "CREATE UNIQUE INDEX ON {s}.e (run_id, key) WHERE key IS NOT NULL",
        PG_TABLES["runs"] + " WITH (fillfactor = 70)",
        "CREATE INDEX ON {s}.r (group_id, updated_ns) WHERE group_id IS NOT NULL",
    ],
    "run row once": [
        PG_TABLES["events"],
        "CREATE UNIQUE INDEX ON {s}.e (run_id, key)",
        PG_TABLES["runs"],
        "CREATE INDEX ON {s}.r (updated_ns)",
        "CREATE INDEX ON {s}.r (group_id, updated_ns)",
    ],
}

_PG_EVENT = (
    "INSERT INTO {s}.e VALUES (%(run)s, %(seq)s, 'tool_call', 1.0, 'main', %(data)s::jsonb, NULL)"
)
_PG_EVENT_AND_RUN = (
    "WITH ev AS (" + _PG_EVENT + " RETURNING run_id) "
    "INSERT INTO {s}.r SELECT run_id, %(now)s, %(now)s, %(seq)s, NULL FROM ev "
    "ON CONFLICT (run_id) DO {action}"
)
_PG_MOVE = (
    "UPDATE SET updated_ns = excluded.updated_ns, "
    "last_seq = GREATEST({s}.r.last_seq, excluded.last_seq)"
)


def _postgres_appender(dsn: str, layout: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    schema = f"rr_{uuid.uuid4().hex[:10]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    for ddl in PG_LAYOUTS[layout]:
        conn.execute(ddl.format(s=schema))
    if layout == "events only":
        sql = _PG_EVENT.format(s=schema)
    else:
        action = "NOTHING" if layout == "run row once" else _PG_MOVE.format(s=schema)
        sql = _PG_EVENT_AND_RUN.format(s=schema, action=action)
    run_id = f"run-{uuid.uuid4().hex[:12]}"
    execute = conn.execute

    def append(seq: int) -> None:
        execute(sql, {"run": run_id, "seq": seq, "data": DATA, "now": time.time_ns()}, prepare=True)

    def drop() -> None:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()

    return append, drop


def _measure(appenders: dict[str, Callable[[int], None]], seconds: float) -> dict[str, Any]:
    """Interleaved rounds of 50 appends per layout; events/s per layout, median of rounds."""
    rates: dict[str, list[float]] = {name: [] for name in appenders}
    seqs = dict.fromkeys(appenders, 0)
    deadline = time.perf_counter() + seconds * len(appenders)
    while time.perf_counter() < deadline:
        for name, append in appenders.items():
            start = time.perf_counter()
            for _ in range(50):
                seqs[name] += 1
                append(seqs[name])
            rates[name].append(50 / (time.perf_counter() - start))
    base = statistics.median(rates["events only"])
    return {
        name: {
            "events_per_s": round(statistics.median(r)),
            "of_events_only": round(statistics.median(r) / base, 2),
        }
        for name, r in rates.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per layout")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get(
            "PURPOSE_AGENT_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as folder:
            appenders = {
                name: _sqlite_appender(os.path.join(folder, f"{i}.db"), name)
                for i, name in enumerate(SQLITE_LAYOUTS)
            }
            results["sqlite"] = _measure(appenders, args.seconds)
    if "postgres" in args.backends:
        built = {name: _postgres_appender(args.postgres_dsn, name) for name in PG_LAYOUTS}
        try:
            results["postgres"] = _measure({n: a for n, (a, _) in built.items()}, args.seconds)
        finally:
            for _, drop in built.values():
                drop()
    for backend, layouts in results.items():
        print(f"== {backend}: single committed append, one event ==")
        for name, figures in layouts.items():
            print(
                f"  {name:<30} {figures['events_per_s']:>7,}/s  "
                f"{figures['of_events_only']:.2f}x events only"
            )


if __name__ == "__main__":
    main()
