"""Rolling deploys: a migration runs while the previous release's workers keep writing.

Rolling back goes through ``db downgrade``: below 0002 it drops every event key and run group,
which no table holds, so "data in dropped tables is lost" said nothing about them.

A revision's DDL on Postgres asks for ACCESS EXCLUSIVE on the table it changes. Waiting for it
behind a long transaction (a pg_dump, a report, a session left idle in a transaction), it
queues every other session's lock on that table behind its own: the fleet's writers stopped
for as long as the long transaction lasted, not for the few seconds the DDL takes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from purpose_agent import AsyncSQLCheckpointer, NewEvent, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.db.engine import make_engine
from tests.servers import server_url, throwaway_database
from tests.test_cli_support import invoke

# The previous release's head: its workers write to a database at this revision.
PREVIOUS = "0002"
# How long the long transaction holds its lock at most in the test.
HELD = 30.0


@pytest.fixture
def previous_postgres() -> Iterator[str]:
    with server_url("postgres") as admin, throwaway_database(admin, "pa_rolling") as url:
        rendered = url.render_as_string(hide_password=False)
        engine = make_engine(rendered, poolclass=sa.pool.NullPool)
        try:
            migrate.upgrade(engine, PREVIOUS)
        finally:
            engine.dispose()
        yield rendered


def _insert(conn: sa.Connection, seq: int) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO pa_events (run_id, seq, kind, ts, lane_id, data)"
            " VALUES ('worker', :seq, 'custom', 0, 'main', '{}')"
        ),
        {"seq": seq},
    )


def writes_pass_a_waiting_change(url: str, change: Callable[[], None]) -> None:
    """Run ``change`` (a migration, a conversion) while a report holds ``pa_events``, and check
    that a writer's insert goes through before the report ends.

    A change that asks for ACCESS EXCLUSIVE and waits for it behind the report queues every
    other session's lock on the table behind its own; one that gives up every
    ``MIGRATION_LOCK_TIMEOUT`` lets the writer through between its tries.
    """
    raw = sa.create_engine(url, poolclass=sa.pool.NullPool)
    failures: list[BaseException] = []

    def run_change() -> None:
        try:
            change()
        except BaseException as exc:  # checked below
            failures.append(exc)

    holding, written, released = threading.Event(), threading.Event(), threading.Event()

    def report() -> None:  # a report's transaction: ACCESS SHARE on pa_events until written
        with raw.connect() as reader:
            reader.execute(sa.text("SELECT count(*) FROM pa_events")).scalar()
            holding.set()
            written.wait(HELD)
            reader.rollback()
            released.set()

    def change_waits() -> bool:
        with raw.connect() as conn:
            return bool(
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted"
                        " AND mode = 'AccessExclusiveLock'"
                        " AND relation = 'pa_events'::regclass"
                    )
                ).scalar()
            )

    try:
        reading = threading.Thread(target=report)
        reading.start()
        assert holding.wait(10)
        changing = threading.Thread(target=run_change)
        changing.start()
        deadline = time.monotonic() + 10
        while not change_waits() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the change asks for pa_events behind the report
        with raw.connect() as writer, writer.begin():
            _insert(writer, 1)
        # The write went through while the report still held its transaction: it queued
        # behind one try of the change at most, never behind the report itself.
        assert not released.is_set(), "the write waited for the report, behind the change"
        written.set()
        reading.join(60)
        changing.join(60)
        assert not changing.is_alive()
        assert failures == []
    finally:
        written.set()
        raw.dispose()


@pytest.mark.postgres
def test_an_upgrade_waiting_behind_a_long_transaction_does_not_stop_the_writers(
    previous_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_TIMEOUT", 0.2)
    engine = make_engine(previous_postgres, poolclass=sa.pool.NullPool)
    try:
        writes_pass_a_waiting_change(previous_postgres, lambda: migrate.upgrade(engine))
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
            assert conn.execute(sa.text("SELECT count(*) FROM pa_events")).scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_async_store_waiting_to_migrate_leaves_its_event_loop_running(
    previous_postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async store migrates in a greenlet on its loop's thread: between its tries for the
    tables' lock the migration slept there with ``time.sleep``, and every task of the loop
    stopped with it, up to a second at a time."""
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_TIMEOUT", 0.2)
    real_sleep = time.sleep
    slept_on_a_loop: list[float] = []

    def sleep(seconds: float) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            slept_on_a_loop.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", sleep)

    async def open_and_read() -> None:
        async with AsyncSQLCheckpointer(previous_postgres) as store:
            await store.last_seq("worker")  # the first call opens the store: it migrates

    writes_pass_a_waiting_change(previous_postgres, lambda: asyncio.run(open_and_read()))
    engine = make_engine(previous_postgres, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            assert migrate.current_revision(conn) == migrate.head_revision()
    finally:
        engine.dispose()
    assert slept_on_a_loop == []


@pytest.mark.sqlite
def test_a_downgrade_that_drops_keys_and_groups_says_how_many(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rolled-back.db'}"
    with SQLCheckpointer(url) as store:
        store.append(
            "chat",
            [NewEvent(kind="tool_call", key="call-1"), NewEvent(kind="tool_call", key="call-2")],
            group="conversation",
        )
        store.append("plain", [NewEvent(kind="tool_call")])
    declined = invoke("db", "downgrade", "0001", "--url", url, input="n\n")
    assert declined.exit_code == 1
    assert "It drops the keys of 2 events and the groups of 1 run for good" in declined.output
    assert "no stored data" not in declined.output
    done = invoke("db", "downgrade", "0001", "--yes", "--url", url)
    assert done.exit_code == 0, done.output
    assert "note: dropped the keys of 2 events and the groups of 1 run" in done.stderr
    # Nothing to lose on the way down to 0002, or once the keys are gone: the usual words.
    assert invoke("db", "upgrade", "--url", url).exit_code == 0
    quiet = invoke("db", "downgrade", "0002", "--url", url, input="n\n")
    assert "It drops no stored data." in quiet.output
    assert invoke("db", "downgrade", "0001", "--yes", "--url", url).stderr == ""
