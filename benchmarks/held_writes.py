"""``python -m benchmarks.held_writes``: a SQLite save in one call, or statement by statement.

A SQLite file store writes on one connection it holds, and runs a save's transaction (``BEGIN
IMMEDIATE``, its statements, ``COMMIT``) in one call on the driver's cursor
(:meth:`purpose_agent.db.transactions.Transactions.write_on_cursor`). This study measures what
that saves, in one process and in interleaved rounds so that the machine's noise (an fsync
varies more from one commit to the next than the two paths differ) hits every side alike:

- ``raw``: sqlite3 ``BEGIN IMMEDIATE``, ``INSERT``, ``COMMIT`` (``benchmarks.raw``);
- ``store``: ``SQLCheckpointer.save_event`` as it is;
- ``per statement``: the same store with each statement of the transaction run on its own,
  as before (:class:`PerStatementSQLCheckpointer`, also usable as ``python -m benchmarks
  --store benchmarks.held_writes:PerStatementSQLCheckpointer``).

Each side writes to its own file at the same ``synchronous`` level. Printed: the median rate of
each side, and the median of its per-round ratio to raw.

Usage: ``python -m benchmarks.held_writes [--rounds 20] [--per-round 500]
[--synchronous FULL|NORMAL]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.raw import RawSQLite
from purpose_agent import SQLCheckpointer
from purpose_agent.db.transactions import Transactions

SIDES = ("raw", "store", "per statement")


class _PerStatementUnits(Transactions):
    """The store's units with the one-call write switched off: every statement on its own."""

    @property
    def holds_writer(self) -> bool:
        return False


class PerStatementSQLCheckpointer(SQLCheckpointer):
    """``SQLCheckpointer`` whose SQLite writes run statement by statement, as before."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._units.__class__ = _PerStatementUnits


def _sides(root: Path, synchronous: str) -> tuple[dict[str, Callable[[Any], None]], list[Any]]:
    durability = "full" if synchronous == "FULL" else "normal"
    raw = RawSQLite(str(root / "raw.db"), synchronous=synchronous)
    raw.create_tables()
    store = SQLCheckpointer(f"sqlite:///{root / 'store.db'}", durability=durability)
    old = PerStatementSQLCheckpointer(f"sqlite:///{root / 'old.db'}", durability=durability)
    sides = {"raw": raw.insert_one, "store": store.save_event, "per statement": old.save_event}
    return sides, [raw.conn, store, old]


def measure(
    root: Path, rounds: int, per_round: int, synchronous: str = "FULL"
) -> dict[str, dict[str, float]]:
    """Single appends per second on each side, and each side's median per-round ratio to raw."""
    sides, opened = _sides(root, synchronous)
    rates: dict[str, list[float]] = {name: [] for name in SIDES}
    try:
        for number in range(rounds):
            for name in SIDES:
                events = [
                    workload.event(f"{name}-{number}", seq) for seq in range(1, per_round + 1)
                ]
                save = sides[name]
                started = time.perf_counter()
                for event in events:
                    save(event)
                rates[name].append(per_round / (time.perf_counter() - started))
    finally:
        for thing in opened:
            thing.close()
    return {
        name: {
            "events_per_s": statistics.median(rates[name]),
            "of_raw": statistics.median(
                [mine / raw for mine, raw in zip(rates[name], rates["raw"], strict=True)]
            ),
        }
        for name in SIDES
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=500)
    parser.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="pa_held_writes_"))
    try:
        figures = measure(root, args.rounds, args.per_round, args.synchronous)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"SQLite single appends, synchronous={args.synchronous}, "
        f"{args.rounds} rounds of {args.per_round}"
    )
    for name, values in figures.items():
        print(f"  {name:14} {values['events_per_s']:9,.0f}/s  {values['of_raw']:.3f} of raw")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
