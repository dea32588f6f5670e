"""Write times on a database server come from the server's clock, not the writing host's.

A run's write time orders ``list_runs`` and decides what retention by age deletes. Taken from
each host's wall clock, a writer host 2 h behind lost acknowledged events to a prune of runs
older than 1 h run from a correct host, and a pruner ahead deleted live runs. Here the skew
is this process's clock for the calls of one store (another host, as far as stamps go).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import AsyncSQLCheckpointer, SQLCheckpointer, clock
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.db.models import RunRecord
from purpose_agent.ops.prune import prune
from purpose_agent.protocol import Checkpointer
from purpose_agent.testing import BlockingAdapter
from purpose_agent.testing.samples import ev, new, st
from tests.conftest import empty_tables
from tests.row_locks import family, hold_run, wait_for_a_lock_wait
from tests.test_cli_support import invoke

HOURS_2 = timedelta(hours=2)
HOUR = timedelta(hours=1)

SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]
# The paths a write takes: a transaction or one statement per call, a group commit, asyncio.
WRITERS = ["plain", "grouped", "async", "async-grouped"]
GROUPED = GroupCommitPolicy(max_batch=16, max_wait=0.002)


@contextlib.contextmanager
def clock_off_by(offset: timedelta) -> Iterator[None]:
    """This process's wall clock ``offset`` away from the servers', as on another host."""
    real = time.time_ns
    shift = offset // timedelta(microseconds=1) * 1000
    saved = clock._last
    clock._last = 0  # another process: no stamp given yet (stamps only increase in one)
    try:
        with mock.patch("time.time_ns", side_effect=lambda: real() + shift):
            yield
    finally:
        clock._last = saved


@pytest.fixture(params=SERVERS)
def url(request: pytest.FixtureRequest) -> str:
    """An emptied database on each server in turn."""
    made: URL = request.getfixturevalue(f"{request.param}_url")
    empty_tables(made)
    return made.render_as_string(hide_password=False)


def open_writer(url: str, kind: str) -> Checkpointer:
    if kind == "grouped":
        return SQLCheckpointer(url, group_commit=GROUPED)
    if kind == "async":
        return BlockingAdapter(lambda: AsyncSQLCheckpointer.open(url))
    if kind == "async-grouped":
        return BlockingAdapter(lambda: AsyncSQLCheckpointer.open(url, group_commit=GROUPED))
    return SQLCheckpointer(url)


def write_runs(store: Checkpointer, prefix: str) -> dict[str, int]:
    """Every kind of write, to runs of their own; the events each run holds."""
    store.save_event(ev(f"{prefix}-save", 1))
    store.save_events([ev(f"{prefix}-batch", 1), ev(f"{prefix}-batch", 2)])
    store.save_snapshot(f"{prefix}-batch", st(f"{prefix}-batch", 2))
    store.save_snapshot(f"{prefix}-state", st(f"{prefix}-state", 0))
    store.append(f"{prefix}-append", [new()])  # type: ignore[attr-defined]
    store.append(f"{prefix}-append", [new(), new()], expected_last_seq=1)  # type: ignore[attr-defined]
    store.append(f"{prefix}-grouped", [new()], group="g", snapshot=st(f"{prefix}-grouped", 0))  # type: ignore[attr-defined]
    return {
        f"{prefix}-save": 1,
        f"{prefix}-batch": 2,
        f"{prefix}-state": 0,
        f"{prefix}-append": 3,
        f"{prefix}-grouped": 1,
    }


def age_run(url: str, run_id: str, age: timedelta) -> None:
    """Make a run last written ``age`` ago (this host's clock is the server's here)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            written = time.time_ns() - age // timedelta(microseconds=1) * 1000
            conn.execute(
                sa.update(RunRecord).where(RunRecord.run_id == run_id).values(updated_ns=written)
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_2h_behind_loses_nothing_to_a_prune_of_runs_older_than_1h(
    url: str, writer: str
) -> None:
    with SQLCheckpointer(url) as pruner:
        pruner.save_event(ev("ancient", 1))
        age_run(url, "ancient", timedelta(hours=3))
        with clock_off_by(-HOURS_2):
            store = open_writer(url, writer)
            try:
                live = write_runs(store, "w")
            finally:
                store.close()
        assert prune(pruner, older_than=HOUR).old_runs == 1  # the ancient run alone
        assert pruner.delete_runs(older_than=HOUR) == []
        deleted = invoke("runs", "delete", "--older-than", "1h", "--yes", "--url", url)
        assert deleted.exit_code == 0, deleted.output
        assert "Deleted 0 runs" in deleted.stdout
        assert sorted(pruner.list_runs()) == sorted(live)
        for run_id, events in live.items():
            assert len(pruner.list_events(run_id)) == events


@pytest.mark.parametrize("writer", WRITERS)
def test_a_pruner_2h_ahead_deletes_no_live_run(url: str, writer: str) -> None:
    store = open_writer(url, writer)
    try:
        live = write_runs(store, "w")
    finally:
        store.close()
    with SQLCheckpointer(url) as pruner, clock_off_by(HOURS_2):
        pruned = invoke("prune", "--older-than", "1h", "--json", "--url", url)
        assert pruned.exit_code == 0, pruned.output
        assert json.loads(pruned.stdout)["old_runs"] == 0
        assert prune(pruner, older_than=HOUR).old_runs == 0
        assert pruner.delete_runs(older_than=HOUR) == []
        deleted = invoke("runs", "delete", "--older-than", "1h", "--yes", "--url", url)
        assert deleted.exit_code == 0, deleted.output
        assert "Deleted 0 runs" in deleted.stdout
        assert sorted(pruner.list_runs()) == sorted(live)


@pytest.mark.parametrize("writer", WRITERS)
def test_runs_list_in_the_order_they_were_written_whatever_the_writers_clocks(
    url: str, writer: str
) -> None:
    def written(run_id: str, offset: timedelta) -> None:
        with clock_off_by(offset):
            store = open_writer(url, writer)
            try:
                store.append(run_id, [new()])  # type: ignore[attr-defined]
            finally:
                store.close()

    written("a", timedelta(0))
    written("behind", -HOURS_2)
    written("b", timedelta(0))
    written("ahead", HOURS_2)
    written("c", timedelta(0))
    with SQLCheckpointer(url) as store:
        assert store.list_runs() == ["c", "ahead", "b", "behind", "a"]
        # The newest two by write order, whatever each host's clock said.
        assert store.delete_runs(keep_newest=2) == ["a", "b", "behind"]


_END_SESSIONS = {
    "postgresql": (
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = :d AND pid <> pg_backend_pid()"
    ),
    "mysql": (
        "SELECT id FROM information_schema.processlist WHERE db = :d AND id <> CONNECTION_ID()"
    ),
}


def _end_sessions(engine: sa.Engine, database: str | None) -> None:
    """End every other session on the test's database (a stuck write's open transaction)."""
    with engine.connect() as conn:
        found = conn.execute(sa.text(_END_SESSIONS[family(engine)]), {"d": database})
        if family(engine) == "mysql":
            for (session,) in found.all():
                with contextlib.suppress(sa.exc.DBAPIError):
                    conn.exec_driver_sql(f"KILL {int(session)}")


_WRITES: dict[str, Callable[[Checkpointer], Any]] = {
    "save": lambda store: store.save_event(ev("a", 2)),
    "append": lambda store: store.append("a", [new()]),  # type: ignore[attr-defined]
    "snapshot": lambda store: store.save_snapshot("a", st("a", 1)),
}


@pytest.mark.parametrize("write", list(_WRITES))
@pytest.mark.parametrize("writer", WRITERS)
def test_a_write_that_waited_for_its_runs_lock_is_written_when_it_ends(
    url: str, writer: str, write: str
) -> None:
    """The write time was taken before the wait: a run written meanwhile listed first."""
    database = sa.make_url(url).database
    holder = sa.create_engine(url, poolclass=sa.pool.NullPool)
    store = open_writer(url, writer)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            _WRITES[write](store)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        store.save_event(ev("a", 1))
        with holder.connect() as conn:
            hold_run(conn, "a")  # as another writer of run a does
            worker = threading.Thread(target=run)
            worker.start()
            wait_for_a_lock_wait(holder, database, "the write")
            with SQLCheckpointer(url) as other:
                other.save_event(ev("c", 1))  # written while a's write waits
            conn.rollback()
        worker.join(60)
        if worker.is_alive():
            _end_sessions(holder, database)  # no lock left behind for the tests that follow
            pytest.fail(f"the {writer} {write} never finished after the lock was released")
    finally:
        store.close()
        holder.dispose()
    assert outcome == [None]
    with SQLCheckpointer(url) as reader:
        assert reader.list_runs() == ["a", "c"]


def test_an_async_store_2h_ahead_reads_the_servers_clock_and_ages_by_it(url: str) -> None:
    store = open_writer(url, "plain")
    try:
        live = write_runs(store, "w")
    finally:
        store.close()

    async def prune_ahead(reference: SQLCheckpointer) -> None:
        pruner = AsyncSQLCheckpointer(url)
        try:
            before = reference.clock_ns()
            now = await pruner.clock_ns()
            assert before <= now <= reference.clock_ns()
            assert time.time_ns() - now > HOUR // timedelta(microseconds=1) * 1000
            assert await pruner.delete_runs(older_than=HOUR) == []
            assert sorted(await pruner.list_runs()) == sorted(live)
        finally:
            await pruner.close()

    with SQLCheckpointer(url) as reference, clock_off_by(HOURS_2):
        asyncio.run(prune_ahead(reference))
