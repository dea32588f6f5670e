"""SQLite inserts many rows per statement, so a save hands the interpreter's lock over rarely.

Python's sqlite3 lets go of the interpreter's lock around every statement it steps, and a
thread busy in Python elsewhere in the process then holds it for up to 5 ms before the saving
thread gets it back. Each statement of a save therefore costs a switch interval under load;
these tests count the statements SQLite runs for one save, on the store's real connections.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import (
    AsyncSQLCheckpointer,
    EventKind,
    NewEvent,
    PAEvent,
    RunState,
    SequenceConflict,
    SQLCheckpointer,
)
from purpose_agent.db.cursor import RowsAtOnce
from purpose_agent.db.group_commit import GroupCommitPolicy
from tests.group_commits import state
from tests.test_group_commit import Recorded, latest, queued

pytestmark = pytest.mark.sqlite


def _event(run_id: str, seq: int, note: str = "") -> PAEvent:
    return PAEvent(
        run_id=run_id, seq=seq, kind=EventKind.TOOL_CALL, ts=1.0 + seq, data={"n": seq, "x": note}
    )


class Traced:
    """Every statement SQLite starts on the engine's connections, as its trace reports them."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements: list[str] = []

        def connected(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            dbapi_connection.set_trace_callback(self.statements.append)

        # A pool event, not a statement listener: the store's fast path stays in use.
        sa.event.listen(engine, "connect", connected)

    def count(self, prefix: str) -> int:
        return sum(1 for sql in self.statements if sql.startswith(prefix))


@pytest.fixture
def traced(tmp_path: Path) -> Iterator[tuple[SQLCheckpointer, Traced]]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    trace = Traced(engine)
    with SQLCheckpointer(engine) as store:
        yield store, trace
    engine.dispose()


@pytest.mark.parametrize(
    ("rows", "pieces"),
    [
        (2, [2]),
        (7, [7]),
        (8, [8]),
        (9, [8, 1]),
        (127, [64, 32, 16, 8, 7]),
        (128, [128]),
        (129, [128, 1]),
        (300, [128, 128, 32, 8, 4]),
        (1000, [128] * 7 + [64, 32, 8]),
    ],
)
def test_rows_are_sent_in_order_in_pieces_of_a_power_of_two_after_the_first_few(
    rows: int, pieces: list[int]
) -> None:
    row = "(" + ", ".join(["?"] * 7) + ")"
    sql = f"INSERT INTO t (a, b, c, d, e, f, g) VALUES {row} ON CONFLICT (a) DO UPDATE SET b = 1"
    many = RowsAtOnce.of(sql, 7)
    assert many is not None
    params = [tuple(f"{n}-{column}" for column in range(7)) for n in range(rows)]

    calls = many.calls(params)

    sent = list(itertools.chain.from_iterable(flat for _, flat, _ in calls))
    assert sent == list(itertools.chain.from_iterable(params))
    assert [len(flat) // 7 for _, flat, _ in calls] == pieces
    for text, flat, executemany in calls:
        assert not executemany
        assert len(flat) <= RowsAtOnce.PARAMETERS
        assert text == sql.replace(row, ", ".join([row] * (len(flat) // 7)))


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (a, b) VALUES (?, max(?, 1))",  # an expression in the row
        "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = ?",  # a tail one
        "UPDATE t SET b = ? WHERE a = ?",
    ],
)
def test_statements_whose_parameters_are_not_one_values_row_are_left_alone(sql: str) -> None:
    assert RowsAtOnce.of(sql, sql.count("?")) is None


def test_a_save_of_many_events_is_a_few_statements(
    traced: tuple[SQLCheckpointer, Traced],
) -> None:
    store, trace = traced
    events = [_event("r", seq) for seq in range(1, 301)]
    state = RunState(run_id="r", seq=300, data={"done": True})
    trace.statements.clear()

    store.save_events(events, snapshot=state)

    # 300 rows: pieces of 128, 128, 32, 8 and 4 (executemany started 300 statements).
    assert trace.count("INSERT INTO pa_events") == 5
    assert trace.count("INSERT INTO pa_runs") == 1
    assert trace.count("INSERT INTO pa_snapshots") == 1
    assert store.list_events("r") == events
    assert store.load_latest("r") == state


def test_a_step_of_a_few_events_is_one_insert(traced: tuple[SQLCheckpointer, Traced]) -> None:
    store, trace = traced
    events = [_event("r", seq) for seq in range(1, 8)]
    trace.statements.clear()

    store.save_events(events, snapshot=RunState(run_id="r", seq=7))

    assert trace.count("INSERT INTO pa_events") == 1
    assert store.list_events("r") == events


def test_appends_insert_their_events_in_a_few_statements(
    traced: tuple[SQLCheckpointer, Traced],
) -> None:
    store, trace = traced
    drafts = [NewEvent(kind=EventKind.CUSTOM, data={"n": n}) for n in range(200)]
    trace.statements.clear()

    appended = store.append("r", drafts)

    assert [event.seq for event in appended] == list(range(1, 201))
    assert trace.count("INSERT INTO pa_events") == 3  # 128 + 64 + 8
    assert [event.data["n"] for event in store.list_events("r")] == list(range(200))


def test_a_taken_position_in_a_later_piece_stores_nothing_of_the_save(
    traced: tuple[SQLCheckpointer, Traced],
) -> None:
    store, _ = traced
    store.save_event(_event("r", 250, note="first"))
    events = [_event("r", seq) for seq in range(1, 301)]

    with pytest.raises(SequenceConflict):
        store.save_events(events)

    # The pieces before the one that failed (seqs 1-128 and 129-256 hold seq 250) were rolled
    # back with it.
    assert store.list_events("r") == [_event("r", 250, note="first")]
    # A retry that agrees with what is stored saves the rest.
    events[249] = _event("r", 250, note="first")
    store.save_events(events)
    assert store.list_events("r") == events


def test_a_group_commit_of_many_saves_is_a_few_statements(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    trace = Traced(engine)
    runs = 40
    with SQLCheckpointer(engine, group_commit=GroupCommitPolicy(max_batch=runs)) as store:
        batches = Recorded(store)
        steps = {
            f"run-{n}": ([_event(f"run-{n}", seq) for seq in range(1, 8)], n) for n in range(runs)
        }
        trace.statements.clear()

        def save(run_id: str, events: list[PAEvent], n: int) -> Any:
            return lambda: store.save_events(events, snapshot=state(run_id, 7, n=n))

        results = queued(store, [save(run_id, *step) for run_id, step in steps.items()])

        assert results == [None] * runs
        assert batches.sizes == [runs]
        # 280 events in pieces of 128, 128, 16 and 8; 40 runs and snapshots in 32 and 8.
        assert trace.count("INSERT INTO pa_events") == 4
        assert trace.count("INSERT INTO pa_runs") == 2
        assert trace.count("INSERT INTO pa_snapshots") == 2
        for run_id, (events, n) in steps.items():
            assert store.list_events(run_id) == events
            assert latest(store, run_id) == (7, {"n": n})
    engine.dispose()


def test_the_async_store_on_aiosqlite_saves_many_events_in_order(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncSQLCheckpointer(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}") as store:
            store_events = [_event("r", seq) for seq in range(1, 301)]
            await store.save_events(store_events, snapshot=RunState(run_id="r", seq=300))
            assert await store.list_events("r") == store_events
            clash = [_event("s", seq) for seq in range(1, 201)]
            await store.save_event(_event("s", 190, note="first"))
            with pytest.raises(SequenceConflict):
                await store.save_events(clash)
            assert await store.list_events("s") == [_event("s", 190, note="first")]

    asyncio.run(main())
