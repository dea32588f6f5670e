"""SQLite reads on per-thread held connections see every commit and hold nothing back."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import EventKind, NewEvent, SQLCheckpointer, StoreUnavailable


def _event(n: int) -> NewEvent:
    return NewEvent(kind=EventKind.CUSTOM, data={"n": n}, key=f"k{n}")


@pytest.mark.sqlite
def test_a_held_read_sees_what_another_store_committed_since(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url) as reader, SQLCheckpointer(url) as writer:
        writer.append("r", [_event(1)])
        assert [e.seq for e in reader.list_events("r", limit=1, newest_first=True)] == [1]
        assert reader.event_by_key("r", "k2") is None
        writer.append("r", [_event(2)])
        assert [e.seq for e in reader.list_events("r", limit=1, newest_first=True)] == [2]
        assert reader.event_by_key("r", "k2") is not None
        assert [e.seq for e in reader.list_events("r")] == [1, 2]


@pytest.mark.sqlite
def test_held_reads_leave_no_snapshot_open_so_a_checkpoint_completes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url) as reader, SQLCheckpointer(url) as writer:
        for n in range(1, 20):
            writer.append("r", [_event(n)])
        seen: list[int] = []

        def read() -> None:
            seen.extend(e.seq for e in reader.list_events("r", limit=3, newest_first=True))

        worker = threading.Thread(target=read)
        worker.start()
        worker.join()
        read()  # this thread's held connection too
        assert seen == [19, 18, 17] * 2
        with writer.engine.connect() as conn:
            busy, _, _ = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
        assert busy == 0


@pytest.mark.sqlite
def test_reads_after_close_are_refused(tmp_path: Path) -> None:
    store = SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}")
    store.append("r", [_event(1)])
    assert store.event_by_key("r", "k1") is not None
    store.close()
    with pytest.raises(StoreUnavailable):
        store.event_by_key("r", "k1")


@pytest.mark.sqlite
def test_reads_are_seen_by_engine_listeners(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1)])
        store.list_events("r", limit=1, newest_first=True)  # a held connection exists
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        sa.event.listen(store.engine, "before_cursor_execute", seen)
        try:
            assert store.event_by_key("r", "k1") is not None
            assert len(store.list_events("r", limit=1, newest_first=True)) == 1
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", seen)
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 2


def _check_events_of_runs(store: SQLCheckpointer, prefix: str) -> None:
    names = [f"{prefix}-{n}" for n in range(70)]  # more than one statement's worth
    for n, run_id in enumerate(names):
        store.append(run_id, [_event(i) for i in range(n % 3 + 1)])
    found = store.events_of_runs([*reversed(names), f"{prefix}-none", names[5]])
    assert sorted(found) == sorted([*names, f"{prefix}-none"])
    assert found[f"{prefix}-none"] == []
    for n, run_id in enumerate(names):
        assert found[run_id] == store.list_events(run_id)
        assert [e.seq for e in found[run_id]] == list(range(1, n % 3 + 2))


@pytest.mark.sqlite
def test_events_of_runs_reads_each_run_whole_on_sqlite(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        _check_events_of_runs(store, "r")


@pytest.mark.postgres
def test_events_of_runs_reads_each_run_whole_on_postgres(postgres_url: sa.URL) -> None:
    with SQLCheckpointer(postgres_url) as store:
        _check_events_of_runs(store, f"of-runs-{uuid.uuid4().hex[:8]}")


@pytest.mark.mariadb
def test_events_of_runs_reads_each_run_whole_on_mariadb(mariadb_url: sa.URL) -> None:
    with SQLCheckpointer(mariadb_url) as store:
        _check_events_of_runs(store, f"of-runs-{uuid.uuid4().hex[:8]}")
