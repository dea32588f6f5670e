"""Settings operators put on a Postgres database or role, under which the store must behave."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import (
    AsyncSQLCheckpointer,
    EventKind,
    NewEvent,
    PAEvent,
    RunState,
    SQLCheckpointer,
    StoreUnavailable,
)
from tests.row_locks import refused_append
from tests.servers import server_url, throwaway_database

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[URL]:
    with server_url("postgres") as admin, throwaway_database(admin, "pa_settings") as url:
        yield url


def alter_database(url: URL, setting: str) -> None:
    """``ALTER DATABASE ... SET``, as an operator sets a default for every session."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" SET {setting}')
    finally:
        engine.dispose()


def race_writers(store: SQLCheckpointer, threads: int = 8, steps: int = 30) -> None:
    """Writers of one run, of one run stepped with snapshots, and of a run each, racing one
    kind of write at a time: no error, every seq once."""

    def shared(worker: int, step: int) -> None:
        store.append("shared", [NewEvent(kind=EventKind.CUSTOM, data={"w": worker})])

    def stepped(worker: int, step: int) -> None:
        snapshot = RunState(run_id="stepped", data={"w": worker, "s": step})
        store.append("stepped", [NewEvent(kind=EventKind.CUSTOM)], snapshot=snapshot)

    def own(worker: int, step: int) -> None:
        run_id = f"own-{worker}"
        snapshot = RunState(run_id=run_id, data={"s": step})
        store.append(run_id, [NewEvent(kind=EventKind.CUSTOM)], snapshot=snapshot, group="g")

    def saved(worker: int, step: int) -> None:
        store.save_event(PAEvent(run_id=f"saved-{worker}", seq=step + 1, kind="custom"))

    errors: list[BaseException] = []

    def write(worker: int, call: Callable[[int, int], None]) -> None:
        for step in range(steps):
            try:
                call(worker, step)
            except Exception as exc:
                errors.append(exc)

    for call in (shared, stepped, own, saved):
        workers = [threading.Thread(target=write, args=(n, call)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    assert [str(error) for error in errors] == []
    for run_id in ("shared", "stepped"):
        seqs = [event.seq for event in store.list_events(run_id)]
        assert seqs == list(range(1, threads * steps + 1))
    for n in range(threads):
        assert store.last_seq(f"own-{n}") == steps
        assert store.last_seq(f"saved-{n}") == steps


@pytest.mark.parametrize("level", ["serializable", "repeatable read"])
def test_writers_race_without_errors_whatever_the_default_isolation(
    database: URL, level: str
) -> None:
    """The store's writes serialise on the run row's lock and read it again at READ
    COMMITTED: a database's default of SERIALIZABLE failed 27-60% of contended appends with
    "could not serialize access", and writers of different runs too."""
    SQLCheckpointer(database).close()
    alter_database(database, f"default_transaction_isolation = '{level}'")
    with SQLCheckpointer(database) as store:
        race_writers(store)


def test_a_session_ended_by_idle_session_timeout_is_not_an_ambiguous_append(
    database: URL,
) -> None:
    # The server ends a pooled session idle for longer than idle_session_timeout (57P05)
    # before the next statement arrives: nothing was stored, so an append without keys runs
    # again instead of failing with "may or may not be stored".
    SQLCheckpointer(database).close()
    alter_database(database, "idle_session_timeout = '1s'")
    with SQLCheckpointer(database) as store:
        store.append("idle", [NewEvent(kind=EventKind.CUSTOM)])
        time.sleep(1.5)
        assert [event.seq for event in store.append("idle", [NewEvent(kind=EventKind.CUSTOM)])] == [
            2
        ]
        assert [event.seq for event in store.list_events("idle")] == [1, 2]

    async def tasks() -> list[int]:
        store = AsyncSQLCheckpointer(database, group_commit=True)
        try:
            runs = [f"task-{n}" for n in range(6)]
            await asyncio.gather(
                *(store.append(r, [NewEvent(kind=EventKind.CUSTOM)]) for r in runs)
            )
            await asyncio.sleep(1.5)
            await asyncio.gather(
                *(store.append(r, [NewEvent(kind=EventKind.CUSTOM)]) for r in runs)
            )
            return [await store.last_seq(r) for r in runs]
        finally:
            await store.close()

    assert asyncio.run(tasks()) == [2] * 6


def _end_sessions(url: URL, where: str = "true") -> int:
    """``pg_terminate_backend`` (57P01) on the database's other sessions matching ``where``,
    and wait until they are gone: how many there were."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    others = f"datname = '{url.database}' AND pid <> pg_backend_pid() AND {where}"
    try:
        with engine.connect() as conn:
            ended = conn.exec_driver_sql(
                f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {others}"
            ).scalar_one()
            while conn.exec_driver_sql(
                f"SELECT count(*) FROM pg_stat_activity WHERE {others}"
            ).scalar_one():
                time.sleep(0.01)
    finally:
        engine.dispose()
    return int(ended)


def test_a_session_ended_while_idle_in_the_pool_is_not_an_ambiguous_append(
    database: URL,
) -> None:
    # pg_terminate_backend (57P01, as an administrator's shutdown and DROP DATABASE ... WITH
    # (FORCE) end sessions) on the pooled connections between two appends: nothing of the
    # second was sent, yet an append without keys failed with "may or may not be stored" on
    # every connection the pool held.
    with SQLCheckpointer(database) as store:
        store.append("idle", [NewEvent(kind=EventKind.CUSTOM)])
        for seq in (2, 3, 4):
            assert _end_sessions(database) >= 1
            [event] = store.append("idle", [NewEvent(kind=EventKind.CUSTOM)])
            assert event.seq == seq
        assert [event.seq for event in store.list_events("idle")] == [1, 2, 3, 4]

    async def tasks() -> list[int]:
        store = AsyncSQLCheckpointer(database)
        try:
            runs = [f"task-{n}" for n in range(4)]
            await asyncio.gather(
                *(store.append(r, [NewEvent(kind=EventKind.CUSTOM)]) for r in runs)
            )
            assert _end_sessions(database) >= 1
            await asyncio.gather(
                *(store.append(r, [NewEvent(kind=EventKind.CUSTOM)]) for r in runs)
            )
            return [await store.last_seq(r) for r in runs]
        finally:
            await store.close()

    assert asyncio.run(tasks()) == [2] * 4


def test_a_session_ended_while_its_append_runs_is_reported_not_retried(database: URL) -> None:
    # The append's statement was sent when its session was ended: the server may have run it,
    # so an append without keys is reported, not sent again (it could be stored twice).
    with SQLCheckpointer(database) as store:
        store.append("busy", [NewEvent(kind=EventKind.CUSTOM)])
        locker = sa.create_engine(database, poolclass=sa.pool.NullPool)
        failed: list[BaseException] = []

        def append() -> None:
            try:
                store.append("busy", [NewEvent(kind=EventKind.CUSTOM)])
            except StoreUnavailable as exc:
                failed.append(exc)

        try:
            with locker.connect() as conn, conn.begin():
                conn.exec_driver_sql("SELECT 1 FROM pa_runs WHERE run_id = 'busy' FOR UPDATE")
                writer = threading.Thread(target=append)
                writer.start()
                waiting = "wait_event_type = 'Lock'"
                while not _end_sessions(database, waiting):
                    time.sleep(0.01)
            writer.join(60)
        finally:
            locker.dispose()
        assert [str(exc).split(": ", 1)[1] for exc in failed] == [
            "the connection was lost while the transaction committed, so it may or may not "
            "be stored; read the run (or append with keys, which makes a retry safe) before "
            "appending again"
        ]
        assert store.last_seq("busy") == 1


def _unicode_round_trip(url: URL) -> None:
    """Ids, lanes, keys and groups outside Latin-1, on the synchronous and the async store."""
    run_id, data = "café☃", {"x": "é\u0000😀"}
    with SQLCheckpointer(url) as store:
        store.save_event(PAEvent(run_id=run_id, seq=1, kind="custom", lane_id="l☃", data=data))
        store.save_snapshot(run_id, RunState(run_id=run_id, seq=1, data={"y": "é☃"}))
        [keyed] = store.append("r", [NewEvent(kind=EventKind.CUSTOM, key="k☃")], group="g☃")
        assert store.event_by_key("r", "k☃") == keyed
        assert store.list_groups() == ["g☃"]
        assert sorted(store.list_runs()) == sorted([run_id, "r"])
        [event] = store.list_events(run_id)
        assert (event.lane_id, event.data) == ("l☃", data)
        state = store.load_latest(run_id)
        assert state is not None
        assert state.data == {"y": "é☃"}

    async def read() -> list[PAEvent]:
        async with await AsyncSQLCheckpointer.open(url) as store:
            return await store.list_events(run_id)

    assert asyncio.run(read()) == [event]


def test_ids_outside_latin1_round_trip_when_the_database_speaks_latin1(database: URL) -> None:
    """psycopg encodes text in the session's client_encoding: a database set to LATIN1 made
    a run id like 'café☃' fail in the driver with a raw UnicodeEncodeError."""
    alter_database(database, "client_encoding = 'LATIN1'")
    _unicode_round_trip(database)


def test_a_sql_ascii_database_is_opened_and_keeps_unicode() -> None:
    """A SQL_ASCII database answers in bytes: SQLAlchemy could not read the server's
    version, and opening the store raised a raw TypeError."""
    with (
        server_url("postgres") as admin,
        throwaway_database(
            admin,
            "pa_settings",
            "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
        ) as url,
    ):
        _unicode_round_trip(url)


def test_a_read_only_default_is_refused_with_what_to_do(database: URL) -> None:
    """The error was the driver's line alone, as if the store could not reach the server."""
    SQLCheckpointer(database).close()
    alter_database(database, "default_transaction_read_only = on")
    with SQLCheckpointer(database) as store:
        assert store.list_runs() == []
        with pytest.raises(StoreUnavailable) as refused:
            store.append("r", [NewEvent(kind=EventKind.CUSTOM)])
    message = str(refused.value)
    assert "cannot execute INSERT in a read-only transaction" in message
    assert "point the URL at the primary, or reset the setting" in message


def test_a_statement_past_statement_timeout_is_refused_with_what_to_do(database: URL) -> None:
    SQLCheckpointer(database).close()
    # Long enough for every statement but the blocked one, on a busy server too.
    alter_database(database, "statement_timeout = '2s'")
    with SQLCheckpointer(database) as store:
        message = refused_append(store, database)
    assert "canceling statement due to statement timeout" in message
    assert "raise the limit for the store's user" in message


LOCK_WAIT_ADVICE = "end the session holding it (a long or idle-in-transaction one"


@pytest.mark.parametrize("where", ["database", "url"])
def test_a_lock_wait_past_lock_timeout_is_refused_with_what_to_do(
    database: URL, where: str
) -> None:
    """It carried only the server's "canceling statement due to lock timeout"."""
    SQLCheckpointer(database).close()
    url = database
    if where == "database":
        alter_database(database, "lock_timeout = '300ms'")
    else:
        url = database.update_query_dict({"options": "-c lock_timeout=300"})
    with SQLCheckpointer(url) as store:
        message = refused_append(store, database)
    assert "canceling statement due to lock timeout" in message
    assert LOCK_WAIT_ADVICE in message
    assert "Postgres lock_timeout" in message
