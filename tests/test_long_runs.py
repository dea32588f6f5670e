"""A run with a very long history: work on the whole run is done in bounded transactions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import AsyncSQLCheckpointer, SQLCheckpointer
from purpose_agent.db.dialects import Flavor, SQLiteFlavor
from purpose_agent.testing.samples import new, st

CHUNK = 10


def _event_deletes(engine: sa.Engine) -> list[tuple[str, int]]:
    """Each DELETE of events and each COMMIT the engine runs from now on, with its row count."""
    seen: list[tuple[str, int]] = []

    @sa.event.listens_for(engine, "after_cursor_execute")
    def record(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        text = statement.lstrip().upper()
        if text.startswith("DELETE FROM PA_EVENTS"):
            seen.append(("delete", cursor.rowcount))
        elif text.startswith("COMMIT"):
            seen.append(("commit", 0))

    return seen


def _in_chunks(seen: list[tuple[str, int]]) -> list[int]:
    """The rows each delete removed, checking that each was committed before the next."""
    counts = []
    for position, (what, rows) in enumerate(seen):
        if what == "delete":
            assert seen[position + 1][0] == "commit", seen
            counts.append(rows)
    return counts


def _a_long_run_beside_another(store: SQLCheckpointer) -> list[tuple[str, int]]:
    """Store run ``long`` (40 events, a snapshot at 35) and run ``other`` (one event).

    Returns:
        The deletes of events and the commits from now on, as :func:`_event_deletes` sees them.
    """
    store.append("long", [new(n=n) for n in range(1, 41)])
    store.save_snapshot("long", st("long", 35, n=35))
    store.append("other", [new()])
    seen = _event_deletes(store.engine)
    store.engine.dispose()  # the next statements take the observed path
    return seen


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Flavor, "compact_chunk", CHUNK, raising=False)
    monkeypatch.setattr(SQLiteFlavor, "compact_chunk", CHUNK, raising=False)
    monkeypatch.setattr(SQLiteFlavor, "chunk_pause", 0.0, raising=False)


@pytest.mark.usefixtures("small_chunks")
def test_compacting_a_long_run_deletes_a_chunk_of_events_per_transaction(
    empty_database: str,
) -> None:
    with SQLCheckpointer(empty_database) as store:
        seen = _a_long_run_beside_another(store)
        before = store.recover("long")
        assert store.compact("long") == 35
        # One transaction held SQLite's write lock for the whole run before: 35 in one.
        assert _in_chunks(seen) == [10, 10, 10, 5]
        assert store.recover("long") == before
        assert [event.seq for event in store.list_events("long")] == [36, 37, 38, 39, 40]
        assert store.compact("long") == 0
        assert store.last_seq("long") == 40
        assert len(store.list_events("other")) == 1


@pytest.mark.sqlite
@pytest.mark.usefixtures("small_chunks")
def test_an_async_store_compacts_a_long_run_a_chunk_per_transaction(tmp_path: Any) -> None:
    async def main() -> tuple[int, list[tuple[str, int]]]:
        async with await AsyncSQLCheckpointer.open(f"sqlite:///{tmp_path / 'a.db'}") as store:
            await store.append("long", [new() for _ in range(25)], snapshot=st("long", 25))
            seen = _event_deletes(store.engine.sync_engine)
            return await store.compact("long"), seen

    deleted, seen = asyncio.run(main())
    assert deleted == 25
    assert _in_chunks(seen) == [10, 10, 5]


@pytest.mark.usefixtures("small_chunks")
def test_deleting_a_long_run_deletes_what_its_snapshot_covers_a_chunk_per_transaction(
    empty_database: str,
) -> None:
    with SQLCheckpointer(empty_database) as store:
        seen = _a_long_run_beside_another(store)
        store.delete_run("long")
        # The covered events in chunks, then the five after the snapshot with the run.
        assert _in_chunks(seen) == [10, 10, 10, 5, 5]
        assert store.recover("long") is None
        assert store.list_runs() == ["other"]
        assert store.append("long", [new()])[0].seq == 1
