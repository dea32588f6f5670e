"""Pooled connections the server ended while they sat idle are dropped before they are lent.

A server that ends an idle session (``pg_terminate_backend``, an administrator's shutdown,
``DROP DATABASE ... WITH (FORCE)``: all ``57P01``) sends its last message at once, and the
client reads it only with the reply to its next statement. For an append without keys that
statement is its COMMIT, and a connection lost there is reported as "may or may not be
stored", although nothing was sent before the session ended: an agent's step failed on every
connection the pool held when the sessions were ended.

A session the client has sent nothing to has nothing to say: any byte waiting on its socket,
or its end, means the server spoke first, which it does only to end it. Looking costs one
``poll`` without waiting, no round trip. Such a connection is given up as SQLAlchemy gives up
one that fails a ping, and the call gets another. A session ended after the look, while the
statement is on its way, is still reported: then the server may have run it.
"""

from __future__ import annotations

import select
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError


def drop_ended_connections(engine: Engine) -> None:
    """Have ``engine``'s pool give up, at checkout, a connection the server has already ended.

    MariaDB needs none of it: a session it ends while idle fails the statement sent to it
    before that statement runs, and the store runs it again.

    Args:
        engine: A psycopg engine, or an async psycopg engine's synchronous face.
    """

    @event.listens_for(engine, "checkout")
    def _check(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        descriptor = _descriptor(dbapi_connection)
        if descriptor is not None and _spoken(descriptor):
            raise DisconnectionError("the server ended the session while it was idle in the pool")


def _descriptor(dbapi_connection: Any) -> int | None:
    """The file descriptor of a psycopg connection's socket (sync or async), if it is open."""
    driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    try:
        number: int = driver.fileno()
    except Exception:  # noqa: BLE001 - closed (psycopg's own error): the pool finds that out
        return None
    return number if number >= 0 else None


def _spoken(descriptor: int) -> bool:
    """Whether the socket has something to read, or has been closed, without waiting."""
    poll = getattr(select, "poll", None)
    if poll is None:  # Windows
        readable, _, failed = select.select([descriptor], [], [descriptor], 0)
        return bool(readable or failed)
    poller = poll()
    poller.register(descriptor, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))
