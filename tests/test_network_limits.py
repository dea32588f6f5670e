"""The network limits every server connection carries (see ``purpose_agent.db.network``).

What they are for, a server gone silent, is shown in ``tests/reliability/test_silent_servers``
against a private server; these check that each kind of connection has them, sync and async,
and that a Postgres URL's own values win.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from sqlalchemy.engine import URL

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
