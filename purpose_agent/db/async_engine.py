"""Building the asyncio engine of an async store, from the same URLs the synchronous store takes.

Users pass ``sqlite:///runs.db``, ``postgresql+psycopg://...`` or ``mariadb+pymysql://...``
to both stores; here each is mapped to its asyncio driver (aiosqlite, psycopg's async
connection, aiomysql) and given the same settings as :func:`~purpose_agent.db.engine.make_engine`
gives the synchronous engine: autocommit connections, the SQLite pragmas (WAL, busy timeout,
synchronous), the Postgres session setup, the MariaDB session options.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import pool
from sqlalchemy.engine import URL
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from purpose_agent.db.engine import Durability, _backend_options, parse_url
from purpose_agent.db.postgres_sessions import configure_postgres
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


def async_url(url: str | URL) -> tuple[URL, URL]:
    """The URL as the synchronous store reads it, and the same database on its asyncio driver.

    Raises:
        InvalidInput: The URL is malformed or names a driver without an asyncio twin here.

    """
    parsed = parse_url(url)
    twin = _ASYNC_TWINS.get(parsed.drivername)
    if twin is None:
        shown = parsed.render_as_string(hide_password=True)
        raise InvalidInput(
            f"cannot open {shown} with AsyncSQLCheckpointer: use sqlite:///PATH, "
            "postgresql+psycopg://... or mariadb+pymysql://... (the store picks the asyncio "
            "driver itself)"
        )
    synchronous = {
        "sqlite+aiosqlite": "sqlite",
        "mysql+aiomysql": "mysql+pymysql",
        "mariadb+aiomysql": "mariadb+pymysql",
    }.get(parsed.drivername, parsed.drivername)
    return parsed.set(drivername=synchronous), parsed.set(drivername=twin)


def make_async_engine(
    url: str | URL, *, durability: Durability = "full", **kwargs: Any
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
    options = _backend_options(synchronous)
    chosen = options.pop("url", synchronous)
    parsed = parsed.set(query=chosen.query, database=chosen.database)
    backend = parsed.get_backend_name()
    if options.get("poolclass") is pool.StaticPool:
        options.pop("connect_args", None)  # aiosqlite runs each connection in its own thread
    if "poolclass" in kwargs:
        for sizing in ("pool_size", "max_overflow", "pool_recycle"):
            options.pop(sizing, None)
    options.update(kwargs)
    try:
        engine = create_async_engine(parsed, **options)
    except NoSuchModuleError as exc:  # pragma: no cover - every twin above is a dialect
        raise InvalidInput(f"cannot open {parsed.drivername!r}: {exc}") from exc
    except (ModuleNotFoundError, ArgumentError) as exc:
        shown = parsed.render_as_string(hide_password=True)
        extra = _EXTRAS.get(backend)
        hint = f"purpose-agent[{extra}]" if extra else "purpose-agent"
        raise InvalidInput(
            f"cannot open {shown}: {exc}; install it with pip install '{hint}'"
        ) from exc
    if backend == "postgresql":
        configure_postgres(engine.sync_engine, synchronous_commit_off=durability == "normal")
    return engine
