"""``python -m benchmarks.partitions``: the hot calls as the event log grows, on both layouts.

For each layout of ``pa_events`` (one table, and hash partitions by run id) and each size, a
throwaway Postgres database is filled with that many events (``INSERT ... SELECT`` from
``generate_series``, runs of ``--run-size`` events with random-looking ids so that the measured
runs land all over the key space, a run row and a snapshot per run) and ``VACUUM ANALYZE``d.
Then, through the public API of one store per database:

* ``append``: one event appended to a run (``store.append(run, [event])``);
* ``step``: 7 events and a 1 KB snapshot appended together (``append(..., snapshot=)``);
* ``recover``: ``store.recover(run)`` on a run whose snapshot is followed by 100 events.

The databases are measured interleaved: each round times every operation on every database in
turn, the order rotated from round to round, so that the load of a shared machine falls on all
points alike. A figure is the median over rounds of each round's p50 (or p99); every round's
figures and the load average are kept in the JSON.

The sizes count bulk-loaded events; the measured runs add their own (a few thousand) on top.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from benchmarks.databases import DEFAULT_POSTGRES_URL, postgres_target
from benchmarks.machine import describe
from purpose_agent import NewEvent, RunState, SQLCheckpointer
from purpose_agent.db.partitions import events_layout, partition_events

DEFAULT_SIZES = (0, 1_000_000, 5_000_000, 10_000_000)
OPERATIONS = ("append", "step", "recover")
# Rows per INSERT ... SELECT while bulk-loading: one statement per chunk keeps each
# transaction (and its WAL) bounded.
LOAD_CHUNK = 1_000_000
PAYLOAD = "x" * 150
STATE = {"blob": "s" * 1000}
STEP_EVENTS = 7
TAIL = 100


@dataclass
class Point:
    """The figures of one layout at one size."""

    layout: str
    events: int
    loaded: int
    load_seconds: float
    rounds: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)

    def figure(self, operation: str, quantile: str) -> float:
        """The median over rounds of one quantile (``p50`` or ``p99``), in milliseconds."""
        return statistics.median(r[quantile] for r in self.rounds[operation])

    def to_json(self) -> dict[str, Any]:
        """The point as plain values."""
        return {
            "layout": self.layout,
            "events": self.events,
            "events_in_table": self.loaded,
            "load_seconds": self.load_seconds,
            "load_average": self.load_average,
            "operations": {
                name: {
                    "p50_ms": self.figure(name, "p50"),
                    "p99_ms": self.figure(name, "p99"),
                    "rounds": rounds,
                }
                for name, rounds in self.rounds.items()
            },
        }


def _quantiles(samples: Sequence[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {
        "p50": cuts[49] * 1000,
        "p99": cuts[98] * 1000,
        "mean": statistics.fmean(samples) * 1000,
        "n": float(len(samples)),
    }


def _timed(call: Callable[[], object], count: int) -> list[float]:
    taken = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        taken.append(time.perf_counter() - start)
    return taken


def _cycle(items: Sequence[str]) -> Iterator[str]:
    while True:
        yield from items


class Workload:
    """The measured runs of one size point, and the calls timed on them."""

    def __init__(self, store: SQLCheckpointer, size: int, runs: int) -> None:
        self.store = store
        tag = f"{size}-{uuid.uuid4().hex[:6]}"
        # Random ids: the measured runs sit among the bulk runs in the key order, not after them.
        self.append_runs = _cycle([f"a-{uuid.uuid4().hex}-{tag}" for _ in range(runs)])
        self.step_runs = _cycle([f"s-{uuid.uuid4().hex}-{tag}" for _ in range(runs)])
        recover_runs = [f"r-{uuid.uuid4().hex}-{tag}" for _ in range(runs)]
        for run_id in recover_runs:
            events = [NewEvent(kind="step_finished", data={"p": PAYLOAD}) for _ in range(TAIL)]
            store.append(run_id, events)
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=TAIL, data=STATE))
            store.append(run_id, events)
        self.recover_runs = _cycle(recover_runs)

    def append(self) -> None:
        """One event appended to the next measured run."""
        self.store.append(
            next(self.append_runs), [NewEvent(kind="tool_result", data={"p": PAYLOAD})]
        )

    def step(self) -> None:
        """Seven events and the state after them, in one transaction."""
        run_id = next(self.step_runs)
        events = [NewEvent(kind="step_finished", data={"p": PAYLOAD}) for _ in range(STEP_EVENTS)]
        self.store.append(run_id, events, snapshot=RunState(run_id=run_id, seq=0, data=STATE))

    def recover(self) -> None:
        """A snapshot and its 100-event tail, read in one statement."""
        recovered = self.store.recover(next(self.recover_runs))
        assert recovered is not None
        assert len(recovered.events) == TAIL


def _load(engine: sa.Engine, start: int, stop: int, run_size: int) -> None:
    """Bulk-load events ``[start, stop)``: position ``g`` is seq ``g % run_size + 1`` of a run."""
    now = time.time_ns() - 86_400 * 10**9  # a day old: the measured runs are newer
    for low in range(start, stop, LOAD_CHUNK):
        high = min(stop, low + LOAD_CHUNK)
        values = {"low": low, "high": high - 1, "per": run_size, "payload": PAYLOAD, "now": now}
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO pa_events (run_id, seq, kind, ts, lane_id, data)"
                    " SELECT 'bulk-' || md5((g / :per)::text), g % :per + 1, 'step_finished',"
                    "  1.7e9 + g * 0.001, 'main',"
                    "  '{\"i\": ' || g || ', \"p\": \"' || :payload || '\"}'"
                    " FROM generate_series(CAST(:low AS bigint), CAST(:high AS bigint)) AS g"
                ),
                values,
            )
            conn.execute(
                sa.text(
                    "INSERT INTO pa_runs (run_id, created_ns, updated_ns, last_seq)"
                    " SELECT 'bulk-' || md5(r::text), :now, :now + r,"
                    "  LEAST(:per, :high + 1 - r * :per)"
                    " FROM generate_series(CAST(:low AS bigint) / :per,"
                    "  CAST(:high AS bigint) / :per) AS r"
                    " ON CONFLICT (run_id) DO UPDATE SET last_seq = EXCLUDED.last_seq"
                ),
                values,
            )
            conn.execute(
                sa.text(
                    "INSERT INTO pa_snapshots (run_id, seq, state, written_ns)"
                    " SELECT 'bulk-' || md5(r::text), LEAST(:per, :high + 1 - r * :per) / 2,"
                    "  '{\"step\": ' || r || '}', :now + r"
                    " FROM generate_series(CAST(:low AS bigint) / :per,"
                    "  CAST(:high AS bigint) / :per) AS r"
                    " ON CONFLICT (run_id) DO UPDATE SET seq = EXCLUDED.seq"
                ),
                values,
            )
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as conn:
        # Statistics and the visibility map as a long-lived table would have them.
        conn.execute(sa.text("VACUUM (ANALYZE) pa_events, pa_runs, pa_snapshots"))
        conn.execute(sa.text("CHECKPOINT"))


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM pa_events")).scalar_one())


@dataclass
class Database:
    """One (layout, size) point: its throwaway database, the store on it and its workload."""

    point: Point
    store: SQLCheckpointer
    work: Workload
    info: dict[str, Any]

    def call(self, operation: str) -> Callable[[], None]:
        """The timed call of ``operation`` on this database."""
        calls: dict[str, Callable[[], None]] = {
            "append": self.work.append,
            "step": self.work.step,
            "recover": self.work.recover,
        }
        return calls[operation]


def _prepare(
    target_url: str, layout: str, size: int, options: argparse.Namespace
) -> tuple[Point, dict[str, Any]]:
    """Lay out and fill one throwaway database; its point (not yet measured) and description."""
    engine = sa.create_engine(target_url, poolclass=sa.pool.NullPool)
    try:
        SQLCheckpointer(target_url).close()  # migrates
        if layout == "partitioned":
            partition_events(engine, options.partitions)
        with engine.connect() as conn:
            shape = events_layout(conn)
            settings = {
                name: conn.execute(sa.text(f"SHOW {name}")).scalar()
                for name in ("shared_buffers", "synchronous_commit", "fsync")
            }
        started = time.perf_counter()
        _load(engine, 0, size, options.run_size)
        point = Point(layout, size, _count(engine), time.perf_counter() - started)
    finally:
        engine.dispose()
    return point, {**settings, "events_layout": shape.to_dict() if shape else None}


def measure(
    admin_url: str, options: argparse.Namespace, report: Callable[[str], None]
) -> tuple[list[Point], list[dict[str, Any]]]:
    """Fill one database per (layout, size), then measure them all, interleaved, round by round.

    Every round times each operation on every database in turn, the order rotated from round
    to round, so that a change in the load of the (shared) machine falls on every point alike
    rather than on whichever size happened to be measured then.

    Returns:
        The points, and a description of each database.

    """
    with contextlib.ExitStack() as stack:
        databases: list[Database] = []
        for layout in options.layouts:
            for size in options.sizes:
                target = stack.enter_context(postgres_target(admin_url))
                point, info = _prepare(target.store_url, layout, size, options)
                seconds = point.load_seconds
                report(f"{layout} {size:,}: loaded {point.loaded:,} events in {seconds:.0f} s")
                store = stack.enter_context(
                    SQLCheckpointer(target.store_url, durability=options.durability)
                )
                work = Workload(store, size, options.runs)
                databases.append(Database(point, store, work, {**target.info, **info}))
        for database in databases:
            for name in OPERATIONS:
                _timed(database.call(name), max(5, options.samples // 10))  # warm plans and cache
        for index in range(options.rounds):
            load = os.getloadavg()[0]
            shift = index % len(databases)
            order = databases[shift:] + databases[:shift]
            for name in OPERATIONS:
                for database in order:
                    taken = _timed(database.call(name), options.samples)
                    database.point.rounds.setdefault(name, []).append(_quantiles(taken))
            for database in databases:
                database.point.load_average.append(load)
            report(f"round {index + 1}/{options.rounds} done (load average {load:.1f})")
        return [d.point for d in databases], [
            {"layout": d.point.layout, "events": d.point.events, **d.info} for d in databases
        ]


def ratio(point: Point, base: Point, operation: str, quantile: str) -> float:
    """How ``point`` compares with ``base``: the median over rounds of the two in the same round.

    Both were measured within a minute of each other in every round, so the ratio of each round
    cancels most of the drift of a shared machine, which a ratio of two medians would not.
    """
    pairs = zip(point.rounds[operation], base.rounds[operation], strict=True)
    return statistics.median(mine[quantile] / theirs[quantile] for mine, theirs in pairs)


def table(points: Sequence[Point]) -> str:
    """A Markdown table: p50 and p99 in ms, each with its ratio to the empty database."""
    base = {p.layout: p for p in points if p.events == min(q.events for q in points)}
    head = "| layout | events | " + " | ".join(f"{name} p50 | {name} p99" for name in OPERATIONS)
    lines = [head + " |", "|" + "---|" * (2 + 2 * len(OPERATIONS))]
    for point in points:
        cells = [point.layout, f"{point.events:,}"]
        for name in OPERATIONS:
            for quantile in ("p50", "p99"):
                figure = point.figure(name, quantile)
                against = ratio(point, base[point.layout], name, quantile)
                cells.append(f"{figure:.2f} ({against:.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def points_from_json(document: dict[str, Any]) -> list[Point]:
    """The points of a run written with ``--out``, to print its table again."""
    points = []
    for item in document["points"]:
        point = Point(item["layout"], item["events"], item["events_in_table"], item["load_seconds"])
        point.load_average = list(item["load_average"])
        point.rounds = {name: list(op["rounds"]) for name, op in item["operations"].items()}
        points.append(point)
    return points


def _sizes(text: str) -> list[int]:
    return sorted({int(float(part)) for part in text.split(",") if part.strip()})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.partitions", description=__doc__)
    parser.add_argument(
        "--url",
        default=os.environ.get("PURPOSE_AGENT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="An admin URL of the Postgres server (a throwaway database is created on it).",
    )
    parser.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES))
    parser.add_argument("--layouts", default="plain,partitioned")
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument(
        "--samples", type=int, default=300, help="Calls per round, operation and database."
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--durability",
        choices=("full", "normal"),
        default="full",
        help="The store's durability: 'normal' turns synchronous_commit off, which leaves the"
        " disk's flush latency out of the figures.",
    )
    parser.add_argument("--runs", type=int, default=50, help="Measured runs per operation.")
    parser.add_argument("--run-size", type=int, default=1000, help="Events per bulk-loaded run.")
    parser.add_argument("--out", type=Path, default=None, help="Write the figures as JSON here.")
    parser.add_argument(
        "--table", type=Path, default=None, help="Print the table of a run written with --out."
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the table and write the JSON."""
    args = parse_args(argv)
    if args.table is not None:
        print(table(points_from_json(json.loads(args.table.read_text()))))
        return 0
    # A terminated run unwinds like an interrupted one, dropping its throwaway databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.layouts = [name.strip() for name in args.layouts.split(",") if name.strip()]
    unknown = set(args.layouts) - {"plain", "partitioned"}
    if unknown:
        raise SystemExit(f"unknown layouts {sorted(unknown)}: use plain and/or partitioned")
    points, databases = measure(args.url, args, lambda line: print(line, flush=True))
    print()
    print(table(points))
    if args.out is not None:
        document = {
            "machine": describe(),
            "databases": databases,
            "settings": {
                key: value for key, value in vars(args).items() if key not in ("url", "out")
            },
            "points": [point.to_json() for point in points],
        }
        args.out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
