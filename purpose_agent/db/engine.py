"""Building the one engine a store uses, with each backend set up for concurrent, durable use."""

from __future__ import annotations

import os
from typing import Any, Literal

from sqlalchemy import Engine, create_engine, event, pool
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from purpose_agent.errors import InvalidInput

Durability = Literal["full", "normal"]

DEFAULT_URL = "sqlite:///purpose_agent.db"
URL_ENV = "PURPOSE_AGENT_DB_URL"


def default_url() -> str:
    """The URL used wherever one is optional: ``PURPOSE_AGENT_DB_URL``, else a local SQLite file."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


def parse_url(url: str | URL) -> URL:
    """Parse a database URL, naming the problem instead of failing deep inside SQLAlchemy.

    Bare ``postgresql://`` and ``mysql://``/``mariadb://`` URLs get the drivers this package
    is tested with (psycopg 3 and PyMySQL).

    Raises:
        InvalidInput: If the text is not a database URL.

    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {url!r} ({exc})") from exc
    drivers = {
        "postgresql": "postgresql+psycopg",
        "postgres": "postgresql+psycopg",
        "mysql": "mysql+pymysql",
        "mariadb": "mariadb+pymysql",
    }
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    return parsed


def make_engine(
    url: str | URL, *, durability: Durability = "full", busy_timeout: float = 60.0, **kwargs: Any
) -> Engine:
    """Create the engine for one store.

    Args:
        url: A SQLAlchemy database URL.
        durability: ``"full"``: a save that returned survives a power cut (SQLite
            ``synchronous=FULL``; Postgres ``synchronous_commit`` as the server sets it).
            ``"normal"``: it survives a crash of the process but a power cut may lose the last
            commits (SQLite ``synchronous=NORMAL``; Postgres ``synchronous_commit=off``).
        busy_timeout: Seconds a SQLite writer waits for another writer before failing.
        **kwargs: Passed to :func:`sqlalchemy.create_engine`.

    Returns:
        The engine.

    Raises:
        InvalidInput: If the URL is malformed or names a driver that is not installed.

    """
    if durability not in ("full", "normal"):
        raise InvalidInput(f"durability must be 'full' or 'normal', not {durability!r}")
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {}
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every connection would see its own empty database.
            options["poolclass"] = pool.StaticPool
            options["connect_args"] = {"check_same_thread": False}
        else:
            options["pool_size"] = 8
            options["max_overflow"] = 32
    elif backend == "postgresql":
        options["pool_size"] = 8
        options["max_overflow"] = 16
        options["isolation_level"] = "AUTOCOMMIT"  # see SqlDialect.autocommit
        # Nothing to roll back on an autocommit connection; transactions end in their block.
        options["pool_reset_on_return"] = None
        # The store's statements are key lookups and key-range scans whatever the parameters.
        # A custom plan built from stale statistics (right after a bulk load) can turn the
        # iter_events page query into a bitmap scan and a sort of the rest of the run, per
        # page; the generic plan is the primary-key range scan.
        server = ["-c plan_cache_mode=force_generic_plan"]
        if durability == "normal":
            server.append("-c synchronous_commit=off")
        options["connect_args"] = {"options": " ".join(server)}
    elif backend in ("mysql", "mariadb"):
        options["pool_size"] = 8
        options["max_overflow"] = 16
        options["pool_recycle"] = 3600
        options["isolation_level"] = "AUTOCOMMIT"  # see SqlDialect.autocommit
        # Nothing to roll back on an autocommit connection; transactions end in their block.
        options["pool_reset_on_return"] = None
        options["connect_args"] = {"charset": "utf8mb4"}
    if "poolclass" in kwargs:
        for sizing in ("pool_size", "max_overflow", "pool_recycle"):
            options.pop(sizing, None)
    options.update(kwargs)
    try:
        engine = create_engine(parsed, **options)
    except NoSuchModuleError as exc:
        raise InvalidInput(
            f"cannot open {parsed.render_as_string(hide_password=True)}: unknown database or "
            f"driver {parsed.drivername!r}; use sqlite:///PATH, postgresql+psycopg://... or "
            "mariadb+pymysql://..."
        ) from exc
    except (ModuleNotFoundError, ArgumentError) as exc:
        extra = {"postgresql": "postgres", "mysql": "mariadb", "mariadb": "mariadb"}.get(backend)
        hint = f"; install it with pip install 'purpose-agent[{extra}]'" if extra else ""
        raise InvalidInput(
            f"cannot open {parsed.render_as_string(hide_password=True)}: {exc}{hint}"
        ) from exc
    if backend == "sqlite":
        configure_sqlite(engine, durability=durability, busy_timeout=busy_timeout)
    return engine


def configure_sqlite(engine: Engine, *, durability: Durability, busy_timeout: float) -> None:
    """Set up SQLite for several writers: WAL, a busy timeout, and transactions the store opens.

    The driver is put in autocommit mode, so that pysqlite never opens a deferred transaction
    on its own; the store's writers issue ``BEGIN IMMEDIATE`` themselves (see
    ``SQLiteDialect.write_transaction``) and wait for the write lock up to ``busy_timeout``.
    """
    synchronous = "FULL" if durability == "full" else "NORMAL"
    timeout_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            if engine.url.database not in (None, "", ":memory:"):
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()
