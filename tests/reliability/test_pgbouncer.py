"""PgBouncer in transaction pooling mode, as hosted Postgres offers it, in front of the store."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL

from purpose_agent import Checkpointer, EventKind, NewEvent, RunState, SQLCheckpointer
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.testing import CheckpointerSuite
from purpose_agent.testing.suite import ev
from tests.reliability.workload import JOIN_TIMEOUT, attempt, describe, foreign
from tests.servers import LocalPgBouncer, LocalPostgres, throwaway_database

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

        workers = [threading.Thread(target=write, args=(worker,)) for worker in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(JOIN_TIMEOUT * 2)
        assert not any(worker.is_alive() for worker in workers), "a call hung"
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

        workers = [threading.Thread(target=write, args=(worker,)) for worker in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(JOIN_TIMEOUT * 2)
        assert not any(worker.is_alive() for worker in workers), "a call hung"
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
