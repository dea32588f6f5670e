"""Where a benchmark run writes: a throwaway database per backend, and the store built on it.

SQLite gets a fresh directory holding one file for the store and the raw baseline and one for
the seed; Postgres gets ``CREATE DATABASE bench_<random>`` on the server, dropped at the end,
so results never mix with other data and a run never touches an existing database.
"""

from __future__ import annotations

import contextlib
import importlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.raw import Raw, RawPostgres, RawSQLite

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_STORE = "purpose_agent:SQLCheckpointer"


def load_factory(spec: str) -> Callable[..., Any]:
    """Import ``module:attribute`` (the store class, by default ``SQLCheckpointer``)."""
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute or "SQLCheckpointer")  # type: ignore[no-any-return]


@dataclass
class Target:
    """One backend's throwaway database and how to reach it.

    Attributes:
        backend: ``"sqlite"`` or ``"postgres"``.
        store_url: The SQLAlchemy URL the store is built from.
        raw_dsn: What the raw driver connects to (a file path or a libpq URL).
        seed_path: The file for the seed's store (SQLite only).
        info: Server version and durability settings, for the report.
    """

    backend: str
    store_url: str
    raw_dsn: str
    seed_path: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    raw_options: dict[str, Any] = field(default_factory=dict)

    def raw(self) -> Raw:
        """A new raw-driver connection at the same durability settings as the store."""
        if self.backend == "sqlite":
            return RawSQLite(self.raw_dsn, **self.raw_options)
        return RawPostgres(self.raw_dsn)


@contextlib.contextmanager
def sqlite_target(directory: str | None = None) -> Iterator[Target]:
    """A fresh directory with the store's file and the seed's file; removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="pa_bench_", dir=directory))
    try:
        import sqlite3

        path = root / "bench.db"
        yield Target(
            backend="sqlite",
            store_url=f"sqlite:///{path}",
            raw_dsn=str(path),
            seed_path=str(root / "seed.db"),
            info={"sqlite_version": sqlite3.sqlite_version, "directory": str(root)},
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_database(admin_url: str, prefix: str = "bench") -> Iterator[URL]:
    """The URL of ``CREATE DATABASE <prefix>_<random>``, dropped (forcibly) afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_libpq(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name)
    finally:
        with psycopg.connect(_libpq(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_target(admin_url: str) -> Iterator[Target]:
    """``CREATE DATABASE bench_<random>`` on the server; dropped (forcibly) afterwards."""
    import psycopg

    with postgres_database(admin_url) as url:
        with psycopg.connect(_libpq(url), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        yield Target(
            backend="postgres",
            store_url=url.render_as_string(hide_password=False),
            raw_dsn=_libpq(url),
            info={"postgres_version": version, "database": url.database},
        )


def _engine_of(store: Any) -> Any:
    for attribute in ("engine", "_engine", "sync_engine", "_sync_engine"):
        engine = getattr(store, attribute, None)
        if engine is not None and hasattr(engine, "connect"):
            return engine
    return None


def store_settings(store: Any, backend: str) -> dict[str, Any]:
    """Read the durability settings in force on the store's own connections.

    The raw SQLite baseline is then opened with the same journal mode and synchronous level. If
    the store exposes no engine, the settings are assumed (WAL, FULL) and marked as such.
    """
    engine = _engine_of(store)
    if engine is None:
        if backend == "sqlite":
            return {"journal_mode": "wal", "synchronous": 2, "probed": False}
        return {"probed": False}
    with engine.connect() as conn:
        if backend == "sqlite":
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            return {
                "journal_mode": journal,
                "synchronous": synchronous,
                "busy_timeout_ms": busy,
                "probed": True,
                "pool": type(engine.pool).__name__,
            }
        names = ("synchronous_commit", "default_transaction_isolation")
        settings = {n: conn.exec_driver_sql(f"SHOW {n}").scalar() for n in names}
        settings.update(probed=True, pool=type(engine.pool).__name__, driver=engine.dialect.driver)
        return settings
