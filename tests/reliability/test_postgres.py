"""PostgreSQL: restarts, stops and concurrent retries on a private server."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import EventKind, NewEvent, SQLCheckpointer
from purpose_agent.testing.suite import ev
from tests.reliability.workload import (
    CALM,
    JOIN_TIMEOUT,
    attempt,
    check_steps,
    describe,
    outage_under_load,
    save_step,
    storm_under_load,
)
from tests.servers import LocalPostgres

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]


def _deadlocks(server: LocalPostgres, database: str) -> int:
    engine = sa.create_engine(server.url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = :name"),
            {"name": database},
        ).scalar()
    engine.dispose()
    return int(found or 0)


def test_first_save_after_a_restart_succeeds_with_three_pooled_connections(
    private_postgres: LocalPostgres, postgres_db: URL
) -> None:
    with SQLCheckpointer(postgres_db) as store:
        barrier = threading.Barrier(3)

        def use(worker: int) -> None:
            # Three connections checked out at once, so the pool keeps three.
            with store.engine.connect() as conn:
                barrier.wait(JOIN_TIMEOUT)
                conn.exec_driver_sql("SELECT 1")
                barrier.wait(JOIN_TIMEOUT)
            store.save_event(ev(f"t{worker}", 1))

        threads = [threading.Thread(target=use, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert store.engine.pool.checkedin() >= 3  # type: ignore[attr-defined]

        private_postgres.restart()
        error = attempt(lambda: store.save_event(ev("after", 1)))
        assert error is None, describe(error)
        assert store.list_events("after") == [ev("after", 1)]


def test_an_append_without_keys_after_a_restart_runs_on_a_fresh_connection(
    private_postgres: LocalPostgres, postgres_db: URL
) -> None:
    """The restart's fast shutdown ends the idle pooled sessions (57P01): nothing of the next
    append had been sent, yet it failed with "may or may not be stored"."""
    with SQLCheckpointer(postgres_db) as store:
        store.append("restarted", [NewEvent(kind=EventKind.CUSTOM)])
        private_postgres.restart()
        error = attempt(lambda: store.append("restarted", [NewEvent(kind=EventKind.CUSTOM)]))
        assert error is None, describe(error)
        assert [event.seq for event in store.list_events("restarted")] == [1, 2]


def test_retried_steps_racing_new_ones_cause_no_error_and_no_deadlock(
    private_postgres: LocalPostgres, postgres_db: URL
) -> None:
    steps, size = 200, 7
    database = str(postgres_db.database)
    before = _deadlocks(private_postgres, database)
    errors: list[BaseException] = []
    done = [0]
    finished = threading.Event()
    with SQLCheckpointer(postgres_db) as store:

        def write() -> None:
            try:
                for step in range(1, steps + 1):
                    error = attempt(lambda: save_step(store, "r", step, size))  # noqa: B023
                    if error is not None:
                        errors.append(error)
                    done[0] = step
            finally:
                finished.set()

        def retry() -> None:
            # An ambiguous commit retried: the step just saved, or the one being saved now.
            turn = 0
            while not finished.is_set():
                step = done[0] + turn % 2
                turn += 1
                if 1 <= step <= steps:
                    error = attempt(lambda: save_step(store, "r", step, size))  # noqa: B023
                    if error is not None:
                        errors.append(error)

        threads = [threading.Thread(target=write), threading.Thread(target=retry)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_TIMEOUT * 2)
        assert not any(thread.is_alive() for thread in threads), "a save hung"
        check_steps(store, "r", set(range(1, steps + 1)), size)
    # The store's connections are closed: their backends have reported their statistics.
    time.sleep(0.5)
    deadlocks = _deadlocks(private_postgres, database) - before
    seen = {"errors": [describe(error) for error in errors], "server deadlocks": deadlocks}
    assert seen == {"errors": [], "server deadlocks": 0}


def test_identical_resave_of_a_large_batch_costs_about_the_first_save(
    postgres_db: URL,
) -> None:
    """A retry of 20,000 events after an ambiguous commit compares them in bulk, not one by one.

    Counted in statements, not seconds (a timing flakes on a busy machine): re-saving 20,000
    events takes about as many as re-saving 200 (lookups go 5,000 keys at a time).
    """
    with SQLCheckpointer(postgres_db) as store:
        sent: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
            sent.append(statement)

        def resave(run_id: str, size: int) -> int:
            events = [ev(run_id, seq, i=seq) for seq in range(1, size + 1)]
            store.save_events(events)
            sa.event.listen(store.engine, "before_cursor_execute", count)
            sent.clear()
            store.save_events(events)
            sa.event.remove(store.engine, "before_cursor_execute", count)
            assert len(store.list_events(run_id)) == size
            return len(sent)

        small, big = resave("small", 200), resave("big", 20_000)
    assert big <= small + 5, f"re-saving 200 events: {small} statements; 20,000: {big}"


@pytest.mark.parametrize("outage", ["restart", "stop-start"])
def test_writers_under_load_lose_nothing_across_an_outage(
    private_postgres: LocalPostgres, postgres_db: URL, outage: str
) -> None:
    outage_under_load(postgres_db, private_postgres, outage)


def test_a_pg_terminate_backend_storm_under_write_load_loses_nothing(
    private_postgres: LocalPostgres, postgres_db: URL
) -> None:
    admin = sa.create_engine(private_postgres.url, poolclass=sa.pool.NullPool)
    database = postgres_db.database

    def terminate() -> None:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": database},
            )

    with SQLCheckpointer(postgres_db) as store:
        assert storm_under_load(store, terminate) == CALM
    admin.dispose()
