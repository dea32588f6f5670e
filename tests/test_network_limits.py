"""The network limits every server connection carries (see ``purpose_agent.db.network``).

What they are for, a server gone silent, is shown in ``tests/reliability/test_silent_servers``
against a private server; these check that each kind of connection has them, sync and async,
and that a Postgres URL's own values win.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import URL

from purpose_agent import AsyncSQLCheckpointer, SQLCheckpointer, StoreUnavailable
from purpose_agent.db.async_engine import make_async_engine
from purpose_agent.db.engine import make_engine
from purpose_agent.db.network import (
    CONNECT_SECONDS,
    KEEPALIVE_COUNT,
    KEEPALIVE_IDLE_SECONDS,
    KEEPALIVE_INTERVAL_SECONDS,
    UNACKNOWLEDGED_SECONDS,
)
from tests.servers import server_url

ASYNC = pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])


def _driver_connection(url: URL, asynchronous: bool, inspect: Any) -> Any:
    """``inspect`` applied to a new driver connection of the store's engine for ``url``."""
    if not asynchronous:
        engine = make_engine(url)
        try:
            raw = engine.raw_connection()
            try:
                return inspect(raw.driver_connection)
            finally:
                raw.close()
        finally:
            engine.dispose()

    async def main() -> Any:
        engine = make_async_engine(url)
        try:
            raw = await engine.raw_connection()
            try:
                return inspect(raw.driver_connection)
            finally:
                raw.close()
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _libpq(connection: Any) -> dict[str, str]:
    names = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval")
    names += ("keepalives_count", "tcp_user_timeout")
    # The conninfo the connection was opened with, libpq's defaults included.
    options = {option.keyword.decode(): option.val for option in connection.pgconn.info}
    return {name: (options[name] or b"").decode() for name in names}


@pytest.mark.postgres
@ASYNC
def test_postgres_connections_carry_the_limits_unless_the_url_names_its_own(
    asynchronous: bool,
) -> None:
    with server_url("postgres") as admin:
        found = _driver_connection(admin, asynchronous, _libpq)
        given = admin.update_query_dict({"tcp_user_timeout": "5000", "connect_timeout": "3"})
        kept = _driver_connection(given, asynchronous, _libpq)
    assert found == {
        "connect_timeout": str(CONNECT_SECONDS),
        "keepalives": "1",
        "keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
        "keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
        "keepalives_count": str(KEEPALIVE_COUNT),
        "tcp_user_timeout": str(UNACKNOWLEDGED_SECONDS * 1000),
    }
    assert kept == {**found, "tcp_user_timeout": "5000", "connect_timeout": "3"}


def _socket_options(connection: Any) -> dict[str, int]:
    sock = getattr(connection, "_sock", None)
    if sock is None:
        sock = connection._writer.get_extra_info("socket")
    tcp = socket.IPPROTO_TCP
    return {
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "idle": sock.getsockopt(tcp, socket.TCP_KEEPIDLE),
        "interval": sock.getsockopt(tcp, socket.TCP_KEEPINTVL),
        "count": sock.getsockopt(tcp, socket.TCP_KEEPCNT),
        "unacknowledged_ms": sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT),
        "connect_timeout": int(getattr(connection, "connect_timeout", 0) or 0),
    }


@pytest.mark.mariadb
@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux socket options")
@ASYNC
def test_mariadb_sockets_carry_the_limits(asynchronous: bool) -> None:
    with server_url("mariadb") as admin:
        found = _driver_connection(admin, asynchronous, _socket_options)
    assert found == {
        "keepalive": 1,
        "idle": KEEPALIVE_IDLE_SECONDS,
        "interval": KEEPALIVE_INTERVAL_SECONDS,
        "count": KEEPALIVE_COUNT,
        "unacknowledged_ms": UNACKNOWLEDGED_SECONDS * 1000,
        "connect_timeout": CONNECT_SECONDS,
    }


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a stopped or hung server).

    The kernel completes the handshake for a process stopped with SIGSTOP, or hung on its
    disk, so a client's connect succeeds and then waits for the server's greeting.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            held.append(client)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()
        for client in held:
            client.close()


@ASYNC
def test_opening_a_store_on_a_mariadb_port_that_stays_silent_gives_up(
    silent_port: int, asynchronous: bool
) -> None:
    """PyMySQL's and aiomysql's connect_timeout bound the TCP connect only: the greeting was
    then read with no limit, so an open hung as long as the server did (120 s on a stopped
    mariadbd until it was resumed; for ever on a silent port)."""
    url = f"mysql+pymysql://root@127.0.0.1:{silent_port}/test"
    outcome: list[BaseException | None] = []

    def open_store() -> None:
        try:
            if asynchronous:

                async def opened() -> None:
                    store = AsyncSQLCheckpointer(url)
                    try:
                        await store.list_runs()
                    finally:
                        await store.close()

                asyncio.run(opened())
            else:
                SQLCheckpointer(url).close()
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    opener = threading.Thread(target=open_store, daemon=True)
    opener.start()
    opener.join(8 * CONNECT_SECONDS)  # a few tries of CONNECT_SECONDS each, with room
    assert not opener.is_alive(), "the open still waits for the server's greeting"
    assert isinstance(outcome[0], StoreUnavailable), repr(outcome[0])


@pytest.mark.mariadb
def test_statements_of_a_mariadb_store_may_wait_as_long_as_the_server_lets_them() -> None:
    """The connect's bound is lifted once connected: a lock wait is the server's to end."""
    with server_url("mariadb") as admin:
        engine = make_engine(admin)
        try:
            with engine.connect() as conn:
                driver = conn.connection.driver_connection
                assert driver is not None
                assert driver._read_timeout is None
                assert driver._write_timeout is None
        finally:
            engine.dispose()
