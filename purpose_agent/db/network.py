"""Bounds on how long a connection waits for a server that stopped answering.

A server that goes away without closing its connections (a failover that moves an address,
a host that loses power, a load balancer or NAT that forgets an idle connection, a network
partition) leaves the client's packets unanswered, and nothing tells the driver. The kernel
retransmits a sent statement for about 15 minutes (``tcp_retries2``) before the driver hears
of it, and a new connection waits about 2 minutes for an answer to its first packet: an agent
step would hang that long, then fail. A server that is only slow still acknowledges what it
is sent, at the TCP level, and answers keepalive probes while it works, so these bounds do
not cut a long lock wait or a long query short.

The limits:

- a connection is given up after ``CONNECT_SECONDS`` without an answer;
- sent data unacknowledged for ``UNACKNOWLEDGED_SECONDS`` ends the connection
  (``TCP_USER_TIMEOUT``);
- an idle connection (in the pool, or waiting for a result) is probed after
  ``KEEPALIVE_IDLE_SECONDS`` and given up after ``KEEPALIVE_COUNT`` unanswered probes
  ``KEEPALIVE_INTERVAL_SECONDS`` apart.

A connection ended this way is a lost connection: the store retries what is safe to retry on
a new one, and otherwise reports ``StoreUnavailable``. Connections over a Unix socket are left
as they are (there is no network to lose). A Postgres URL that names one of libpq's own
parameters (``?tcp_user_timeout=0``, ``?connect_timeout=60``) keeps its value.
"""

from __future__ import annotations

import socket
from typing import Any

from sqlalchemy import Engine, event

CONNECT_SECONDS = 10
UNACKNOWLEDGED_SECONDS = 30
KEEPALIVE_IDLE_SECONDS = 30
KEEPALIVE_INTERVAL_SECONDS = 10
KEEPALIVE_COUNT = 3

# libpq's names for the limits above; its own defaults are no connect timeout and the
# operating system's keepalive and retransmission settings.
POSTGRES_PARAMETERS: dict[str, int] = {
    "connect_timeout": CONNECT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": KEEPALIVE_IDLE_SECONDS,
    "keepalives_interval": KEEPALIVE_INTERVAL_SECONDS,
    "keepalives_count": KEEPALIVE_COUNT,
    "tcp_user_timeout": UNACKNOWLEDGED_SECONDS * 1000,
}

# The socket options that carry them where the driver takes none of them (PyMySQL, aiomysql).
# Missing ones (TCP_USER_TIMEOUT, TCP_KEEPIDLE outside Linux) are skipped.
_SOCKET_OPTIONS: list[tuple[int, str, int]] = [
    (socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
    (socket.IPPROTO_TCP, "TCP_KEEPIDLE", KEEPALIVE_IDLE_SECONDS),
    (socket.IPPROTO_TCP, "TCP_KEEPINTVL", KEEPALIVE_INTERVAL_SECONDS),
    (socket.IPPROTO_TCP, "TCP_KEEPCNT", KEEPALIVE_COUNT),
    (socket.IPPROTO_TCP, "TCP_USER_TIMEOUT", UNACKNOWLEDGED_SECONDS * 1000),
]


def postgres_parameters(given: dict[str, Any]) -> dict[str, Any]:
    """The parameters for libpq: the limits above, under the ones given (the URL's win)."""
    return {**POSTGRES_PARAMETERS, **given}


def bound_sockets(engine: Engine) -> None:
    """Set the limits above on each new MariaDB connection's TCP socket.

    PyMySQL asks for keepalives with the system's timings (the first probe after two hours)
    and bounds only the connect; aiomysql bounds nothing. The options are set on the socket
    once the connection is open, sync or async.

    Args:
        engine: The engine (an async engine's synchronous face).
    """
    lift = "read_timeout" not in engine.url.query

    @event.listens_for(engine, "connect")
    def _bound(dbapi_connection: Any, _record: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        if lift and hasattr(driver, "_read_timeout"):
            # The connect's own bound (see engine): statements may wait for locks as long
            # as the server lets them.
            driver._read_timeout = None
            driver._write_timeout = None
        sock = _socket_of(dbapi_connection)
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            for level, name, value in _SOCKET_OPTIONS:
                option = getattr(socket, name, None)
                if option is not None:
                    sock.setsockopt(level, option, value)


def _socket_of(dbapi_connection: Any) -> Any:
    """The TCP socket under a PyMySQL connection or an adapted aiomysql one, if found."""
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    sock = getattr(driver, "_sock", None)  # PyMySQL
    if sock is None:
        writer = getattr(driver, "_writer", None)  # aiomysql: an asyncio StreamWriter
        if writer is not None:
            sock = writer.get_extra_info("socket")
    return sock
