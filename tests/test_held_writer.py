"""A SQLite file store writes on one held connection: threads take turns, and it heals."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection

from purpose_agent import EventKind, NewEvent, SQLCheckpointer, StoreUnavailable
from tests.forks import exit_code_in_forked_child

pytestmark = pytest.mark.sqlite


def _event(n: int) -> NewEvent:
    return NewEvent(kind=EventKind.CUSTOM, data={"n": n})


@contextlib.contextmanager
def _written_by_another_thread(store: SQLCheckpointer) -> Iterator[Connection]:
    """Another thread holds the store's write connection in a transaction for the block."""
    held = threading.Event()
    release = threading.Event()
    used: list[Connection] = []

    def hold() -> None:
        with store.writing("holding") as conn:
            used.append(conn)
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        yield used[0]
    finally:
        release.set()
        holder.join()


def test_threads_appending_to_one_run_take_turns_and_lose_nothing(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        errors: list[BaseException] = []

        def writer(offset: int) -> None:
            try:
                for n in range(50):
                    store.append("r", [_event(offset + n)])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(1000 * t,)) for t in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        events = store.list_events("r")
        assert [e.seq for e in events] == list(range(1, 301))
        assert sorted(e.data["n"] for e in events) == sorted(
            1000 * t + n for t in range(6) for n in range(50)
        )


def test_a_write_connection_that_broke_is_replaced_and_the_write_goes_through(
    tmp_path: Path,
) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1)])
        # The connection the first write held, closed under the store.
        with store.writing("breaking") as conn:
            driver = conn.connection.dbapi_connection
        assert driver is not None
        driver.close()
        store.append("r", [_event(2)])
        store.append("r", [_event(3)])
        assert [e.data["n"] for e in store.list_events("r")] == [1, 2, 3]
        with store.writing("checking") as conn:
            assert conn.connection.dbapi_connection is not driver


def test_a_writer_kept_waiting_past_the_busy_timeout_gets_a_clear_error(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}", busy_timeout=0.3) as store:
        with _written_by_another_thread(store):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="database is locked"):
                store.append("r", [_event(1)])
            assert time.monotonic() - started >= 0.25
        assert store.append("r", [_event(2)])[0].seq == 1
        assert [e.data["n"] for e in store.list_events("r")] == [2]


def _append_in_child(store: SQLCheckpointer) -> None:
    store.append("child", [_event(7)])
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_child_writes_on_its_own_connection_and_the_parent_keeps_its_own(
    tmp_path: Path,
) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("parent", [_event(1)])
        # The parent's write connection is open and idle when the child is forked.
        child = multiprocessing.get_context("fork").Process(target=_append_in_child, args=(store,))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        store.append("parent", [_event(2)])
        assert [e.data["n"] for e in store.list_events("parent")] == [1, 2]
        assert [e.data["n"] for e in store.list_events("child")] == [7]


def _append_twice_in_child(store: SQLCheckpointer, appended: Any, closed: Any) -> None:
    store.append("child", [_event(1)])
    appended.set()
    assert closed.wait(60)
    store.append("child", [_event(2)])  # committed after the parent closed its store


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_childs_commits_outlive_the_parent_closing_the_store_it_inherited(
    tmp_path: Path,
) -> None:
    """SQLite keeps a file's locks in the process's memory, and asks the system for a lock
    only when no connection of the process holds it: the child's connections, beside the
    inherited ones, held none. The parent closing its store found itself alone with the
    file, checkpointed the WAL and deleted it; the child's next commit went into the deleted
    file and was lost."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    fork = multiprocessing.get_context("fork")
    appended, closed = fork.Event(), fork.Event()
    store = SQLCheckpointer(url)
    store.append("parent", [_event(1)])
    assert store.last_seq("parent") == 1  # a read connection is open too
    child = fork.Process(target=_append_twice_in_child, args=(store, appended, closed))
    child.start()
    try:
        assert appended.wait(60)
        store.close()
    finally:
        closed.set()
        child.join(60)
    assert child.exitcode == 0
    with SQLCheckpointer(url) as reopened:
        assert [e.data["n"] for e in reopened.list_events("child")] == [1, 2]


def test_writes_after_close_fail_with_the_store_closed(tmp_path: Path) -> None:
    store = SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}")
    store.append("r", [_event(1)])
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.append("r", [_event(2)])


def test_close_during_another_threads_write_returns_at_once_and_the_writer_closes_it(
    tmp_path: Path,
) -> None:
    store = SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}", busy_timeout=30)
    store.append("r", [_event(1)])
    with _written_by_another_thread(store) as used:
        closer = threading.Thread(target=store.close)
        closer.start()
        closer.join(10)
        # A close that waited for the write's turn would still be running.
        assert not closer.is_alive()
        assert not used.closed
    assert used.closed
    with pytest.raises(StoreUnavailable, match="closed"):
        store.append("r", [_event(2)])


def test_a_compaction_takes_its_turn_on_the_write_connection(tmp_path: Path) -> None:
    """It queues behind the other threads' writes, not in SQLite's busy handler.

    Either way it gives up after the busy timeout; on a pooled connection of its own it
    would also check one out of the pool.
    """
    from sqlalchemy import event

    from purpose_agent import RunState

    store = SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}", busy_timeout=0.2)
    store.append("r", [_event(n) for n in range(5)])
    store.save_snapshot("r", RunState(run_id="r", seq=3))
    checkouts: list[object] = []
    event.listen(store.engine, "checkout", lambda *_: checkouts.append(1))
    try:
        # Another thread's transaction holds the write turn (and SQLite's write lock).
        with (
            _written_by_another_thread(store),
            pytest.raises(StoreUnavailable, match="database is locked"),
        ):
            store.compact("r")
        assert store.compact("r") == 3
        assert checkouts == []
        assert [e.seq for e in store.list_events("r")] == [4, 5]
    finally:
        store.close()


def _in_transaction(store: SQLCheckpointer) -> bool:
    conn = store._units._writer.take()  # type: ignore[union-attr]
    try:
        return bool(conn.connection.driver_connection.in_transaction)  # type: ignore[union-attr]
    finally:
        store._units._writer.give_back(conn)  # type: ignore[union-attr]


# An interrupt drops the connection (its state is unknown); an error rolls it back and keeps it.
FAILURES = [KeyboardInterrupt, RuntimeError]


@pytest.mark.parametrize("failure", FAILURES)
def test_a_save_interrupted_inside_its_transaction_stores_nothing_and_the_next_one_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    """A save runs BEGIN, its statements and COMMIT in one call on the held connection's cursor.

    Interrupted after its first statement, it must roll back: left open, the transaction
    would hold SQLite's write lock and the next save's BEGIN would fail.
    """
    from purpose_agent.db.queries import Queries

    real = Queries.save_many_on_cursor

    def interrupted(self: Queries, cursor: object, rows: object, snaps: object, now: int) -> None:
        cursor.execute(  # type: ignore[attr-defined]
            "INSERT INTO pa_runs (run_id, created_ns, updated_ns, last_seq) VALUES ('x', 1, 1, 9)"
        )
        raise failure

    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        [first] = store.append("r", [_event(1)])
        second = first.model_copy(update={"seq": 2})
        monkeypatch.setattr(Queries, "save_many_on_cursor", interrupted)
        with pytest.raises(failure):
            store.save_event(second)
        assert not _in_transaction(store)
        assert "x" not in store.list_runs()
        monkeypatch.setattr(Queries, "save_many_on_cursor", real)
        store.save_event(second)
        assert [event.seq for event in store.list_events("r")] == [1, 2]


@pytest.mark.parametrize("failure", FAILURES)
def test_an_append_interrupted_inside_its_transaction_leaves_the_runs_last_seq(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    from purpose_agent.stores import sql

    real = sql._placed_below

    def interrupted(*args: object) -> object:
        raise failure  # after the run row moved to its new last seq

    with SQLCheckpointer(f"sqlite:///{tmp_path / 'runs.db'}") as store:
        store.append("r", [_event(1)])
        monkeypatch.setattr(sql, "_placed_below", interrupted)
        with pytest.raises(failure):
            store.append("r", [_event(2), _event(3)])
        assert not _in_transaction(store)
        assert store.last_seq("r") == 1
        monkeypatch.setattr(sql, "_placed_below", real)
        [placed] = store.append("r", [_event(4)])
        assert placed.seq == 2


def _fork_and_append(store: SQLCheckpointer, run_id: str) -> int | None:
    """Fork a child that appends to ``run_id`` through the inherited store: its exit code
    (``None`` if it was still running after 30 seconds, and was killed)."""
    return exit_code_in_forked_child(lambda: _append_in_child_and_exit(store, run_id))


def _append_in_child_and_exit(store: SQLCheckpointer, run_id: str) -> None:
    store.append(run_id, [_event(7)])
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
@pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "grouped"])
def test_a_child_forked_while_another_thread_writes_can_write(
    tmp_path: Path, group_commit: bool
) -> None:
    # SQLite keeps a file's locks in the process's memory: a child forked while a thread of
    # the parent was inside a write transaction found the write lock taken for ever, and its
    # first write failed after the busy timeout ("database is locked"); with group commit,
    # its call queued behind the parent's leader and never returned.
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url, busy_timeout=5, group_commit=group_commit) as store:
        store.append("parent", [_event(1)])
        inside = threading.Event()

        def write_slowly() -> None:
            with store.writing("holding") as conn:
                inside.set()
                time.sleep(0.5)
                conn.exec_driver_sql("SELECT 1")

        def append_behind() -> None:
            store.append("parent", [_event(2)])  # a leader waiting for the turn (grouped)

        threads = [threading.Thread(target=write_slowly), threading.Thread(target=append_behind)]
        threads[0].start()
        assert inside.wait(10)
        threads[1].start()
        time.sleep(0.1)
        exit_code = _fork_and_append(store, "child")
        for thread in threads:
            thread.join()
        assert exit_code == 0
        assert [e.data["n"] for e in store.list_events("child")] == [7]
        assert [e.data["n"] for e in store.list_events("parent")] == [1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_fork_while_threads_write_back_to_back_gets_its_turn(tmp_path: Path) -> None:
    """Threads saving back to back hand the write turn to one another: the fork waited for
    the turn, gave it back at once and found it taken again, until the busy timeout ran out;
    then it forked anyway, and the child inherited a write under way (locked for good)."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url, busy_timeout=10) as store:
        stop = threading.Event()

        def write_back_to_back(name: str) -> None:
            while not stop.is_set():
                store.append(name, [_event(1)])

        threads = [threading.Thread(target=write_back_to_back, args=(f"w{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            exit_code = _fork_and_append(store, "child")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert exit_code == 0
        assert [e.data["n"] for e in store.list_events("child")] == [7]


def _fork_and_wait() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_two_threads_forking_at_once_leave_the_write_turn_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork hooks kept one flag per writer: a second fork whose wait for the turn ran out
    (the first fork held it, slowed by another store's write or another library's hook)
    cleared the first fork's flag, which then never gave the turn back: every later write of
    the parent failed after the busy timeout."""
    from purpose_agent.db.transactions import HeldWriter

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url, busy_timeout=0.3) as store:
        store.append("r", [_event(1)])
        original = (
            HeldWriter.try_hold if hasattr(HeldWriter, "try_hold") else HeldWriter.hold_for_fork
        )
        name = original.__name__
        calls = [0]

        def slow_hold_for_fork(self: HeldWriter) -> object:
            took = original(self)
            if self._engine.url.database != str(tmp_path / "runs.db"):
                return took  # a writer of another test's store, not yet collected
            calls[0] += 1
            if calls[0] == 1:
                time.sleep(1.0)  # the first fork is slow while it holds the turn
            return took

        monkeypatch.setattr(HeldWriter, name, slow_hold_for_fork)
        first = threading.Thread(target=_fork_and_wait)
        first.start()
        time.sleep(0.1)
        second = threading.Thread(target=_fork_and_wait)
        second.start()
        first.join(30)
        second.join(30)
        monkeypatch.undo()
        store.append("r", [_event(2)])
        assert [e.data["n"] for e in store.list_events("r")] == [1, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_fork_inside_one_stores_write_does_not_fail_a_writer_waiting_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread forked inside store X's write while another, in store Y's write, waited for
    X's turn: the fork waited for Y's turn, Y's writer for X's, and after the busy timeout
    the write failed and the fork went on."""
    from purpose_agent.db.transactions import HeldWriter

    x = SQLCheckpointer(f"sqlite:///{tmp_path / 'x.db'}", busy_timeout=30)
    y = SQLCheckpointer(f"sqlite:///{tmp_path / 'y.db'}", busy_timeout=30)
    a_in, b_in = threading.Event(), threading.Event()
    failures: list[BaseException] = []
    waited: list[int] = []
    waiting_for_turn = HeldWriter.wait_for_turn

    def recorded(self: HeldWriter, timeout: float) -> bool:
        waited.append(threading.get_ident())
        return waiting_for_turn(self, timeout)

    monkeypatch.setattr(HeldWriter, "wait_for_turn", recorded)

    def nested() -> None:
        a_in.wait(10)
        try:
            with y.writing("nested"):
                b_in.set()
                x.append("r", [_event(2)])
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=nested)
    thread.start()
    with x.writing("forking"):
        a_in.set()
        assert b_in.wait(10)
        time.sleep(0.1)
        _fork_and_wait()
    thread.join(60)
    x.close()
    y.close()
    assert failures == []
    assert threading.get_ident() not in waited  # the fork waited for no writer's turn


def test_an_append_waiting_for_the_turn_when_the_store_closes_names_the_store(
    tmp_path: Path,
) -> None:
    """Every other refusal after close() names the store; this one said only "writing
    failed: the store is closed"."""
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    store = SQLCheckpointer(url)
    store.append("r", [_event(1)])
    failures: list[str] = []

    def append_behind() -> None:
        try:
            store.append("r", [_event(2)])
        except StoreUnavailable as exc:
            failures.append(str(exc))

    with store.writing("holding the turn"):
        waiting = threading.Thread(target=append_behind)
        waiting.start()
        time.sleep(0.2)  # the append is past its check of close() and waits for the turn
        store.close()
    waiting.join(10)
    assert len(failures) == 1
    assert url in failures[0]
    assert "the store is closed" in failures[0]
