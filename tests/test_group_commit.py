"""Group commit on real databases: shared commits, failures that stay alone, order kept."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event as sql_event

from purpose_agent import (
    EventKind,
    InvalidInput,
    NewEvent,
    SequenceConflict,
    SQLCheckpointer,
)
from purpose_agent.db.group_commit import GroupCommit, GroupCommitPolicy, Pending
from purpose_agent.errors import StoreUnavailable
from tests.group_commits import check_only_unkeyed_appends_reported, event, fail_every_batch, state

THREADS = 8


class Recorded:
    """The sizes of the batches a store's group commit ran (1: a call committed alone)."""

    def __init__(self, store: SQLCheckpointer) -> None:
        self.sizes: list[int] = []
        self.keys: list[list[str]] = []  # each batch's calls by run, oldest first
        commits = store._commits
        assert commits is not None
        run = commits._run

        def recording(batch: list[Pending]) -> None:
            self.sizes.append(len(batch))
            self.keys.append([call.run_key for call in batch])
            run(batch)

        commits._run = recording  # type: ignore[method-assign]


@pytest.fixture
def store(empty_database: str) -> Iterator[SQLCheckpointer]:
    policy = GroupCommitPolicy(max_batch=THREADS, max_wait=0.02)
    with SQLCheckpointer(empty_database, group_commit=policy) as opened:
        yield opened


def together(work: Callable[[int], Any], threads: int = THREADS) -> list[Any]:
    """Run ``work(i)`` in threads that start at once; their results or errors, by ``i``."""
    start = threading.Barrier(threads)
    results: list[Any] = [None] * threads

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = work(index)
        except Exception as exc:  # compared by the test
            results[index] = exc

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return results


def latest(store: SQLCheckpointer, run_id: str) -> tuple[int, dict[str, Any]] | None:
    """The seq and data of the run's snapshot (its timestamps differ from the one saved)."""
    found = store.load_latest(run_id)
    return (found.seq, found.data) if found is not None else None


def queued(store: SQLCheckpointer, works: list[Callable[[], Any]]) -> list[Any]:
    """Queue ``works`` in this order while a commit is in flight, then let them commit.

    Returns their results or errors, by position. Each call is queued before the next
    starts, so the batches they form, and the order inside them, are known.
    """
    commits = store._commits
    assert commits is not None
    with commits._lock:
        assert not commits._busy
        commits._busy = True  # as if a commit were in flight
    results: list[Any] = [None] * len(works)

    def run(index: int) -> None:
        try:
            results[index] = works[index]()
        except Exception as exc:  # compared by the test
            results[index] = exc

    workers = []
    for index in range(len(works)):
        worker = threading.Thread(target=run, args=(index,))
        worker.start()
        workers.append(worker)
        while len(commits._queue) <= index:
            time.sleep(0.001)
    with commits._lock:  # the commit in flight ends: the oldest queued call leads
        head = commits._queue[0]
    head.wake.release()
    for worker in workers:
        worker.join()
    return results


class Statements:
    """The statements an engine runs, as SQLAlchemy sees them."""

    def __init__(self, store: SQLCheckpointer) -> None:
        self.seen: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            self.seen.append(statement)

        sql_event.listen(store.engine, "before_cursor_execute", seen)


def test_overlapping_writers_share_commits_and_lose_nothing(store: SQLCheckpointer) -> None:
    batches = Recorded(store)

    def write(index: int) -> None:
        for seq in range(1, 31):
            store.save_event(event(f"run-{index}", seq, writer=index))

    together(write)
    assert max(batches.sizes) > 1  # some commits carried several writers' events
    assert sum(batches.sizes) == THREADS * 30
    for index in range(THREADS):
        stored = store.list_events(f"run-{index}")
        assert stored == [event(f"run-{index}", seq, writer=index) for seq in range(1, 31)]


def test_a_lone_writer_commits_alone(store: SQLCheckpointer) -> None:
    batches = Recorded(store)
    for seq in range(1, 6):
        store.save_event(event("alone", seq))
    store.append("alone", [NewEvent(kind=EventKind.CUSTOM)])
    assert batches.sizes == [1] * 6
    assert store.last_seq("alone") == 6


def test_a_conflicting_call_fails_alone_and_the_rest_of_its_batch_commits(
    store: SQLCheckpointer,
) -> None:
    store.save_event(event("taken", 1, original=True))
    batches = Recorded(store)

    def write(index: int) -> None:
        if index == 0:
            store.save_event(event("taken", 1, original=False))  # a different event: conflict
        else:
            store.save_events([event(f"ok-{index}", 1), event(f"ok-{index}", 2)])

    results = together(write)
    assert isinstance(results[0], SequenceConflict)
    assert results[1:] == [None] * (THREADS - 1)
    assert max(batches.sizes) > 1
    assert store.list_events("taken") == [event("taken", 1, original=True)]
    for index in range(1, THREADS):
        assert store.list_events(f"ok-{index}") == [
            event(f"ok-{index}", 1),
            event(f"ok-{index}", 2),
        ]


def test_an_identical_retry_in_a_batch_is_a_no_op(store: SQLCheckpointer) -> None:
    store.save_event(event("retried", 1))
    results = together(lambda index: store.save_event(event("retried", 1 + index % 2)))
    assert results == [None] * THREADS
    assert store.list_events("retried") == [event("retried", 1), event("retried", 2)]


def test_appends_to_one_run_in_batches_keep_each_writers_order(store: SQLCheckpointer) -> None:
    batches = Recorded(store)

    def append(index: int) -> list[int]:
        seqs = []
        for step in range(10):
            (stored,) = store.append(
                "shared", [NewEvent(kind=EventKind.CUSTOM, data={"writer": index, "step": step})]
            )
            seqs.append(stored.seq)
        return seqs

    results = together(append)
    assert max(batches.sizes) > 1
    for seqs in results:
        assert seqs == sorted(seqs)  # each writer's events in the order it appended them
    stored = store.list_events("shared")
    assert [e.seq for e in stored] == list(range(1, THREADS * 10 + 1))
    for index in range(THREADS):
        steps = [e.data["step"] for e in stored if e.data["writer"] == index]
        assert steps == list(range(10))


def test_racing_expected_last_seq_in_one_batch_lets_exactly_one_win(
    store: SQLCheckpointer,
) -> None:
    store.append("race", [NewEvent(kind=EventKind.CUSTOM)])
    results = together(
        lambda index: store.append(
            "race", [NewEvent(kind=EventKind.CUSTOM, data={"i": index})], expected_last_seq=1
        )
    )
    wins = [result for result in results if isinstance(result, list)]
    assert len(wins) == 1
    assert sum(isinstance(result, SequenceConflict) for result in results) == THREADS - 1
    assert store.list_events("race", since_seq=1) == wins[0]


def test_a_batch_that_fails_before_committing_runs_every_call_alone(
    store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_every_batch(store, monkeypatch, committing=False)
    batches = Recorded(store)
    results = together(lambda index: store.append(f"r{index}", [NewEvent(kind=EventKind.CUSTOM)]))
    assert max(batches.sizes) > 1
    assert all(isinstance(result, list) for result in results)
    assert sorted(store.list_runs()) == sorted(f"r{index}" for index in range(THREADS))


def test_a_batch_lost_while_committing_reports_unkeyed_appends_and_retries_saves(
    store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail_every_batch(store, monkeypatch, committing=True)
    batches = Recorded(store)

    def write(index: int) -> Any:
        if index % 2:
            return store.append(f"append-{index}", [NewEvent(kind=EventKind.CUSTOM)])
        return store.save_event(event(f"save-{index}", 1))

    results = together(write)
    assert max(batches.sizes) > 1
    check_only_unkeyed_appends_reported(results)
    for index in range(0, THREADS, 2):
        assert results[index] is None
        assert store.list_events(f"save-{index}") == [event(f"save-{index}", 1)]


def test_queued_saves_share_one_batch_and_leave_what_saving_in_turn_would(
    store: SQLCheckpointer,
) -> None:
    batches = Recorded(store)
    results = queued(
        store,
        [
            lambda: store.save_events([event("a", 1), event("a", 2)], state("a", 2, v=1)),
            lambda: store.save_snapshot("a", state("a", 2, v=2)),  # the same seq: replaces
            lambda: store.save_events([event("a", 3)], state("a", 3, v=3)),
            lambda: store.save_snapshot("a", state("a", 1, v=4)),  # a lower seq: ignored
            lambda: store.save_event(event("b", 1)),
            lambda: store.save_snapshot("c", state("c", 5, v=1)),
            lambda: store.save_snapshot("c", state("c", 5, v=2)),
        ],
    )
    assert results == [None] * 7
    assert batches.sizes == [7]
    assert store.list_events("a") == [event("a", 1), event("a", 2), event("a", 3)]
    assert latest(store, "a") == (3, {"v": 3})
    assert store.list_events("b") == [event("b", 1)]
    assert latest(store, "c") == (5, {"v": 2})
    assert [store.last_seq(run) for run in ("a", "b", "c")] == [3, 1, 5]
    assert set(store.list_runs()) == {"a", "b", "c"}


def test_a_conflict_in_a_batch_of_saves_fails_alone(store: SQLCheckpointer) -> None:
    store.save_event(event("taken", 1, original=True))
    batches = Recorded(store)
    results = queued(
        store,
        [
            lambda: store.save_events([event("ok-1", 1)], state("ok-1", 1)),
            lambda: store.save_events([event("taken", 1, original=False), event("taken", 2)]),
            lambda: store.save_event(event("taken", 1, original=True)),  # a retry: a no-op
            lambda: store.save_events([event("ok-2", 1), event("ok-2", 2)], state("ok-2", 2)),
        ],
    )
    assert batches.sizes == [4]
    assert results[0] is None
    assert isinstance(results[1], SequenceConflict)
    assert results[2:] == [None, None]
    assert store.list_events("taken") == [event("taken", 1, original=True)]
    assert store.last_seq("taken") == 1
    assert store.list_events("ok-1") == [event("ok-1", 1)]
    assert latest(store, "ok-1") == (1, {})
    assert store.list_events("ok-2") == [event("ok-2", 1), event("ok-2", 2)]
    assert latest(store, "ok-2") == (2, {})


def test_a_batch_of_saves_is_stored_without_a_savepoint_per_call(
    store: SQLCheckpointer,
) -> None:
    statements = Statements(store)
    works = [
        (lambda index=index: store.save_events([event(f"s-{index}", 1)], state(f"s-{index}", 1)))
        for index in range(4)
    ]
    assert queued(store, works) == [None] * 4
    assert not [sql for sql in statements.seen if "SAVEPOINT" in sql]
    if store.engine.dialect.name == "postgresql":
        assert len(statements.seen) == 1  # the whole batch is one statement, one round trip
    for index in range(4):
        assert latest(store, f"s-{index}") == (1, {})


def test_batches_are_taken_oldest_first_and_bounded(empty_database: str) -> None:
    policy = GroupCommitPolicy(max_batch=3)
    with SQLCheckpointer(empty_database, group_commit=policy) as store:
        batches = Recorded(store)
        works = [
            (lambda index=index: store.save_event(event(f"q{index}", 1))) for index in range(8)
        ]
        assert queued(store, works) == [None] * 8
        assert batches.keys == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6", "q7"]]


def test_a_lone_writer_never_waits_for_company(empty_database: str) -> None:
    policy = GroupCommitPolicy(max_batch=8, max_wait=1.0)
    with SQLCheckpointer(empty_database, group_commit=policy) as store:
        commits = store._commits
        assert commits is not None
        waits: list[int] = []
        take = commits._take

        def counting() -> list[Pending]:
            waits.append(1)
            return take()

        commits._take = counting  # type: ignore[method-assign]
        for seq in range(1, 4):
            store.save_events([event("alone", seq)], state("alone", seq))
        assert waits == []  # every call committed at once, without looking for a batch
        assert latest(store, "alone") == (3, {})


class Fallbacks:
    """How many batches took the savepoint-per-call path."""

    def __init__(self, store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        commit_batch = store._commit_batch

        def counting(ordered: list[Pending], committing: list[bool]) -> Any:
            self.count += 1
            return commit_batch(ordered, committing)

        monkeypatch.setattr(store, "_commit_batch", counting)


def custom(**data: Any) -> NewEvent:
    return NewEvent(kind=EventKind.CUSTOM, data=data)


def test_queued_appends_keep_their_order_and_a_failed_expectation_fails_alone(
    store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallbacks = Fallbacks(store, monkeypatch)
    results = queued(
        store,
        [
            lambda: store.append("a", [custom(n=1)]),
            lambda: store.append("a", [custom(n=2), custom(n=3)], expected_last_seq=1),
            lambda: store.append("a", [custom(n=4)], expected_last_seq=1),  # a is at 3 now
            lambda: store.append("b", [custom(n=1)], expected_last_seq=0, group="g"),
            lambda: store.append("a", [custom(n=5)]),
        ],
    )
    assert [[e.seq for e in result] for result in results if isinstance(result, list)] == [
        [1],
        [2, 3],
        [1],
        [4],
    ]
    assert isinstance(results[2], SequenceConflict)
    assert "has last seq 3, not the expected 1" in str(results[2])
    assert [e.data["n"] for e in store.list_events("a")] == [1, 2, 3, 5]
    assert store.run_group("b") == "g"
    # On Postgres every append is one statement, all sent in one pipeline: no savepoints.
    # SQLite and MariaDB had moved the run's row for the failed expectation: the batch ran
    # again with a savepoint per call.
    assert fallbacks.count == (0 if store.engine.dialect.name == "postgresql" else 1)


def test_a_batch_of_appends_runs_without_a_savepoint_per_call(
    store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallbacks = Fallbacks(store, monkeypatch)
    results = queued(
        store,
        [
            lambda: store.append("a", [custom(n=1)]),
            lambda: store.append("b", [custom(n=1), custom(n=2)], group="g"),
            lambda: store.append(
                "a", [NewEvent(kind=EventKind.CUSTOM, key="k", data={"n": 2})], expected_last_seq=1
            ),
            lambda: store.append("c", [custom(n=1)], expected_last_seq=0),
            lambda: store.append("a", [custom(n=3)]),
        ],
    )
    assert [[e.seq for e in result] for result in results] == [[1], [1, 2], [2], [1], [3]]
    assert [e.data["n"] for e in store.list_events("a")] == [1, 2, 3]
    assert store.event_by_key("a", "k") == results[2][0]
    assert [e.data["n"] for e in store.list_events("b")] == [1, 2]
    assert store.run_group("b") == "g"
    assert [store.last_seq(run) for run in "abc"] == [3, 2, 1]
    # Postgres sends the batch as one pipeline; SQLite and MariaDB as two statements per
    # append in one transaction. Neither needs a savepoint per call.
    assert fallbacks.count == 0


def test_an_append_past_the_last_seq_in_a_batch_fails_alone(
    store: SQLCheckpointer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save_event(event("full", 2**63 - 1))
    fallbacks = Fallbacks(store, monkeypatch)
    results = queued(
        store,
        [
            lambda: store.append("ok", [custom(n=1)]),
            lambda: store.append("full", [custom(n=1)]),
            lambda: store.append("ok", [custom(n=2)]),
        ],
    )
    assert [e.seq for e in results[0]] == [1]
    assert isinstance(results[1], InvalidInput)
    assert [e.seq for e in results[2]] == [2]
    assert store.last_seq("full") == 2**63 - 1
    assert [e.seq for e in store.list_events("full")] == [2**63 - 1]
    assert [e.data["n"] for e in store.list_events("ok")] == [1, 2]
    # The batch is rolled back and runs again with a savepoint per call, where that append
    # fails alone (SQLite moves the run's row before it can tell; the servers refuse it).
    assert fallbacks.count == 1


def test_a_retried_keyed_append_in_a_batch_returns_what_is_stored(
    store: SQLCheckpointer,
) -> None:
    (first,) = store.append("k", [NewEvent(kind=EventKind.CUSTOM, key="step-1")])
    results = queued(
        store,
        [
            lambda: store.append("k", [NewEvent(kind=EventKind.CUSTOM, key="step-1")]),
            lambda: store.append("other", [custom(n=1)]),
            lambda: store.append("k", [NewEvent(kind=EventKind.CUSTOM, key="step-2")]),
        ],
    )
    assert results[0] == [first]
    assert [e.seq for e in results[1]] == [1]
    assert [e.seq for e in results[2]] == [2]
    assert [e.seq for e in store.list_events("k")] == [1, 2]


def test_a_caller_that_stops_waiting_hands_on_the_lead() -> None:
    commits = GroupCommit(GroupCommitPolicy(), lambda batch: None)

    def waiting(run_key: str) -> Pending:
        call = Pending(
            alone=lambda: None,
            inside=lambda conn: None,
            on_conflict=None,
            run_key=run_key,
            repeatable=True,
        )
        call.wake = threading.Lock()
        call.wake.acquire()
        return call

    first, second, third = waiting("a"), waiting("b"), waiting("c")
    commits._busy = True
    commits._queue.extend([first, second, third])
    commits._abandon(third)  # an interrupted caller that was not chosen to lead
    assert list(commits._queue) == [first, second]
    assert not second.wake.acquire(blocking=False)
    first.leading = True  # the commit in flight chose it, then its thread was interrupted
    commits._abandon(first)
    assert list(commits._queue) == [second]
    assert second.leading
    assert second.wake.acquire(blocking=False)  # woken to lead in its place
    commits._abandon(second)
    assert not commits._busy  # nobody is left to commit: the next caller commits at once


def test_a_leader_interrupted_while_it_commits_fails_alone() -> None:
    """Ctrl-C in the thread committing a batch: the other threads' calls are not its to fail.

    Before, every other call of the batch failed with a bare ``RuntimeError`` and none was
    stored. A call that may run twice is carried by the next leader; an append without keys,
    which the interrupted commit may have stored, is reported as maybe stored.
    """
    in_flight, go_on = threading.Event(), threading.Event()
    batches: list[list[str]] = []

    def commit_many(batch: list[Pending]) -> None:
        batches.append([call.run_key for call in batch])
        if len(batches) == 1:
            raise KeyboardInterrupt
        for call in batch:
            call.settle(f"{call.run_key} in a batch")

    commits = GroupCommit(GroupCommitPolicy(), commit_many)

    def first_alone() -> str:
        in_flight.set()
        assert go_on.wait(10)
        return "first alone"

    def call(run_key: str, repeatable: bool, alone: Callable[[], Any] | None = None) -> Pending:
        return Pending(
            alone=alone or (lambda: f"{run_key} alone"),
            inside=lambda conn: None,
            on_conflict=None,
            run_key=run_key,
            repeatable=repeatable,
        )

    outcomes: dict[str, object] = {}

    def submit(pending: Pending) -> None:
        try:
            outcomes[pending.run_key] = commits.submit(pending)
        except BaseException as exc:  # what each thread saw is the point
            outcomes[pending.run_key] = exc

    threads = [threading.Thread(target=submit, args=(call("first", True, first_alone),))]
    threads[0].start()
    assert in_flight.wait(10)
    queued = [call("leader", True), call("save", True), call("append", False)]
    for pending in queued:  # queued in this order behind the commit in flight
        threads.append(threading.Thread(target=submit, args=(pending,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while pending not in commits._queue:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    go_on.set()
    for thread in threads:
        thread.join(10)
    assert outcomes["first"] == "first alone"
    assert isinstance(outcomes["leader"], KeyboardInterrupt)
    assert outcomes["save"] == "save alone"  # carried by the next leader, alone
    assert isinstance(outcomes["append"], StoreUnavailable)
    assert "may or may not be stored" in str(outcomes["append"])
    assert batches == [["leader", "save", "append"]]
    assert not commits._busy
    assert not commits._queue


def test_policy_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommitPolicy(max_batch=0)
    with pytest.raises(ValueError, match="max_wait"):
        GroupCommitPolicy(max_wait=5)


def test_a_batch_meeting_a_taken_key_fails_that_append_alone_and_logs_no_warning(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As the async twin in ``test_async_group_commit.py``: on Postgres the batch is one
    pipeline, the failed append its first statement, and psycopg used to log "error ignored
    terminating <Pipeline>: pipeline aborted" when its error came back mid-batch.
    """
    policy = GroupCommitPolicy(max_batch=64, max_wait=0.0)
    with SQLCheckpointer(empty_database, group_commit=policy) as grouped:
        grouped.append("a-taken", [NewEvent(kind=EventKind.CUSTOM, key="k", data={"v": 1})])
        changed = NewEvent(kind=EventKind.CUSTOM, key="k", data={"v": 2})
        works: list[Callable[[], Any]] = [lambda: grouped.append("a-taken", [changed])]
        for index in range(1, 64):
            works.append(
                lambda index=index: grouped.append(  # type: ignore[misc]
                    f"b-{index}", [NewEvent(kind=EventKind.CUSTOM, key="k")]
                )
            )
        batches = Recorded(grouped)
        with caplog.at_level(logging.WARNING):
            results = queued(grouped, works)
        assert batches.sizes == [64]
        assert isinstance(results[0], SequenceConflict)
        assert all(isinstance(result, list) for result in results[1:]), results
        assert [e.data for e in grouped.list_events("a-taken")] == [{"v": 1}]
        for index in range(1, 64):
            assert len(grouped.list_events(f"b-{index}")) == 1
    assert [record.getMessage() for record in caplog.records] == []
