"""Building the asyncio engine of an async store, from the same URLs the synchronous store takes.

Users pass ``sqlite:///runs.db``, ``postgresql+psycopg://...`` or ``mariadb+pymysql://...``
to both stores; here each is mapped to its asyncio driver (aiosqlite, psycopg's async
connection, aiomysql) and given the same settings as :func:`~purpose_agent.db.engine.make_engine`
gives the synchronous engine: autocommit connections, the SQLite pragmas (WAL, busy timeout,
synchronous), the Postgres session setup, the MariaDB session options.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable
from typing import Any

import sqlalchemy.ext.asyncio
from sqlalchemy import event, pool
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine

from purpose_agent.db.aiosqlite_cursor import use_one_trip_cursors
from purpose_agent.db.ended_connections import drop_ended_connections
from purpose_agent.db.engine import (
    Durability,
    UrlLike,
    _backend_options,
    keep_read_committed,
    parse_url,
    refuse_unknown_options,
    shown_url,
    synchronous_url,
)
from purpose_agent.db.memory_pool import SerialStaticPool
from purpose_agent.db.network import CONNECT_SECONDS, bound_sockets
from purpose_agent.db.postgres_sessions import configure_postgres
from purpose_agent.db.task_pool import TaskQueuePool
from purpose_agent.errors import InvalidInput

# The synchronous driver a URL names (or its backend's default), and the asyncio driver used
# instead. psycopg 3 is both: SQLAlchemy picks its async connection for an async engine.
_ASYNC_TWINS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql+pymysql": "mysql+aiomysql",
    "mysql+aiomysql": "mysql+aiomysql",
    "mariadb+pymysql": "mariadb+aiomysql",
    "mariadb+aiomysql": "mariadb+aiomysql",
}
_EXTRAS = {"postgresql": "postgres", "mysql": "mariadb", "mariadb": "mariadb"}


def async_url(url: UrlLike) -> tuple[URL, URL]:
    """The URL as the synchronous store reads it, and the same database on its asyncio driver.

    Raises:
        InvalidInput: The URL is malformed or names a driver without an asyncio twin here.

    """
    parsed = parse_url(url)
    twin = _ASYNC_TWINS.get(parsed.drivername)
    if twin is None:
        shown = shown_url(parsed)
        raise InvalidInput(
            f"cannot open {shown} with AsyncSQLCheckpointer: use sqlite:///PATH, "
            "postgresql+psycopg://... or mariadb+pymysql://... (the store picks the asyncio "
            "driver itself)"
        )
    return synchronous_url(parsed), parsed.set(drivername=twin)


def make_async_engine(
    url: UrlLike, *, durability: Durability = "full", **kwargs: Any
) -> AsyncEngine:
    """Create the asyncio engine for one store, set up as :func:`make_engine` sets up its own.

    Args:
        url: A URL the synchronous store takes (or one naming the asyncio driver).
        durability: As for :func:`~purpose_agent.db.engine.make_engine`.
        **kwargs: Passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    Returns:
        The engine. SQLite's pragmas are set by the store when it adopts the engine (its
        connect hook runs on the engine's synchronous side).

    Raises:
        InvalidInput: If the URL is malformed or its asyncio driver is not installed.

    """
    if durability not in ("full", "normal"):
        raise InvalidInput(f"durability must be 'full' or 'normal', not {durability!r}")
    synchronous, parsed = async_url(url)
    backend = parsed.get_backend_name()
    options = _backend_options(synchronous)
    chosen = options.pop("url", synchronous)
    parsed = parsed.set(query=chosen.query, database=chosen.database)
    if backend == "sqlite":
        options["pool_reset_on_return"] = None  # see use_one_trip_cursors
    if "poolclass" not in options:
        # Connections go to waiting tasks in the order they asked (see task_pool). A SQLite
        # file is pooled as the synchronous store pools it: earlier SQLAlchemy 2.0 releases
        # default aiosqlite to NullPool, which refuses the pool's sizes (and would open a
        # connection, and a thread, per call).
        options["poolclass"] = TaskQueuePool
    _drop_read_timeouts(options)
    if options.get("poolclass") is SerialStaticPool:
        # Tasks of one loop share its thread, so a lock per thread cannot order them.
        options["poolclass"] = pool.StaticPool
        options.pop("connect_args", None)  # aiosqlite runs each connection in its own thread
    if "poolclass" in kwargs:
        for sizing in ("pool_size", "max_overflow", "pool_recycle"):
            options.pop(sizing, None)
    options.update(kwargs)
    try:
        # Looked up as it is called, as make_engine does (for instrumentations).
        engine = sqlalchemy.ext.asyncio.create_async_engine(parsed, **options)
    except NoSuchModuleError as exc:  # pragma: no cover - every twin above is a dialect
        raise InvalidInput(f"cannot open {parsed.drivername!r}: {exc}") from exc
    except (ModuleNotFoundError, ArgumentError) as exc:
        shown = shown_url(parsed)
        extra = _EXTRAS.get(backend)
        hint = f"purpose-agent[{extra}]" if extra else "purpose-agent"
        raise InvalidInput(
            f"cannot open {shown}: {exc}; install it with pip install '{hint}'"
        ) from exc
    except (ValueError, TypeError) as exc:  # an option of the URL, read by the dialect
        shown = shown_url(synchronous)
        raise InvalidInput(f"cannot open {shown}: an option of the URL is refused ({exc})") from exc
    if backend == "postgresql":
        configure_postgres(engine.sync_engine, synchronous_commit_off=durability == "normal")
        drop_ended_connections(engine.sync_engine)
    elif backend == "sqlite":
        use_one_trip_cursors(engine)
    else:
        bound_async_connect(engine.sync_engine)
        refuse_unknown_options(engine.sync_engine, shown_url(synchronous))
        keep_read_committed(engine.sync_engine, parsed)
        bound_sockets(engine.sync_engine)
    return engine


def _drop_read_timeouts(options: dict[str, Any]) -> None:
    """Drop PyMySQL's read bounds, which aiomysql does not take (see bound_async_connect)."""
    for name in ("read_timeout", "write_timeout"):
        options.get("connect_args", {}).pop(name, None)


def bound_async_connect(engine: Any) -> None:
    """Bound aiomysql's whole connect, greeting and login included, to ``CONNECT_SECONDS``.

    aiomysql's ``connect_timeout`` bounds the TCP connect only: a server that accepts and
    stays silent (stopped, hung, a proxy with no backend) held the connect for ever.
    """

    @event.listens_for(engine, "do_connect")
    def _bounded(_dialect: Any, _record: Any, _cargs: Any, cparams: Any) -> None:
        create = cparams.pop("async_creator_fn", None)
        if create is None:
            import aiomysql  # type: ignore[import-untyped]  # noqa: PLC0415 - optional driver

            create = aiomysql.connect

        async def bounded(*args: Any, **kwargs: Any) -> Any:
            connecting = asyncio.ensure_future(
                asyncio.wait_for(create(*args, **kwargs), CONNECT_SECONDS)
            )
            try:
                return await asyncio.shield(connecting)
            except asyncio.CancelledError:
                # The caller was cancelled during the login: aiomysql, cancelled there, left
                # its half-open connection unclosed (a ResourceWarning when collected). The
                # connect finishes (bounded as above) and its connection is closed then.
                connecting.add_done_callback(_close_connected)
                raise
            except TimeoutError as exc:
                # As PyMySQL reports its own (a lost connection, which the store retries).
                import pymysql  # noqa: PLC0415 - aiomysql's errors are PyMySQL's

                raise pymysql.err.OperationalError(
                    2013, "Lost connection to MySQL server during connect (timed out)"
                ) from exc

        cparams["async_creator_fn"] = bounded


class LoopConnections:
    """The driver connections an async engine opened, to drop them when their loop has ended.

    An asyncio connection belongs to the event loop it was opened on. A store used from a new
    loop (a second ``asyncio.run``) cannot close the old loop's connections the usual way
    (the driver would schedule the close on a closed loop, now or when the connection is
    garbage collected), so their sockets or threads are closed directly here.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._opened: weakref.WeakSet[Any] = weakref.WeakSet()

        @event.listens_for(engine.sync_engine, "connect")
        def _track(dbapi_connection: Any, _record: Any) -> None:
            with contextlib.suppress(TypeError):  # a driver without weak references
                self._opened.add(dbapi_connection.driver_connection)

    async def abandon(self, loop_closed: bool) -> None:
        """Forget the pooled connections; close each directly if its loop has ended."""
        closing = []
        if loop_closed:
            for connection in list(self._opened):
                with contextlib.suppress(Exception):
                    closing.append(_close_without_loop(connection))
        self._opened.clear()
        self._engine.sync_engine.dispose(close=False)
        for closed in closing:
            if closed is not None:
                with contextlib.suppress(Exception):
                    await closed


def _close_connected(connecting: asyncio.Future[Any]) -> None:
    """Close the aiomysql connection a cancelled caller no longer waits for."""
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().close()  # closes its transport on the running loop


def _close_without_loop(driver: Any) -> Awaitable[Any] | None:
    """Close an asyncio driver's connection whose event loop is closed.

    Returns:
        What to await for the close to finish on the current loop, if anything.

    """
    if hasattr(driver, "stop") and hasattr(driver, "_tx"):  # aiosqlite: a thread per connection
        if not getattr(driver, "_running", True):
            # Closed or stopped already: its thread has ended, or ends at the stop it was
            # sent, so a second stop would wait for an answer that never comes.
            return None
        stopped: Awaitable[Any] | None = driver.stop()  # answers on the running loop
        return stopped
    if hasattr(driver, "pgconn"):  # psycopg: libpq closes the socket synchronously
        driver.pgconn.finish()
    elif getattr(driver, "_writer", None) is not None:  # aiomysql
        # The transport would close through its loop: its socket is closed here instead.
        transport = driver._writer.transport
        raw = getattr(transport, "_sock", None)
        if raw is not None:
            raw.close()
            transport._sock = None
            transport._closing = True  # what the stream checks before it warns
        driver._writer = None
        driver._reader = None
    return None
