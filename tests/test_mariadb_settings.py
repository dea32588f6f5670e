"""MariaDB server and session settings that operators set: the store works under each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import (
    AsyncSQLCheckpointer,
    InvalidInput,
    NewEvent,
    SequenceConflict,
    SQLCheckpointer,
    StoreUnavailable,
)
from purpose_agent.testing.samples import ev, st
from tests.row_locks import refused_append
from tests.servers import server_url, throwaway_database

pytestmark = pytest.mark.mariadb


@pytest.fixture
def mariadb_empty() -> Iterator[URL]:
    """A database of its own on the MariaDB server, with no tables yet."""
    with server_url("mariadb") as admin, throwaway_database(admin, "pa_settings") as url:
        yield url


def _a_step_and_an_append(store: Any) -> None:
    store.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2, done=False))
    assert [event.seq for event in store.append("r", [NewEvent(kind="custom", key="k")])] == [3]
    assert [event.seq for event in store.append("r", [NewEvent(kind="custom", key="k")])] == [3]
    with pytest.raises(SequenceConflict):
        store.save_events([ev("r", 4), ev("r", 2, other=True)])
    recovery = store.recover("r")
    assert recovery is not None
    assert recovery.state == st("r", 2, done=False)
    assert [event.seq for event in recovery.events] == [3]


def test_sql_mode_oracle_opens_migrates_and_writes(mariadb_empty: URL) -> None:
    """Under sql_mode=ORACLE a lone BEGIN opens a PL/SQL block: it failed with error 1064."""
    url = mariadb_empty.update_query_dict({"sql_mode": "ORACLE"})
    with SQLCheckpointer(url) as store:
        _a_step_and_an_append(store)


def test_sql_mode_oracle_on_the_asyncio_driver(mariadb_empty: URL) -> None:
    SQLCheckpointer(mariadb_empty).close()  # migrated under the default mode
    # aiomysql writes sql_mode into its SET unquoted: one mode, or a quoted list.
    url = mariadb_empty.set(drivername="mariadb+aiomysql").update_query_dict({"sql_mode": "ORACLE"})

    async def step() -> list[int]:
        async with await AsyncSQLCheckpointer.open(url) as store:
            await store.save_events([ev("r", 1)], snapshot=st("r", 1))
            return [event.seq for event in await store.append("r", [NewEvent(kind="custom")])]

    assert asyncio.run(step()) == [2]


def test_a_mariadb_url_gets_transactional_utf8mb4_tables_whatever_the_server_default(
    mariadb_empty: URL,
) -> None:
    """The README's mariadb+pymysql:// URL names the 'mariadb' dialect, which ignored the
    tables' mysql_engine and mysql_charset: on a server whose default engine is Aria or
    MyISAM the store got tables without transactions, and a refused batch stayed half
    written."""
    engine = sa.create_engine(mariadb_empty.set(drivername="mariadb+pymysql"))

    @sa.event.listens_for(engine, "connect")
    def _server_defaults(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION default_storage_engine = 'Aria'")
            cursor.execute("SET SESSION character_set_server = 'latin1'")

    try:
        with SQLCheckpointer(engine) as store:
            store.save_event(ev("r", 2))
            with pytest.raises(SequenceConflict):
                store.save_events([ev("r", 1), ev("r", 2, other=True)])
            assert store.list_events("r") == [ev("r", 2)]
        with engine.connect() as conn:
            tables = conn.exec_driver_sql(
                "SELECT table_name, engine, table_collation FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name IN "
                "('pa_events', 'pa_snapshots', 'pa_runs')"
            ).all()
        assert sorted(tables) == [
            (name, "InnoDB", "utf8mb4_general_ci")
            for name in ("pa_events", "pa_runs", "pa_snapshots")
        ]
    finally:
        engine.dispose()


def test_a_payload_that_fits_as_json_but_not_once_escaped_is_refused_before_it_is_sent(
    mariadb_empty: URL,
) -> None:
    """The driver escapes each quote and backslash into the statement: JSON made of quoted
    quotes takes twice its size on the wire. At three quarters of max_allowed_packet it passed
    the store's check and was sent; an append then failed with StoreUnavailable "MySQL server
    has gone away", a save with a message that named neither size."""
    with SQLCheckpointer(mariadb_empty) as store:
        with store.reading("reading the limit") as conn:
            limit = int(conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
        quotes = '"' * (limit * 3 // 8)  # 0.75 of the limit as JSON, 1.5 escaped
        for call in (
            lambda: store.append("r", [NewEvent(kind="custom", data={"s": quotes})]),
            lambda: store.save_event(ev("r", 1, s=quotes)),
            lambda: store.save_snapshot("r", st("r", 0, s=quotes)),
        ):
            with pytest.raises(InvalidInput) as refused:
                call()
            message = str(refused.value)
            assert "max_allowed_packet" in message
            assert "once escaped into the statement" in message
        assert store.list_runs() == []
        store.save_event(ev("r", 1))  # the connection is still good
        assert store.list_events("r") == [ev("r", 1)]


def test_a_urls_init_command_is_kept_and_the_session_still_reads_committed(
    mariadb_empty: URL,
) -> None:
    """The store's own init_command replaced the URL's without a word: a session the URL
    made read-only took writes. Its refusal now also says what to do."""
    SQLCheckpointer(mariadb_empty).close()
    url = mariadb_empty.update_query_dict({"init_command": "SET SESSION TRANSACTION READ ONLY"})
    with SQLCheckpointer(url, migrate=False) as store:
        with store.reading("reading the isolation") as conn:
            level = conn.exec_driver_sql("SELECT @@session.tx_isolation").scalar_one()
        assert level == "READ-COMMITTED"
        assert store.list_runs() == []
        with pytest.raises(StoreUnavailable) as refused:
            store.save_event(ev("r", 1))
    message = str(refused.value)
    assert "READ ONLY transaction" in message
    assert "point the URL at the primary, or reset the setting" in message

    async def refused_async() -> str:
        async with await AsyncSQLCheckpointer.open(
            url.set(drivername="mariadb+aiomysql"), migrate=False
        ) as store:
            with pytest.raises(StoreUnavailable) as raised:
                await store.save_event(ev("r", 1))
            return str(raised.value)

    assert "READ ONLY transaction" in asyncio.run(refused_async())


def test_a_lock_wait_past_innodb_lock_wait_timeout_is_refused_with_what_to_do(
    mariadb_empty: URL,
) -> None:
    """It carried only the server's "Lock wait timeout exceeded; try restarting transaction",
    which the store had done already."""
    SQLCheckpointer(mariadb_empty).close()
    url = mariadb_empty.update_query_dict({"init_command": "SET innodb_lock_wait_timeout = 1"})
    with SQLCheckpointer(url) as store:
        message = refused_append(store, mariadb_empty)
    assert "Lock wait timeout exceeded" in message
    assert "end the session holding it (a long or idle-in-transaction one" in message
    assert "MariaDB innodb_lock_wait_timeout" in message
