"""Building the one engine a store uses, with each backend set up for concurrent, durable use."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any, Literal

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from purpose_agent.db.ended_connections import drop_ended_connections
from purpose_agent.db.memory_pool import SerialStaticPool
from purpose_agent.db.network import CONNECT_SECONDS, bound_sockets
from purpose_agent.db.postgres_sessions import configure_postgres
from purpose_agent.db.thread_pool import ThreadQueuePool
from purpose_agent.errors import InvalidInput

Durability = Literal["full", "normal"]

DEFAULT_SQLITE_FILE = "purpose_agent.db"
DEFAULT_URL = f"sqlite:///{DEFAULT_SQLITE_FILE}"
URL_ENV = "PURPOSE_AGENT_DB_URL"
# What the seed's SQLiteCheckpointer() opened without a path.
SEED_DEFAULT_FILE = "purpose_agent_checkpoints.db"


def default_url() -> str:
    """The URL used wherever one is optional: ``PURPOSE_AGENT_DB_URL``, else a local SQLite file."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


# Drivers take a password in the query string as well as before the host (libpq's password and
# sslpassword; PyMySQL's password and passwd). Text that is no URL may hold a password with any
# character, '/', '?', '#' and '@' included: everything up to the last '@' is hidden.
_SECRET_USERINFO = re.compile(r"^([^:/?#]+://[^:/?#@]*):.*@")
_SECRET_QUERY = re.compile(r"([?&](?:password|passwd|sslpassword)=)[^&#]*", re.IGNORECASE)


def shown_url(url: URL) -> str:
    """The URL as messages and listings print it: every password it holds as ``***``.

    ``render_as_string(hide_password=True)`` hides only the one before the host; a password
    in the query string would be printed with every line that names the store.
    """
    return _SECRET_QUERY.sub(r"\1***", url.render_as_string(hide_password=True))


def shown_text(text: str) -> str:
    """Text given as a URL that may not parse, as messages print it: passwords as ``***``."""
    return _SECRET_QUERY.sub(r"\1***", _SECRET_USERINFO.sub(r"\1:***@", text))


_AT_IN_USERINFO = "write an '@' in the user name or password as %40"

# What a store takes for its database: a URL, or the path of a SQLite file.
UrlLike = str | URL | os.PathLike[str]


def parse_url(url: UrlLike) -> URL:
    """Parse a database URL, naming the problem instead of failing deep inside SQLAlchemy.

    Bare ``postgresql://`` and ``mysql://``/``mariadb://`` URLs get the drivers this package
    is tested with (psycopg 3 and PyMySQL). A path (``pathlib.Path``) names a SQLite file, as
    it does for ``SQLiteCheckpointer``.

    Raises:
        InvalidInput: If the value is not a database URL.

    """
    if isinstance(url, os.PathLike):
        return URL.create("sqlite", database=os.fspath(url))
    if not isinstance(url, (str, URL)):
        # SQLAlchemy takes any object here and fails later, far from the call, with
        # "'bytes' object has no attribute 'render_as_string'".
        # The value itself is not shown: it may hold a password.
        raise InvalidInput(
            "a database URL is a str (or a sqlalchemy URL, or the path of a SQLite file), "
            f"not {type(url).__name__}"
        )
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        shown = shown_text(url) if isinstance(url, str) else shown_url(url)
        raise InvalidInput(f"not a database URL: {shown!r} ({exc})") from exc
    except ValueError as exc:  # a port that is not a number, quoted by the error
        # SQLAlchemy ends a password at its first '@'; a ':' after it starts a "port", whose
        # quote in the error would be the rest of the password.
        shown = shown_text(url) if isinstance(url, str) else shown_url(url)
        why = _AT_IN_USERINFO if "@" in str(exc) else "its port is not a number"
        raise InvalidInput(f"not a database URL: {shown!r} ({why})") from exc
    if isinstance(url, str) and parsed.host is not None and "@" in parsed.host:
        # The rest of the password was taken for the host: printed with the URL, and by the
        # driver that fails to resolve it.
        raise InvalidInput(f"not a database URL: {shown_text(url)!r} ({_AT_IN_USERINFO})")
    drivers = {
        "postgresql": "postgresql+psycopg",
        "postgres": "postgresql+psycopg",
        "mysql": "mysql+pymysql",
        "mariadb": "mariadb+pymysql",
    }
    if parsed.drivername in drivers:
        parsed = parsed.set(drivername=drivers[parsed.drivername])
    return parsed


def in_memory_sqlite(url: URL) -> bool:
    """Whether ``url`` is a SQLite database held in memory, gone when its process ends.

    ``sqlite://``, ``sqlite:///:memory:``, and the URI forms ``file::memory:`` and
    ``file:NAME?mode=memory`` (with ``uri=true``).
    """
    if url.get_backend_name() != "sqlite":
        return False
    database = url.database
    if database in (None, "", ":memory:"):
        return True
    if not database.startswith("file:") or not url.query.get("uri"):
        return False
    path, _, query = database.removeprefix("file:").partition("?")
    return path == ":memory:" or url.query.get("mode") == "memory" or "mode=memory" in query


def require_directory(file: Path) -> None:
    """Refuse a SQLite file whose directory does not exist, naming both.

    SQLite itself says only ``unable to open database file``, which does not tell a user that
    the path is the problem, nor which part of it.

    Raises:
        InvalidInput: The directory does not exist, the path is a directory, or the file does
            not exist and this process may not create it there.

    """
    if file.is_dir():
        raise InvalidInput(
            f"cannot open the SQLite database {file}: it is a directory, not a file; name a "
            f"file in it (sqlite:///{(file / 'purpose_agent.db').as_posix()})"
        )
    if not file.parent.is_dir():
        home = " (a URL's ~ is not the home directory: write the full path)"
        raise InvalidInput(
            f"cannot open the SQLite database {file}: its directory {file.parent} does not "
            f"exist; create it, or correct the URL{home if file.parts[0] == '~' else ''}"
        )
    if not file.exists() and not os.access(file.parent, os.W_OK | os.X_OK):
        raise InvalidInput(
            f"cannot create the SQLite database {file}: this process may not write to its "
            f"directory {file.parent}"
        )


# The drivers each extra installs, and the extra's name.
_EXTRAS = {"psycopg": "postgres", "pymysql": "mariadb"}
# The package that installs a driver, where its name is not the driver's own.
_PACKAGES = {
    "mariadbconnector": "mariadb",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
    "psycopg2": "psycopg2-binary",
    "pysqlcipher": "sqlcipher3-binary",
}
# The databases the store has statements for (see dialects.flavor_for).
SUPPORTED_BACKENDS = frozenset(("sqlite", "postgresql", "mysql", "mariadb"))
SUPPORTED_URLS = "sqlite:///PATH, postgresql+psycopg://... or mariadb+pymysql://..."
_ASYNC_DRIVERS = frozenset(("asyncpg", "aiosqlite", "asyncmy", "aiomysql"))


# The asyncio drivers AsyncSQLCheckpointer uses, and the synchronous driver of the same
# database (psycopg 3 is both).
_SYNCHRONOUS_TWINS = {
    "sqlite+aiosqlite": "sqlite",
    "mysql+aiomysql": "mysql+pymysql",
    "mariadb+aiomysql": "mariadb+pymysql",
}


def synchronous_url(url: URL) -> URL:
    """``url`` on the synchronous driver of its database: what the CLI and the sync store take."""
    return url.set(drivername=_SYNCHRONOUS_TWINS.get(url.drivername, url.drivername))


def read_only_query(path: Path) -> dict[str, str]:
    """The SQLite URI parameters that open ``path`` for reading only, whatever its folder allows.

    A WAL database in a folder this process cannot write cannot even be read unless it is
    opened as immutable (its ``-shm`` file cannot be created): an archived database must still
    be readable.
    """
    query = {"mode": "ro", "uri": "true"}
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-shm").exists():
        query["immutable"] = "1"
    return query


def read_only_url(parsed: URL) -> URL | None:
    """The URL that opens an existing SQLite file this process may not write, for reading.

    SQLite opens a read-only file read-write anyway and fails on the first pragma that writes
    ("attempt to write a readonly database"). Writes then fail with a message that says why.

    Returns:
        ``None`` when the file is missing or writable.

    """
    path = Path(parsed.database or "")
    if not path.is_file() or (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)):
        return None
    return parsed.set(database=f"file:{path.resolve()}", query=read_only_query(path))


def read_only_reason(url: URL) -> str:
    """Why SQLite refused a write to the file at ``url``, for the error's message.

    Usually the file or its folder is not writable for this process. But a process of
    another user that opens a WAL database read-only while no other process has it open
    creates its ``-wal`` and ``-shm`` files, owned by that user and left behind when it
    exits; every writer after that is refused, with the file and its folder writable.
    """
    database = url.database or ""
    if url.query.get("uri"):
        database = database.removeprefix("file:")
    path = Path(database)
    if database and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
        foreign = [
            companion
            for companion in (Path(f"{path}-wal"), Path(f"{path}-shm"))
            if companion.exists() and not os.access(companion, os.W_OK)
        ]
        if foreign:
            named = " and ".join(str(companion) for companion in foreign)
            owners = sorted({str(companion.stat().st_uid) for companion in foreign})
            return (
                f"the database's {named} cannot be written by this process (owned by uid "
                f"{', '.join(owners)}: left by a process that opened the database read-only "
                "while no writer had it open); remove them once no process has the database "
                "open, or give this process write access to them"
            )
    return (
        "the database is read-only for this process (the file or its folder is not "
        "writable); it can be read, not written"
    )


def _driver(parsed: URL) -> str:
    # From the URL's text: asking SQLAlchemy would load the dialect, which may not exist.
    return parsed.drivername.partition("+")[2]


def _install_hint(parsed: URL) -> str:
    driver = _driver(parsed)
    extra = _EXTRAS.get(driver)
    if extra is not None:
        return f"; install it with pip install 'purpose-agent[{extra}]'"
    if not driver:
        return ""
    return f"; install the driver with pip install {_PACKAGES.get(driver, driver)}"


def _backend_options(parsed: URL) -> dict[str, Any]:
    """The engine options that make each backend fit for concurrent, durable use."""
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        # Refused before its driver is looked for: installing it would not help.
        raise InvalidInput(
            f"cannot open {shown_url(parsed)}: the store keeps runs in SQLite, PostgreSQL or "
            f"MariaDB (MySQL), not {backend}; use {SUPPORTED_URLS}"
        )
    if _driver(parsed) in _ASYNC_DRIVERS:
        raise InvalidInput(
            f"cannot open {shown_url(parsed)}: "
            f"{_driver(parsed)} is an asyncio driver; use postgresql+psycopg://..., "
            "sqlite:///... or mariadb+pymysql://..., which AsyncSQLCheckpointer takes too"
        )
    # A statement's parameters are the events' data, which can hold what a run was given (an
    # API key in a tool call's arguments, a user's message): SQLAlchemy would print them in
    # every error through its own execution (under a listener, OpenTelemetry's) and in echo's
    # log. An engine passed in keeps its own choice.
    options: dict[str, Any] = {"hide_parameters": True}
    if backend == "sqlite":
        if parsed.database not in (None, "", ":memory:") and not parsed.query.get("uri"):
            require_directory(Path(parsed.database))
            read_only = read_only_url(parsed)
            if read_only is not None:
                options["url"] = read_only
        # Autocommit at the engine level too, not only in the connect hook: a connection
        # that was switched per checkout (the migration lock does that) is reset to the
        # engine's level when it returns, and pysqlite's default level would then open an
        # implicit transaction around the next single-statement write and never commit it.
        options["isolation_level"] = "AUTOCOMMIT"
        if parsed.database in (None, "", ":memory:"):
            # One shared connection, or every connection would see its own empty database;
            # lent to one thread at a time (see memory_pool).
            options["poolclass"] = SerialStaticPool
            options["connect_args"] = {"check_same_thread": False}
        else:
            options["pool_size"] = 8
            options["max_overflow"] = 32
    elif backend == "postgresql":
        options["pool_size"] = 8
        options["max_overflow"] = 16
        options["isolation_level"] = "AUTOCOMMIT"  # see Flavor.begin_sql
        # Nothing to roll back on an autocommit connection; transactions end in their block.
        options["pool_reset_on_return"] = None
    elif backend in ("mysql", "mariadb"):
        options["pool_size"] = 8
        options["max_overflow"] = 16
        options["pool_recycle"] = 3600
        options["isolation_level"] = "AUTOCOMMIT"  # see Flavor.begin_sql
        # Nothing to roll back on an autocommit connection; transactions end in their block.
        options["pool_reset_on_return"] = None
        options["connect_args"] = {"charset": "utf8mb4"}
        if "connect_timeout" not in parsed.query:
            # PyMySQL's default; aiomysql's is none (see network).
            options["connect_args"]["connect_timeout"] = CONNECT_SECONDS
        if "read_timeout" not in parsed.query and _driver(parsed) == "pymysql":
            # PyMySQL's connect_timeout bounds the TCP connect only: the server's greeting
            # and the login are read with read_timeout, none by default, so a server that
            # accepts and stays silent (stopped, hung, a proxy with no backend) held the
            # connect for ever. Bounded here; bound_sockets lifts it once connected.
            options["connect_args"]["read_timeout"] = CONNECT_SECONDS
            options["connect_args"]["write_timeout"] = CONNECT_SECONDS
        if "init_command" not in parsed.query:
            # READ COMMITTED in the connection's own first statement; a URL's init_command
            # is kept, and this runs after it (see keep_read_committed).
            options["connect_args"]["init_command"] = READ_COMMITTED
    return options


# Fewer gap locks than MariaDB's REPEATABLE READ default, so fewer deadlocks between writers
# of different runs; every write here is an insert or upsert.
READ_COMMITTED = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"


def pool_sizing(
    parsed: URL | None, pool_size: int | None, max_overflow: int | None
) -> dict[str, int]:
    """The pool sizes a caller gave a store, checked, as engine options.

    A store opens up to 8 connections and 16 more under load on a server (32 more on a
    SQLite file), per process: a fleet of processes can reach a server's or a role's
    connection limit sized for fewer. Given to the store, the sizes keep every other setting
    of the engine it builds (autocommit, the fair pool, hidden parameters), which an engine
    built with ``create_engine`` to change them would lose.

    Args:
        parsed: The store's URL, or ``None`` for an engine the caller passed in, whose pool
            is the caller's own.
        pool_size: Connections kept open.
        max_overflow: Connections opened beyond them under load.

    Raises:
        InvalidInput: A size out of range, or sizes for an engine passed in or for an
            in-memory SQLite database, whose one connection every caller shares.
    """
    sizing: dict[str, int] = {}
    for name, value, least in (("pool_size", pool_size, 1), ("max_overflow", max_overflow, 0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise InvalidInput(f"{name} must be an integer of at least {least}, not {value!r}")
        sizing[name] = value
    if sizing and parsed is None:
        raise InvalidInput(
            "pool_size and max_overflow size the engine the store builds from a URL; "
            "an engine passed in keeps its own pool (size it where it is created)"
        )
    if parsed is None or parsed.get_backend_name() != "sqlite":
        return sizing
    if sizing and parsed.database in (None, "", ":memory:"):  # as _backend_options pools it
        raise InvalidInput(
            "an in-memory SQLite database has one connection that every call shares: "
            "pool_size and max_overflow apply to a SQLite file or a server"
        )
    return sizing


def keep_read_committed(engine: Engine, parsed: URL) -> None:
    """Set READ COMMITTED on each new MariaDB connection of a URL that names an init_command.

    The driver takes one ``init_command``: the store's, given as a connect argument, used to
    replace the URL's without a word (``?init_command=SET SESSION sql_mode=...`` was dropped).
    """
    if "init_command" not in parsed.query:
        return

    @event.listens_for(engine, "connect")
    def _read_committed(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(READ_COMMITTED)
        finally:
            cursor.close()


def make_engine(
    url: UrlLike, *, durability: Durability = "full", busy_timeout: float = 60.0, **kwargs: Any
) -> Engine:
    """Create the engine for one store.

    Args:
        url: A SQLAlchemy database URL.
        durability: ``"full"``: a save that returned survives a power cut (SQLite
            ``synchronous=FULL``; Postgres ``synchronous_commit`` as the server sets it).
            ``"normal"``: it survives a crash of the process but a power cut may lose the last
            commits (SQLite ``synchronous=NORMAL``; Postgres ``synchronous_commit=off``, asked
            for when each connection opens; behind a pooler, which drops session settings,
            set it on the role instead: ``ALTER ROLE ... SET synchronous_commit = off``).
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
    options = _backend_options(parsed)
    parsed = options.pop("url", parsed)
    if "poolclass" not in options:
        # Connections go to waiting threads in the order they asked (see thread_pool); a
        # SQLite file is pooled the same way (its writes take turns on a held connection).
        options["poolclass"] = ThreadQueuePool
    if "poolclass" in kwargs:
        for sizing in ("pool_size", "max_overflow", "pool_recycle"):
            options.pop(sizing, None)
    options.update(kwargs)
    try:
        # Looked up as it is called: an instrumentation (OpenTelemetry's) that wraps
        # sqlalchemy.create_engine after this module was imported must see the engine.
        engine = sqlalchemy.create_engine(parsed, **options)
    except NoSuchModuleError as exc:
        raise InvalidInput(
            f"cannot open {shown_url(parsed)}: unknown database or "
            f"driver {parsed.drivername!r}; use {SUPPORTED_URLS}"
        ) from exc
    except (ModuleNotFoundError, ArgumentError) as exc:
        shown = shown_url(parsed)
        raise InvalidInput(f"cannot open {shown}: {exc}{_install_hint(parsed)}") from exc
    except (ValueError, TypeError) as exc:  # an option of the URL, read by the dialect
        shown = shown_url(parsed)
        raise InvalidInput(f"cannot open {shown}: an option of the URL is refused ({exc})") from exc
    if backend == "sqlite":
        configure_sqlite(engine, durability=durability, busy_timeout=busy_timeout)
    elif backend == "postgresql" and _driver(parsed) == "psycopg":
        configure_postgres(engine, synchronous_commit_off=durability == "normal")
        drop_ended_connections(engine)
    elif backend in ("mysql", "mariadb"):
        refuse_unknown_options(engine, shown_url(parsed))
        keep_read_committed(engine, parsed)
        bound_sockets(engine)
    return engine


def refuse_unknown_options(engine: Engine, shown: str) -> None:
    """Report a URL option the driver does not take as ``InvalidInput`` naming it.

    PyMySQL and aiomysql take the URL's options as keyword arguments, so a misspelt one
    (``?ssl_disable=true``) made every connection fail with a ``TypeError`` from deep in
    the pool, and a malformed number (``?connect_timeout=ten``) with a ``ValueError``.
    libpq reports its own (``invalid connection option``) and SQLite ignores them.

    Args:
        engine: The engine (an async engine's synchronous face).
        shown: The URL as its store names it.
    """

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"cannot connect to {shown}: {dialect.driver} refused the URL's options ({exc})"
            ) from exc


# Bytes a SQLite WAL is cut back to when it restarts after a checkpoint: four times what it
# reaches between SQLite's automatic checkpoints (1,000 pages of 4 KiB), so that a store
# writing steadily never regrows it.
WAL_SIZE_LIMIT = 16 * 1024 * 1024


def configure_sqlite(
    engine: Engine, *, durability: Durability, busy_timeout: float, owned: bool = True
) -> None:
    """Set up SQLite for several writers: WAL, a busy timeout, and transactions the store opens.

    The driver of an engine the store built is put in autocommit mode, so that pysqlite never
    opens a deferred transaction on its own; the store's writers issue ``BEGIN IMMEDIATE``
    themselves (see ``Flavor.begin_sql``) and wait for the write lock up to ``busy_timeout``.
    An engine passed in keeps its driver settings (the store switches its own connections to
    autocommit per checkout) but gets the same pragmas, on connections it opens from now on.
    """
    synchronous = "FULL" if durability == "full" else "NORMAL"
    timeout_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if owned:
            dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {timeout_ms}")
            if engine.url.database not in (None, "", ":memory:") and not _read_only(engine):
                cursor.execute("PRAGMA journal_mode = WAL")
                # A reader that holds a snapshot (a backup, a `sqlite3` shell left in a
                # transaction) keeps checkpoints from reaching the end of the WAL, which
                # grows meanwhile; once it goes, SQLite reuses the file from its start but
                # never shrinks it, so without a limit a WAL that grew to gigabytes stays
                # that size on disk for as long as any process has the database open.
                cursor.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()


def check_memory_engine(engine: Engine) -> None:
    """Refuse an engine of an in-memory SQLite database that the store's callers cannot share.

    An in-memory database lives in the connection that made it. A pool that opens a
    connection per checkout gives each call an empty database of its own, one that closes
    it loses the database, and a connection made with ``check_same_thread`` is refused to
    other threads (SQLAlchemy then replaces it, and the database with it): such engines are
    refused at once. ``create_engine("sqlite://")``'s ``SingletonThreadPool`` gives each
    thread a database of its own, so it serves the thread that opened the store, as it
    serves any program written for it, and another thread gets this error, not an empty
    database. A shared-cache database (``cache=shared``) is one database for every connection.

    Raises:
        InvalidInput: For such an engine, saying how to build one that works.

    """
    url = engine.url
    if not in_memory_sqlite(url):
        return
    shared = url.query.get("cache") == "shared" or "cache=shared" in str(url.database)
    pool = engine.pool
    if isinstance(pool, sqlalchemy.pool.NullPool):
        problem = "its NullPool closes its connection after each call, and the database with it"
    elif shared:
        return
    elif isinstance(pool, sqlalchemy.pool.SingletonThreadPool):
        _serve_one_thread(engine)
        return
    elif not isinstance(pool, sqlalchemy.pool.StaticPool):
        name = type(pool).__name__
        problem = f"its {name} opens a connection, and with it a database, per checkout"
    elif not _shared_across_threads(engine):
        problem = "its connection was made with check_same_thread, so no other thread may use it"
    else:
        return
    raise _memory_engine_refused(url, problem)


def _memory_engine_refused(url: URL, problem: str) -> InvalidInput:
    return InvalidInput(
        f"an engine of an in-memory SQLite database ({url}) cannot back a store that every "
        f"thread shares: {problem}; pass the URL instead (the store keeps one connection for "
        "every thread), or build the engine with poolclass=StaticPool and "
        "connect_args={'check_same_thread': False}"
    )


def _serve_one_thread(engine: Engine) -> None:
    """Refuse a ``SingletonThreadPool`` connection to every thread but the store's opener.

    The check runs at checkout, before the thread's new (empty) database is used: the
    opener's connection, and its data, stay as they are.
    """
    opener = threading.get_ident()
    problem = (
        "its SingletonThreadPool gives each thread a database of its own, so it serves only "
        "the thread that opened the store"
    )

    def checkout(*_: object) -> None:
        if threading.get_ident() != opener:
            raise _memory_engine_refused(engine.url, problem)

    event.listen(engine, "checkout", checkout)


def _shared_across_threads(engine: Engine) -> bool:
    """Whether the one connection of a ``StaticPool`` engine may be used by another thread."""
    with engine.connect() as conn:
        driver_connection = conn.connection.driver_connection
        refused: list[BaseException] = []

        def probe() -> None:
            # Making a cursor is the cheapest call that checks the thread; it runs nothing.
            try:
                driver_connection.cursor().close()  # type: ignore[union-attr]
            except engine.dialect.loaded_dbapi.ProgrammingError as exc:
                refused.append(exc)

        thread = threading.Thread(target=probe)
        thread.start()
        thread.join()
    return not refused


def adopt_sqlite(engine: Engine, *, durability: Durability, busy_timeout: float) -> None:
    """Give a SQLite engine built elsewhere the store's settings (WAL, busy timeout, sync).

    Connections the engine already pooled are closed so that every connection the store
    gets has the settings; an in-memory database keeps its one connection (closing it would
    lose the data, and WAL does not apply to it).
    """
    if durability not in ("full", "normal"):
        raise InvalidInput(f"durability must be 'full' or 'normal', not {durability!r}")
    configure_sqlite(engine, durability=durability, busy_timeout=busy_timeout, owned=False)
    if engine.url.database in (None, "", ":memory:"):
        return
    engine.dispose()


def _read_only(engine: Engine) -> bool:
    return engine.url.query.get("mode") == "ro"
