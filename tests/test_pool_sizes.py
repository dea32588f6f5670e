"""A store given ``pool_size`` and ``max_overflow`` stays within them, so that a fleet of
processes fits a server's or a user's connection limit, and writers beyond the pool wait their
turn for a connection instead of being refused by the server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import AsyncSQLCheckpointer, InvalidInput, SQLCheckpointer
from purpose_agent.testing.samples import ev
from tests.servers import admin_connection, server_url, throwaway_database

# The user may hold this many connections; the store is sized to exactly that.
LIMIT = 3
WRITERS = 8
STEPS = 12
SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@contextlib.contextmanager
def _limited_user(server: str) -> Iterator[str]:
    """The URL of a throwaway database for a user that may hold :data:`LIMIT` connections."""
    name = f"pa_pool_{uuid.uuid4().hex[:8]}"
    with server_url(server) as admin, throwaway_database(admin, "pa_pool") as url:
        with admin_connection(admin) as conn:
            if server == "postgres":
                conn.exec_driver_sql(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT {LIMIT}")
                conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" OWNER TO {name}')
                limited = url.set(username=name, password=None)
            else:
                conn.exec_driver_sql(
                    f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'pw' "
                    f"WITH MAX_USER_CONNECTIONS {LIMIT}"
                )
                conn.exec_driver_sql(f"GRANT ALL ON `{url.database}`.* TO '{name}'@'%%'")
                limited = url.set(username=name, password="pw")
        try:
            yield limited.render_as_string(hide_password=False)
        finally:
            with admin_connection(admin) as conn:
                if server == "postgres":
                    conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
                    conn.exec_driver_sql(f"DROP ROLE {name}")
                else:
                    conn.exec_driver_sql(f"DROP USER '{name}'@'%%'")


def _sized(engine: Any) -> tuple[int, int]:
    pool = engine.pool
    return pool.size(), pool._max_overflow


@pytest.mark.parametrize("server", SERVERS)
def test_threads_share_a_pool_sized_to_the_users_connection_limit(server: str) -> None:
    with (
        _limited_user(server) as url,
        SQLCheckpointer(url, pool_size=2, max_overflow=LIMIT - 2) as store,
    ):
        assert _sized(store.engine) == (2, LIMIT - 2)

        def write(writer: int) -> None:
            for seq in range(1, STEPS + 1):
                store.save_events([ev(f"w{writer}", seq)])

        with ThreadPoolExecutor(WRITERS) as threads:
            list(threads.map(write, range(WRITERS)))  # a refused connection raises here
        assert sorted(store.list_runs()) == sorted(f"w{writer}" for writer in range(WRITERS))
        for writer in range(WRITERS):
            assert [e.seq for e in store.list_events(f"w{writer}")] == list(range(1, STEPS + 1))


@pytest.mark.parametrize("server", SERVERS)
def test_tasks_share_a_pool_sized_to_the_users_connection_limit(server: str) -> None:
    async def main(url: str) -> None:
        async with await AsyncSQLCheckpointer.open(
            url, pool_size=2, max_overflow=LIMIT - 2
        ) as store:
            assert _sized(store.engine.sync_engine) == (2, LIMIT - 2)

            async def write(writer: int) -> None:
                for seq in range(1, STEPS + 1):
                    await store.save_events([ev(f"t{writer}", seq)])

            await asyncio.gather(*(write(writer) for writer in range(WRITERS)))
            assert len(await store.list_runs()) == WRITERS
            for writer in range(WRITERS):
                assert len(await store.list_events(f"t{writer}")) == STEPS

    with _limited_user(server) as url:
        asyncio.run(main(url))


def test_a_sqlite_file_store_takes_the_sizes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with SQLCheckpointer(url, pool_size=3, max_overflow=0) as store:
        assert _sized(store.engine) == (3, 0)
        store.save_event(ev("r", 1))
        assert store.list_events("r") == [ev("r", 1)]

    async def main() -> None:
        async with await AsyncSQLCheckpointer.open(url, pool_size=3, max_overflow=0) as store:
            assert _sized(store.engine.sync_engine) == (3, 0)
            # The synchronous twin builds a pool of its own (it counts apart), sized alike.
            assert _sized(store.sync.engine) == (3, 0)
            assert await store.list_events("r") == [ev("r", 1)]

    asyncio.run(main())


@pytest.mark.parametrize(
    ("sizes", "words"),
    [
        ({"pool_size": 0}, "pool_size must be an integer of at least 1, not 0"),
        ({"pool_size": True}, "pool_size must be an integer of at least 1, not True"),
        ({"pool_size": "4"}, "pool_size must be an integer of at least 1, not '4'"),
        ({"max_overflow": -1}, "max_overflow must be an integer of at least 0, not -1"),
        ({"max_overflow": 2.5}, "max_overflow must be an integer of at least 0, not 2.5"),
    ],
)
def test_sizes_out_of_range_are_invalid_input(
    tmp_path: Path, sizes: dict[str, Any], words: str
) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    with pytest.raises(InvalidInput, match=words):
        SQLCheckpointer(url, **sizes)
    with pytest.raises(InvalidInput, match=words):
        AsyncSQLCheckpointer(url, **sizes)
    assert not (tmp_path / "runs.db").exists()  # refused before anything was opened


def test_sizes_for_an_engine_passed_in_or_an_in_memory_database_are_refused(
    tmp_path: Path,
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    try:
        with pytest.raises(InvalidInput, match="an engine passed in keeps its own pool"):
            SQLCheckpointer(engine, pool_size=2)
    finally:
        engine.dispose()
    with pytest.raises(InvalidInput, match="an in-memory SQLite database has one connection"):
        SQLCheckpointer("sqlite://", max_overflow=0)
    with pytest.raises(InvalidInput, match="an in-memory SQLite database has one connection"):
        AsyncSQLCheckpointer("sqlite:///:memory:", pool_size=1)


@pytest.mark.postgres
def test_read_replicas_get_the_stores_sizes() -> None:
    with server_url("postgres") as admin, throwaway_database(admin, "pa_pool") as url:
        text = url.render_as_string(hide_password=False)
        # The primary stands in for a replica: only the engines' pools are looked at.
        with SQLCheckpointer(text, read_url=text, pool_size=2, max_overflow=1) as store:
            replicas = store._replicas
            assert replicas is not None
            assert [_sized(replica.engine) for replica in replicas.replicas] == [(2, 1)]
            store.save_event(ev("r", 1))
            assert store.list_events("r") == [ev("r", 1)]
