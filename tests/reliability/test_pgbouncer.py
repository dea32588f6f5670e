"""PgBouncer in transaction pooling mode, as hosted Postgres offers it, in front of the store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import (
    AsyncSQLCheckpointer,
    Checkpointer,
    EventKind,
    NewEvent,
    RunState,
    SQLCheckpointer,
    StoreUnavailable,
)
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.testing import CheckpointerSuite
from purpose_agent.testing.suite import ev
from tests.reliability.workload import (
    JOIN_TIMEOUT,
    acheck_steps,
    asave_step,
    attempt,
    describe,
    foreign,
    run_workers,
    step_state,
)
from tests.servers import LocalPgBouncer, LocalPostgres, throwaway_database
from tests.test_postgres_settings import alter_database, race_writers

# No postgres marker: these tests need PgBouncer as well, which PURPOSE_AGENT_TEST_SKIP can opt
# out of on its own (see conftest.private_pgbouncer).
pytestmark = pytest.mark.reliability

# Rows of the shared behaviour suite that need nothing but a store: the everyday calls.
BASIC_ROWS = (
    "test_unknown_run_reads_as_empty",
    "test_event_comes_back_equal_with_ts_and_lane",
    "test_identical_retry_is_a_no_op",
    "test_conflicting_event_raises_and_keeps_the_first",
    "test_batch_spans_runs_and_lands_whole",
    "test_batch_with_a_conflict_writes_nothing",
    "test_latest_snapshot_is_the_highest_seq",
    "test_list_events_since_and_limit",
    "test_iter_events_streams_everything_in_order",
    "test_recover_returns_snapshot_and_exactly_the_tail",
    "test_list_runs_most_recently_written_first",
    "test_delete_run_removes_only_that_run",
)


@pytest.fixture
def bouncer_db(private_postgres: LocalPostgres, private_pgbouncer: LocalPgBouncer) -> Iterator[URL]:
    """An empty database on the private Postgres, addressed through PgBouncer (plain URL)."""
    with throwaway_database(private_postgres.url, "pa_bouncer") as direct:
        yield private_pgbouncer.url.set(database=direct.database)


def test_store_opens_and_takes_concurrent_writes_through_transaction_pooling(
    bouncer_db: URL,
) -> None:
    threads, writes = 8, 200
    errors: list[BaseException] = []
    opened = attempt(lambda: SQLCheckpointer(bouncer_db).close())  # migrates through the proxy
    assert opened is None, describe(opened)
    with SQLCheckpointer(bouncer_db) as store:

        def write(worker: int) -> None:
            run_id = f"w{worker}"
            for seq in range(1, writes + 1):
                error = attempt(lambda seq=seq: store.save_event(ev(run_id, seq)))
                if error is None and seq % 50 == 0:
                    error = attempt(lambda seq=seq: store.recover(run_id))
                if error is not None:
                    errors.append(error)

        run_workers(write, threads)
        assert foreign(errors) == []
        assert [describe(error) for error in errors] == []
        for worker in range(threads):
            run_id = f"w{worker}"
            assert store.list_events(run_id) == [ev(run_id, s) for s in range(1, writes + 1)]


def test_basic_behaviour_rows_pass_through_transaction_pooling(
    private_postgres: LocalPostgres, private_pgbouncer: LocalPgBouncer
) -> None:
    suite = CheckpointerSuite()
    failed: dict[str, str] = {}
    for row in BASIC_ROWS:
        with throwaway_database(private_postgres.url, "pa_bouncer") as direct:
            url = private_pgbouncer.url.set(database=direct.database)

            def run(row: str = row, url: URL = url) -> None:
                store: Checkpointer = SQLCheckpointer(url)
                try:
                    getattr(suite, row)(store)
                finally:
                    store.close()

            error = attempt(run)
            if error is not None:
                failed[row] = describe(error)
    assert failed == {}


def test_grouped_saves_and_pipelined_appends_pass_through_transaction_pooling(
    bouncer_db: URL,
) -> None:
    """A batch of saves is one statement and a batch of appends one pipeline: both via PgBouncer."""
    threads, steps = 8, 40
    policy = GroupCommitPolicy(max_batch=threads, max_wait=0.005)
    opened = attempt(lambda: SQLCheckpointer(bouncer_db).close())
    assert opened is None, describe(opened)
    with SQLCheckpointer(bouncer_db, group_commit=policy) as store:
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            for step in range(1, steps + 1):
                error = attempt(
                    lambda step=step: store.save_events(
                        [ev(f"s{worker}", step)], RunState(run_id=f"s{worker}", seq=step)
                    )
                )
                error = error or attempt(
                    lambda step=step: store.append(
                        "shared", [NewEvent(kind=EventKind.CUSTOM, data={"w": worker, "s": step})]
                    )
                )
                if error is not None:
                    errors.append(error)

        run_workers(write, threads)
        assert [describe(error) for error in errors] == []
        for worker in range(threads):
            assert store.list_events(f"s{worker}") == [
                ev(f"s{worker}", s) for s in range(1, steps + 1)
            ]
            assert store.load_latest(f"s{worker}").seq == steps  # type: ignore[union-attr]
        shared = store.list_events("shared")
        assert [event.seq for event in shared] == list(range(1, threads * steps + 1))
        for worker in range(threads):
            mine = [event.data["s"] for event in shared if event.data["w"] == worker]
            assert mine == list(range(1, steps + 1))


GROUPING = pytest.mark.parametrize("group_commit", [False, True], ids=["plain", "grouped"])
# Many more tasks than PgBouncer's 20 server connections, each making more than psycopg's
# five executions of a statement after which it would prepare it: a prepared statement would
# be missing, or another client's, on the server connection of a later transaction.
TASKS = 32


@GROUPING
def test_async_store_takes_concurrent_steps_and_appends_through_transaction_pooling(
    bouncer_db: URL, group_commit: bool
) -> None:
    steps, size = 20, 3

    async def scenario() -> list[str]:
        async with AsyncSQLCheckpointer(bouncer_db, group_commit=group_commit) as store:

            async def write(worker: int) -> None:
                run_id = f"a{worker}"
                for step in range(1, steps + 1):
                    await asave_step(store, run_id, step, size)
                    data = {"w": worker, "s": step}
                    await store.append("shared", [NewEvent(kind=EventKind.CUSTOM, data=data)])
                    if step % 5 == 0:
                        recovered = await store.recover(run_id)
                        assert recovered is not None
                        assert recovered.state == step_state(run_id, step, size)
                        assert recovered.events == []

            writing = asyncio.gather(
                *(write(worker) for worker in range(TASKS)), return_exceptions=True
            )
            outcomes = await asyncio.wait_for(writing, JOIN_TIMEOUT * 2)
            failed = [describe(outcome) for outcome in outcomes if outcome is not None]
            if failed:
                return failed
            for worker in range(TASKS):
                await acheck_steps(store, f"a{worker}", set(range(1, steps + 1)), size)
            shared = await store.list_events("shared")
            assert [event.seq for event in shared] == list(range(1, TASKS * steps + 1))
            for worker in range(TASKS):
                mine = [event.data["s"] for event in shared if event.data["w"] == worker]
                assert mine == list(range(1, steps + 1))
            return []

    assert asyncio.run(scenario()) == []


@GROUPING
def test_langgraph_async_saver_keeps_concurrent_threads_through_transaction_pooling(
    bouncer_db: URL, group_commit: bool
) -> None:
    pytest.importorskip("langgraph.checkpoint.base")
    from langgraph.checkpoint.base import empty_checkpoint
    from langgraph.checkpoint.base.id import uuid6

    from purpose_agent.integrations.langgraph import PurposeAgentSaver

    checkpoints = 8

    def config(thread_id: str, checkpoint_id: str | None = None) -> Any:
        configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        return {"configurable": configurable}

    async def scenario() -> list[str]:
        store = AsyncSQLCheckpointer(bouncer_db, group_commit=group_commit)
        saver = PurposeAgentSaver(store)

        async def thread(worker: int) -> None:
            thread_id = f"t{worker}"
            parent: str | None = None
            for n in range(checkpoints):
                checkpoint = empty_checkpoint()
                checkpoint["id"] = str(uuid6())
                checkpoint["channel_values"] = {"w": worker, "n": n}
                checkpoint["channel_versions"] = {"w": 1, "n": n + 1}
                stored = await saver.aput(
                    config(thread_id, parent), checkpoint, {"source": "loop", "step": n}, {}
                )
                assert stored == config(thread_id, checkpoint["id"])
                task = f"task-{n}"
                await saver.aput_writes(stored, [("out", n), ("log", f"{worker}/{n}")], task)
                found = await saver.aget_tuple(stored)
                assert found is not None
                assert found.checkpoint["id"] == checkpoint["id"]
                assert found.checkpoint["channel_values"] == {"w": worker, "n": n}
                assert found.pending_writes == [(task, "out", n), (task, "log", f"{worker}/{n}")]
                parent_config = config(thread_id, parent) if parent is not None else None
                assert found.parent_config == parent_config
                parent = checkpoint["id"]
            latest = await saver.aget_tuple(config(thread_id))
            assert latest is not None
            assert latest.checkpoint["id"] == parent

        try:
            outcomes = await asyncio.wait_for(
                asyncio.gather(
                    *(thread(worker) for worker in range(TASKS)), return_exceptions=True
                ),
                JOIN_TIMEOUT * 2,
            )
        finally:
            await store.close()
        return [describe(outcome) for outcome in outcomes if outcome is not None]

    assert asyncio.run(scenario()) == []


def test_appends_wait_for_a_writer_of_their_run_under_a_serializable_default_through_the_pooler(
    private_postgres: LocalPostgres, bouncer_db: URL
) -> None:
    """A pooler drops the startup options that pin a direct connection's isolation, so the
    one-statement append ran at the database's SERIALIZABLE: a writer holding the run's row
    made it fail with "could not serialize access" (133 of 320 contended appends), where it
    should wait and append after it."""
    direct = private_postgres.url.set(database=bouncer_db.database)
    # Before the pooler's first server connection: a session takes the default as it starts.
    SQLCheckpointer(direct).close()
    alter_database(direct, "default_transaction_isolation = 'serializable'")
    holder = sa.create_engine(direct, poolclass=sa.pool.NullPool, isolation_level="READ COMMITTED")
    stop = threading.Event()
    held = threading.Event()

    def hold_the_run_row() -> None:
        # Another writer of the run, committing every 30 ms and taking the row again at once.
        with holder.connect() as conn:
            while not stop.is_set():
                conn.exec_driver_sql(
                    "UPDATE pa_runs SET updated_ns = updated_ns + 1 WHERE run_id = 'r'"
                )
                held.set()
                time.sleep(0.03)
                conn.commit()

    with SQLCheckpointer(bouncer_db) as store:
        store.append("r", [NewEvent(kind=EventKind.CUSTOM)])
        writer = threading.Thread(target=hold_the_run_row)
        writer.start()
        try:
            assert held.wait(10)
            outcomes = [
                attempt(lambda: store.append("r", [NewEvent(kind=EventKind.CUSTOM)]))
                for _ in range(10)
            ]
        finally:
            stop.set()
            writer.join(JOIN_TIMEOUT)
            holder.dispose()
        assert [describe(error) for error in outcomes if error is not None] == []
        assert [event.seq for event in store.list_events("r")] == list(range(1, 12))


def test_writers_race_without_errors_under_a_serializable_default_through_the_pooler(
    private_postgres: LocalPostgres, bouncer_db: URL
) -> None:
    """The same race as on a direct connection, each kind of write by 8 threads at once."""
    direct = private_postgres.url.set(database=bouncer_db.database)
    SQLCheckpointer(direct).close()
    alter_database(direct, "default_transaction_isolation = 'serializable'")
    with SQLCheckpointer(bouncer_db) as store:
        race_writers(store)


def test_statement_pooling_is_refused_with_the_pool_mode_to_use(
    private_postgres: LocalPostgres,
) -> None:
    """Statement pooling refuses every transaction: the error was PgBouncer's line alone."""
    with (
        throwaway_database(private_postgres.url, "pa_bouncer") as direct,
        LocalPgBouncer(private_postgres, pool_mode="statement") as bouncer,
    ):
        SQLCheckpointer(direct).close()
        with (
            pytest.raises(StoreUnavailable) as refused,
            SQLCheckpointer(bouncer.url.set(database=direct.database)) as store,
        ):
            store.save_event(ev("r", 1))
        message = str(refused.value)
        assert "transaction blocks not allowed in statement pooling mode" in message
        assert "use pool_mode = transaction (or session) for this database" in message


def test_a_wait_for_a_server_connection_past_the_poolers_limit_says_what_to_change(
    private_postgres: LocalPostgres,
) -> None:
    """Session pooling gives each client connection a server connection for as long as it is
    open: a store whose pool outgrew the pooler's (8 + 16 against PgBouncer's default of 20)
    had its calls wait for one, then fail with PgBouncer's bare "query_wait_timeout"."""
    settings = {"default_pool_size": "1", "query_wait_timeout": "1"}
    with (
        throwaway_database(private_postgres.url, "pa_bouncer") as direct,
        LocalPgBouncer(private_postgres, pool_mode="session", settings=settings) as bouncer,
    ):
        SQLCheckpointer(direct).close()
        url = bouncer.url.set(database=direct.database)
        holder = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with holder.connect() as held:
            held.exec_driver_sql("SELECT 1")  # takes the pooler's only server connection

            async def save() -> None:
                async with AsyncSQLCheckpointer(url, migrate=False) as store:
                    await store.save_event(ev("r", 1))

            with pytest.raises(StoreUnavailable) as refused:
                asyncio.run(save())
        holder.dispose()
        message = str(refused.value)
        assert "query_wait_timeout" in message
        assert "in session pooling each client connection holds a server connection" in message
        assert "pool_mode = transaction" in message
        assert "default_pool_size" in message
        assert "pool_size=4, max_overflow=4" in message
