"""SQLite reads on per-thread held connections see every commit and hold nothing back."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import (
    CorruptRecord,
    EventKind,
    NewEvent,
    RunState,
    SQLCheckpointer,
    StoreUnavailable,
)
from tests.forks import exit_code_in_forked_child


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


def _small_reads(store: SQLCheckpointer, run_id: str) -> dict[str, Any]:
    """What each read that runs on a held connection returns for a run."""
    recovery = store.recover(run_id)
    return {
        "newest": [e.seq for e in store.list_events(run_id, limit=1, newest_first=True)],
        "all": [e.seq for e in store.list_events(run_id)],
        "by_key": getattr(store.event_by_key(run_id, "k2"), "seq", None),
        "of_runs": [e.seq for e in store.events_of_runs([run_id])[run_id]],
        "snapshot": getattr(store.load_latest(run_id), "seq", None),
        "recovered": (
            None
            if recovery is None
            else (getattr(recovery.state, "seq", None), [e.seq for e in recovery.events])
        ),
    }


@pytest.mark.sqlite
def test_every_small_read_on_a_held_connection_sees_each_new_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url) as reader, SQLCheckpointer(url) as writer:
        assert _small_reads(reader, "r") == {
            "newest": [],
            "all": [],
            "by_key": None,
            "of_runs": [],
            "snapshot": None,
            "recovered": None,
        }
        writer.append("r", [_event(1)])
        assert _small_reads(reader, "r") == {
            "newest": [1],
            "all": [1],
            "by_key": None,
            "of_runs": [1],
            "snapshot": None,
            "recovered": (None, [1]),
        }
        writer.append("r", [_event(2), _event(3)])
        writer.save_snapshot("r", RunState(run_id="r", seq=2))
        assert _small_reads(reader, "r") == {
            "newest": [3],
            "all": [1, 2, 3],
            "by_key": 2,
            "of_runs": [1, 2, 3],
            "snapshot": 2,
            "recovered": (2, [3]),
        }


@pytest.mark.sqlite
def test_every_small_read_is_seen_by_engine_listeners(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1), _event(2)])
        store.save_snapshot("r", RunState(run_id="r", seq=1))
        quiet = _small_reads(store, "r")  # on the held connection
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        sa.event.listen(store.engine, "before_cursor_execute", seen)
        try:
            watched = _small_reads(store, "r")
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", seen)
        assert watched == quiet
        # One statement per read: recover, two list_events, event_by_key, events_of_runs,
        # load_latest.
        assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 6


@pytest.mark.sqlite
def test_every_small_read_after_close_is_refused(tmp_path: Path) -> None:
    store = SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}")
    store.append("r", [_event(1)])
    _small_reads(store, "r")
    store.close()
    reads = [
        lambda: store.list_events("r", limit=1, newest_first=True),
        lambda: store.list_events("r"),
        lambda: store.event_by_key("r", "k1"),
        lambda: store.events_of_runs(["r", "s"]),
        lambda: store.load_latest("r"),
        lambda: store.recover("r"),
    ]
    for read in reads:
        with pytest.raises(StoreUnavailable, match="closed"):
            read()


@pytest.mark.sqlite
def test_a_held_connection_closed_under_the_store_is_replaced(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1)])
        expected = _small_reads(store, "r")
        assert store._held is not None
        # Reads run on the idle write connection; while it is busy, on this thread's own.
        with store.writing("holding the write connection") as conn:
            writer = conn.connection.dbapi_connection
            assert _small_reads(store, "r") == expected
        held = store._held._local.held
        assert writer is not None
        # What a driver does to a connection it found broken, to both.
        held.connection.close()
        writer.close()
        assert _small_reads(store, "r") == expected
        with store.writing("holding the write connection") as conn:
            assert conn.connection.dbapi_connection is not writer
            assert _small_reads(store, "r") == expected
        assert store._held._local.held is not held


# Text SQLite keeps but cannot hand back as str: the driver raises, not the decoder.
_NOT_UTF8 = "CAST(X'7b2278223a22ff227d' AS TEXT)"


@pytest.mark.sqlite
def test_text_that_is_not_utf8_fails_each_read_as_a_corrupt_record_and_the_next_read_works(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    with SQLCheckpointer(f"sqlite:///{path}") as store:
        for run_id in ("r", "s", "other"):
            store.append(run_id, [_event(1), _event(2), _event(3)])
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=1))
        good = _small_reads(store, "other")
        damage = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
        with damage.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE pa_events SET data = {_NOT_UTF8} WHERE run_id = 'r' AND seq = 2"
            )
            conn.exec_driver_sql(f"UPDATE pa_snapshots SET state = {_NOT_UTF8} WHERE run_id = 's'")
        damage.dispose()
        reads = [
            ("r", 2, lambda: store.list_events("r", limit=5, newest_first=True)),
            ("r", 2, lambda: store.list_events("r")),
            ("r", 2, lambda: store.event_by_key("r", "k2")),
            ("r", 2, lambda: store.events_of_runs(["r"])),
            ("r", 2, lambda: store.events_of_runs(["other", "r", "s"])),
            ("r", 2, lambda: store.recover("r")),
            ("s", 1, lambda: store.load_latest("s")),
            ("s", 1, lambda: store.recover("s")),
        ]
        for run_id, seq, read in reads:
            with pytest.raises(CorruptRecord, match="not UTF-8") as info:
                read()
            assert (info.value.run_id, info.value.seq) == (run_id, seq)
            assert _small_reads(store, "other") == good
        assert [e.seq for e in store.list_events("r", limit=1, newest_first=True)] == [3]


@pytest.mark.sqlite
def test_reads_run_on_the_idle_write_connection_and_open_none_of_their_own(
    tmp_path: Path,
) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1), _event(2)])
        assert _small_reads(store, "r")["newest"] == [2]
        assert store._held is not None
        # Every read found the write connection free: no thread connection was opened.
        assert getattr(store._held._local, "held", None) is None
        with store.writing("holding the write connection"):
            assert _small_reads(store, "r")["newest"] == [2]
        assert store._held._local.held is not None


@pytest.mark.sqlite
def test_a_wal_grown_behind_a_long_reader_is_cut_back_once_it_goes(tmp_path: Path) -> None:
    # A reader holding a snapshot (a backup, a sqlite3 shell left in a transaction) keeps
    # checkpoints from reaching the WAL's end, and the WAL grows meanwhile. SQLite reuses the
    # file once the reader goes but never shrinks it: a store that stayed open kept a WAL of
    # the largest size it ever reached, here larger than the database itself.
    limit = 16 * 1024 * 1024  # the store's WAL_SIZE_LIMIT
    path = tmp_path / "runs.db"
    wal = Path(f"{path}-wal")
    pad = "x" * 4000
    with SQLCheckpointer(f"sqlite:///{path}", durability="normal") as store:

        def write(steps: int) -> None:
            for n in range(steps):
                store.append(f"r{n % 10}", [NewEvent(kind=EventKind.CUSTOM, data={"p": pad})] * 5)

        write(10)
        reader = sqlite3.connect(path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM pa_events").fetchall()
            write(1200)
            assert wal.stat().st_size > limit
        finally:
            reader.execute("COMMIT")
            reader.close()
        write(300)  # past an automatic checkpoint, and the WAL's restart after it
        assert wal.stat().st_size <= limit


def _read_in_child(store: SQLCheckpointer) -> None:
    assert store.last_seq("r") == 1


def _fork_and_read(store: SQLCheckpointer) -> int | None:
    """Fork a child that reads through the inherited store: its exit code, or ``None`` if it
    was still running after 60 seconds (then killed)."""
    return exit_code_in_forked_child(lambda: _read_in_child(store), timeout=60)


@pytest.mark.sqlite
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_fork_while_other_threads_read_gives_a_child_that_does_not_hang(tmp_path: Path) -> None:
    """A child forked while another thread was inside SQLite inherited SQLite's locks (the
    connection's, the memory allocator's) taken: it hung at the fork itself, as CPython dropped
    the other threads and closed their held read connections, or at its first read."""
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1)])
        stop = threading.Event()

        def read_back_to_back() -> None:
            while not stop.is_set():
                store.list_events("r")

        readers = [threading.Thread(target=read_back_to_back) for _ in range(3)]
        for reader in readers:
            reader.start()
        try:
            exits = [_fork_and_read(store) for _ in range(40)]
        finally:
            stop.set()
            for reader in readers:
                reader.join()
        assert exits == [0] * 40
