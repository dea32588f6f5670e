"""Group commit for asyncio tasks on real databases: shared commits, lone failures, order kept."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
from sqlalchemy import event as sql_event

from purpose_agent import (
    AsyncSQLCheckpointer,
    EventKind,
    NewEvent,
    PAEvent,
    SequenceConflict,
)
from purpose_agent.db.group_commit import GroupCommitPolicy, Pending
from purpose_agent.db.task_group_commit import TaskGroupCommit
from purpose_agent.records import EventRow
from tests.group_commits import check_only_unkeyed_appends_reported, event, fail_every_batch, state

TASKS = 8
POLICY = GroupCommitPolicy(max_batch=TASKS, max_wait=0.02)
Test = Callable[[AsyncSQLCheckpointer], Coroutine[Any, Any, None]]


class Recorded:
    """The sizes of the batches of queued calls a store's group commit ran (1: one call).

    A call that found nothing in flight commits at once on its caller's path, and is not
    counted here.
    """

    def __init__(self, store: AsyncSQLCheckpointer) -> None:
        self.sizes: list[int] = []
        assert store._store is not None
        commits = store._store._commits
        assert isinstance(commits, TaskGroupCommit)
        run = commits._run_async

        async def recording(batch: list[Pending]) -> None:
            self.sizes.append(len(batch))
            await run(batch)

        commits._run_async = recording  # type: ignore[method-assign]


@pytest.fixture
def on_store(empty_database: str) -> Callable[[Test], None]:
    """Runs a test coroutine on an open grouped store, in a fresh event loop."""

    def run(test: Test) -> None:
        async def main() -> None:
            async with await AsyncSQLCheckpointer.open(empty_database, group_commit=POLICY) as s:
                await test(s)

        asyncio.run(main())

    return run


async def together(work: Callable[[int], Awaitable[Any]], tasks: int = TASKS) -> list[Any]:
    """Run ``work(i)`` in tasks started at once; their results or errors, by ``i``."""
    return list(await asyncio.gather(*(work(i) for i in range(tasks)), return_exceptions=True))


async def latest(store: AsyncSQLCheckpointer, run_id: str) -> tuple[int, dict[str, Any]] | None:
    """The seq and data of the run's snapshot (its timestamps differ from the one saved)."""
    found = await store.load_latest(run_id)
    return (found.seq, found.data) if found is not None else None


def _fallbacks(store: AsyncSQLCheckpointer, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch that took the savepoint-per-call path, from now on."""
    assert store._store is not None
    fallbacks: list[int] = []
    commit_batch = store._store._commit_batch

    def counting(ordered: list[Pending], committing: list[bool]) -> Any:
        fallbacks.append(len(ordered))
        return commit_batch(ordered, committing)

    monkeypatch.setattr(store._store, "_commit_batch", counting)
    return fallbacks


async def queued(
    store: AsyncSQLCheckpointer, works: list[Callable[[], Awaitable[Any]]]
) -> list[Any]:
    """Queue ``works`` in this order while a commit is in flight, then let them commit.

    Returns their results or errors, by position.
    """
    assert store._store is not None
    commits = store._store._commits
    assert isinstance(commits, TaskGroupCommit)
    commits._inline = True  # as if a call were committing on its own path
    in_flight, commits._in_flight = commits._in_flight, 1  # no second batch meanwhile
    running = []
    for index, work in enumerate(works):
        running.append(asyncio.ensure_future(work()))
        while len(commits._waiting) <= index:
            await asyncio.sleep(0)
    commits._inline = False
    commits._start()
    commits._in_flight = in_flight
    return list(await asyncio.gather(*running, return_exceptions=True))


def test_overlapping_tasks_share_commits_and_lose_nothing(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        batches = Recorded(store)

        async def write(index: int) -> None:
            for seq in range(1, 31):
                await store.save_event(event(f"run-{index}", seq, writer=index))

        assert await together(write) == [None] * TASKS
        assert max(batches.sizes) > 1  # some commits carried several tasks' events
        assert sum(batches.sizes) < TASKS * 30  # the others committed at once, on their own
        for index in range(TASKS):
            stored = await store.list_events(f"run-{index}")
            assert stored == [event(f"run-{index}", seq, writer=index) for seq in range(1, 31)]

    on_store(test)


def test_a_lone_task_commits_alone(on_store: Callable[[Test], None]) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        batches = Recorded(store)
        for seq in range(1, 6):
            await store.save_event(event("alone", seq))
        await store.append("alone", [NewEvent(kind=EventKind.CUSTOM)])
        assert batches.sizes == []  # each committed at once on its own path, never queued
        assert await store.last_seq("alone") == 6

    on_store(test)


def test_a_conflicting_call_fails_alone_and_the_rest_of_its_batch_commits(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.save_event(event("taken", 1, original=True))
        batches = Recorded(store)

        async def write(index: int) -> None:
            if index == 0:
                await store.save_event(event("taken", 1, original=False))  # a conflict
            else:
                await store.save_events([event(f"ok-{index}", 1), event(f"ok-{index}", 2)])

        results = await together(write)
        assert isinstance(results[0], SequenceConflict)
        assert results[1:] == [None] * (TASKS - 1)
        assert max(batches.sizes) > 1
        assert await store.list_events("taken") == [event("taken", 1, original=True)]
        for index in range(1, TASKS):
            assert await store.list_events(f"ok-{index}") == [
                event(f"ok-{index}", 1),
                event(f"ok-{index}", 2),
            ]

    on_store(test)


def test_appends_to_one_run_in_batches_keep_each_tasks_order(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        batches = Recorded(store)

        async def append(index: int) -> list[int]:
            seqs = []
            for step in range(10):
                data = {"writer": index, "step": step}
                (stored,) = await store.append("shared", [NewEvent(kind="custom", data=data)])
                seqs.append(stored.seq)
            return seqs

        results = await together(append)
        assert max(batches.sizes) > 1
        for seqs in results:
            assert seqs == sorted(seqs)  # each task's events in the order it appended them
        stored = await store.list_events("shared")
        assert [e.seq for e in stored] == list(range(1, TASKS * 10 + 1))
        for index in range(TASKS):
            steps = [e.data["step"] for e in stored if e.data["writer"] == index]
            assert steps == list(range(10))

    on_store(test)


def test_racing_expected_last_seq_in_one_batch_lets_exactly_one_win(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.append("race", [NewEvent(kind=EventKind.CUSTOM)])
        batches = Recorded(store)
        results = await together(
            lambda index: store.append(
                "race", [NewEvent(kind=EventKind.CUSTOM, data={"i": index})], expected_last_seq=1
            )
        )
        assert max(batches.sizes) > 1
        wins = [result for result in results if isinstance(result, list)]
        assert len(wins) == 1
        assert sum(isinstance(result, SequenceConflict) for result in results) == TASKS - 1
        assert await store.list_events("race", since_seq=1) == wins[0]

    on_store(test)


def test_a_cancelled_caller_does_not_cancel_the_commit_carrying_others(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        writes = [
            asyncio.ensure_future(store.save_event(event(f"c-{index}", 1)))
            for index in range(TASKS)
        ]
        await asyncio.sleep(0)  # every task has queued its call
        writes[0].cancel()
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:] == [None] * (TASKS - 1)
        for index in range(1, TASKS):
            assert await store.list_events(f"c-{index}") == [event(f"c-{index}", 1)]

    on_store(test)


def _failing_batch(
    store: AsyncSQLCheckpointer, monkeypatch: pytest.MonkeyPatch, committing: bool
) -> None:
    """Make every batch of the sync store the async one runs on fail (see fail_every_batch)."""
    assert store._store is not None
    fail_every_batch(store._store, monkeypatch, committing)


def test_a_batch_that_fails_before_committing_runs_every_call_alone(
    on_store: Callable[[Test], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        _failing_batch(store, monkeypatch, committing=False)
        batches = Recorded(store)
        results = await together(
            lambda index: store.append(f"r{index}", [NewEvent(kind=EventKind.CUSTOM)])
        )
        assert max(batches.sizes) > 1
        assert all(isinstance(result, list) for result in results)
        assert sorted(await store.list_runs()) == sorted(f"r{index}" for index in range(TASKS))

    on_store(test)


def test_a_batch_lost_while_committing_reports_unkeyed_appends_and_retries_saves(
    on_store: Callable[[Test], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        _failing_batch(store, monkeypatch, committing=True)
        batches = Recorded(store)

        async def write(index: int) -> Any:
            if index % 2:
                return await store.append(f"append-{index}", [NewEvent(kind=EventKind.CUSTOM)])
            return await store.save_event(event(f"save-{index}", 1))

        results = await together(write)
        assert max(batches.sizes) > 1
        check_only_unkeyed_appends_reported(results)
        for index in range(0, TASKS, 2):
            assert results[index] is None
            assert await store.list_events(f"save-{index}") == [event(f"save-{index}", 1)]

    on_store(test)


def test_queued_saves_share_one_batch_and_leave_what_saving_in_turn_would(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.last_seq("opened")
        batches = Recorded(store)
        results = await queued(
            store,
            [
                lambda: store.save_events([event("a", 1), event("a", 2)], state("a", 2, v=1)),
                lambda: store.save_snapshot("a", state("a", 2, v=2)),  # the same seq: replaces
                lambda: store.save_events([event("a", 3)], state("a", 3, v=3)),
                lambda: store.save_snapshot("a", state("a", 1, v=4)),  # a lower seq: ignored
                lambda: store.save_event(event("b", 1)),
            ],
        )
        assert results == [None] * 5
        assert batches.sizes == [5]
        assert await store.list_events("a") == [event("a", 1), event("a", 2), event("a", 3)]
        assert await latest(store, "a") == (3, {"v": 3})
        assert await store.list_events("b") == [event("b", 1)]
        assert [await store.last_seq(run) for run in ("a", "b")] == [3, 1]

    on_store(test)


def test_a_conflict_in_a_batch_of_saves_fails_alone(on_store: Callable[[Test], None]) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.save_event(event("taken", 1, original=True))
        batches = Recorded(store)
        results = await queued(
            store,
            [
                lambda: store.save_events([event("ok-1", 1)], state("ok-1", 1)),
                lambda: store.save_events([event("taken", 1, original=False), event("taken", 2)]),
                lambda: store.save_event(event("taken", 1, original=True)),  # a retry: a no-op
                lambda: store.save_events([event("ok-2", 1)], state("ok-2", 1)),
            ],
        )
        assert batches.sizes == [4]
        assert isinstance(results[1], SequenceConflict)
        assert [results[0], *results[2:]] == [None, None, None]
        assert await store.list_events("taken") == [event("taken", 1, original=True)]
        assert await latest(store, "ok-1") == (1, {})
        assert await latest(store, "ok-2") == (1, {})

    on_store(test)


def test_a_batch_of_saves_is_stored_without_a_savepoint_per_call(
    on_store: Callable[[Test], None],
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.last_seq("opened")
        seen: list[str] = []

        def listen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        sql_event.listen(store.engine.sync_engine, "before_cursor_execute", listen)
        works = [
            (
                lambda index=index: store.save_events(
                    [event(f"s-{index}", 1)], state(f"s-{index}", 1)
                )
            )
            for index in range(4)
        ]
        assert await queued(store, works) == [None] * 4
        assert not [sql for sql in seen if "SAVEPOINT" in sql]
        if store.engine.dialect.name == "postgresql":
            assert len(seen) == 1  # the whole batch is one statement, one round trip
        for index in range(4):
            assert await latest(store, f"s-{index}") == (1, {})

    on_store(test)


def test_queued_appends_keep_their_order_and_a_failed_expectation_fails_alone(
    on_store: Callable[[Test], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.last_seq("opened")
        fallbacks = _fallbacks(store, monkeypatch)

        def custom(n: int) -> NewEvent:
            return NewEvent(kind=EventKind.CUSTOM, data={"n": n})

        results = await queued(
            store,
            [
                lambda: store.append("a", [custom(1)]),
                lambda: store.append("a", [custom(2), custom(3)], expected_last_seq=1),
                lambda: store.append("a", [custom(4)], expected_last_seq=1),  # a is at 3 now
                lambda: store.append("a", [custom(5)]),
            ],
        )
        assert [[e.seq for e in result] for result in results if isinstance(result, list)] == [
            [1],
            [2, 3],
            [4],
        ]
        assert isinstance(results[2], SequenceConflict)
        assert [e.data["n"] for e in await store.list_events("a")] == [1, 2, 3, 5]
        # On Postgres every append is one statement, all sent in one pipeline: no savepoints.
        # SQLite and MariaDB had moved the run's row for the failed expectation: the batch ran
        # again with a savepoint per call.
        assert fallbacks == ([] if store.engine.dialect.name == "postgresql" else [4])

    on_store(test)


def test_a_batch_of_appends_runs_without_a_savepoint_per_call(
    on_store: Callable[[Test], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def test(store: AsyncSQLCheckpointer) -> None:
        await store.last_seq("opened")
        fallbacks = _fallbacks(store, monkeypatch)

        def custom(n: int, key: str | None = None) -> NewEvent:
            return NewEvent(kind=EventKind.CUSTOM, data={"n": n}, key=key)

        results = await queued(
            store,
            [
                lambda: store.append("a", [custom(1)]),
                lambda: store.append("b", [custom(1), custom(2)], group="g"),
                lambda: store.append("a", [custom(2, key="k")], expected_last_seq=1),
                lambda: store.append("a", [custom(3)]),
                lambda: store.append("c", [custom(1)], expected_last_seq=0),
            ],
        )
        assert [[e.seq for e in result] for result in results] == [
            [1],
            [1, 2],
            [2],
            [3],
            [1],
        ]
        assert [e.data["n"] for e in await store.list_events("a")] == [1, 2, 3]
        assert await store.event_by_key("a", "k") == results[2][0]
        assert await store.run_group("b") == "g"
        assert fallbacks == []

    on_store(test)


def test_batches_in_flight_at_once_never_share_a_run() -> None:
    async def main() -> None:
        commits = TaskGroupCommit(GroupCommitPolicy(max_batch=8), lambda batch: None, in_flight=2)

        def call(run_key: str, *others: str) -> tuple[Pending, asyncio.Future[None]]:
            rows = [EventRow(run, 1, "custom", 1.0, "main", "{}") for run in (run_key, *others)]
            pending = Pending(
                alone=lambda: None,
                inside=lambda conn: None,
                on_conflict=None,
                run_key=run_key,
                repeatable=True,
                saves=(rows, None),
            )
            return pending, asyncio.get_running_loop().create_future()

        queue = [call("a"), call("b"), call("d", "e"), call("e"), call("a", "f"), call("f")]
        commits._waiting = list(queue)
        commits._busy_runs = {"a"}  # a batch writing run a is in flight
        taken = commits._take_ready()
        # Run a waits for the batch in flight, and so does f, behind a call of a and f that
        # arrived before it: calls of one run commit in the order they arrived. The call of
        # e follows the call of d and e in the same batch.
        assert taken == [queue[1], queue[2], queue[3]]
        assert commits._waiting == [queue[0], queue[4], queue[5]]

    asyncio.run(main())


def test_a_batch_meeting_a_taken_key_fails_that_append_alone_and_logs_no_warning(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """On Postgres the batch is one pipeline; the failed append comes first in it (the batch
    is ordered by run id), so its error returns while the others are still being sent. (The
    first tasks find a commit slot free and commit alone; the rest queue into the batch.)
    psycopg used to log "error ignored terminating <AsyncPipeline>: pipeline aborted" then,
    a warning on every such batch that Python prints to stderr where logging is not set up.
    """

    TAKEN = 10  # noqa: N806 - a constant of this test

    async def main() -> None:
        policy = GroupCommitPolicy(max_batch=64, max_wait=0.02)
        async with await AsyncSQLCheckpointer.open(empty_database, group_commit=policy) as store:
            await store.append("a-taken", [NewEvent(kind=EventKind.CUSTOM, key="k", data={"v": 1})])
            batches = Recorded(store)

            async def one(index: int) -> list[PAEvent]:
                if index == TAKEN:
                    changed = NewEvent(kind=EventKind.CUSTOM, key="k", data={"v": 2})
                    return await store.append("a-taken", [changed])
                return await store.append(f"b-{index}", [NewEvent(kind=EventKind.CUSTOM, key="k")])

            results = await together(one, tasks=64)
            assert max(batches.sizes) > 8
            assert isinstance(results[TAKEN], SequenceConflict)
            others = [index for index in range(64) if index != TAKEN]
            assert all(isinstance(results[index], list) for index in others), results
            assert [e.data for e in await store.list_events("a-taken")] == [{"v": 1}]
            for index in others:
                assert len(await store.list_events(f"b-{index}")) == 1

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    assert [record.getMessage() for record in caplog.records] == []
