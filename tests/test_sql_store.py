"""What only the SQL store does: engine setup, driver errors, lost connections, corrupt rows."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL

from purpose_agent import (
    AsyncSQLCheckpointer,
    CorruptRecord,
    EventKind,
    InvalidInput,
    NewEvent,
    PAEvent,
    Recovery,
    RunState,
    SequenceConflict,
    SQLCheckpointer,
    SQLiteCheckpointer,
    StoreUnavailable,
)
from purpose_agent.db.group_commit import GroupCommitPolicy
from purpose_agent.db.models import EventRecord, RunRecord, SnapshotRecord
from purpose_agent.testing.samples import ev, new, st
from tests.row_locks import hold_run, wait_for_a_lock_wait
from tests.servers import server_url, throwaway_database
from tests.test_cli_support import invoke
from tests.users import NOBODY, run_as


def _pragma(store: SQLCheckpointer, name: str) -> object:
    with store.engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


@pytest.mark.sqlite
def test_sqlite_defaults_to_wal_full_sync_and_a_busy_timeout(tmp_path: Path) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'a.db'}") as store:
        assert _pragma(store, "journal_mode") == "wal"
        assert _pragma(store, "synchronous") == 2  # FULL: a returned save survives power loss
        assert _pragma(store, "busy_timeout") == 60_000
        assert _pragma(store, "foreign_keys") == 1


@pytest.mark.sqlite
def test_sqlite_normal_durability_is_an_explicit_choice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with SQLCheckpointer(url, durability="normal", busy_timeout=2.5) as store:
        assert _pragma(store, "synchronous") == 1  # NORMAL
        assert _pragma(store, "busy_timeout") == 2500
    with pytest.raises(InvalidInput):
        SQLCheckpointer(url, durability="sometimes")  # type: ignore[arg-type]


@pytest.mark.sqlite
def test_seed_constructor_takes_a_path(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    with SQLiteCheckpointer(path) as store:
        assert store.db_path == str(path)
        store.save_event(ev("r", 1))
    with SQLiteCheckpointer(str(path)) as again:
        assert again.list_events("r") == [ev("r", 1)]


@pytest.mark.sqlite
def test_seed_constructor_without_a_path_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PURPOSE_AGENT_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with SQLiteCheckpointer() as store:
        assert store.db_path == str(tmp_path / "env.db")
        store.save_event(ev("r", 1))
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'env.db'}") as same:
        assert same.list_events("r") == [ev("r", 1)]
    monkeypatch.delenv("PURPOSE_AGENT_DB_URL")
    with SQLiteCheckpointer() as store:
        assert store.db_path == "purpose_agent.db"
        assert store.list_events("r") == []
    assert (tmp_path / "purpose_agent.db").exists()


@pytest.mark.sqlite
def test_default_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PURPOSE_AGENT_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with SQLCheckpointer() as store:
        store.save_event(ev("r", 1))
    assert (tmp_path / "env.db").exists()
    monkeypatch.delenv("PURPOSE_AGENT_DB_URL")
    monkeypatch.chdir(tmp_path)
    with SQLCheckpointer() as store:
        assert store.list_runs() == []
    assert (tmp_path / "purpose_agent.db").exists()


@pytest.mark.sqlite
def test_engine_passed_in_is_used_and_not_disposed(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    with SQLCheckpointer(engine) as store:
        store.save_event(ev("r", 1))
    with engine.connect() as conn:  # still usable after the store closed
        assert conn.execute(sa.select(sa.func.count()).select_from(EventRecord)).scalar() == 1
    engine.dispose()


@pytest.mark.sqlite
def test_in_memory_sqlite_url_works_across_threads() -> None:
    with SQLCheckpointer("sqlite://") as store:
        store.save_events([ev("r", 1), ev("r", 2)])
        assert [e.seq for e in store.list_events("r")] == [1, 2]


def _runs_seen_from_another_thread(store: SQLCheckpointer) -> list[str]:
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(store.list_runs()))
    reader.start()
    reader.join()
    return seen


@pytest.mark.sqlite
@pytest.mark.parametrize(
    ("pool", "connect_args", "problem"),
    [
        (sa.pool.QueuePool, {}, "QueuePool opens a connection, and with it a database, per"),
        (sa.pool.NullPool, {}, "NullPool closes its connection after each call"),
        (sa.pool.StaticPool, {}, "check_same_thread"),
    ],
    ids=["queue", "null", "static-same-thread"],
)
def test_an_in_memory_sqlite_engine_other_threads_cannot_share_is_refused(
    pool: type[sa.pool.Pool] | None, connect_args: dict[str, Any], problem: str
) -> None:
    # Such an engine gives another thread (or call) a new, empty database, and a connection
    # refused to another thread is replaced, losing what the store had saved.
    options: dict[str, Any] = {"connect_args": connect_args}
    if pool is not None:
        options["poolclass"] = pool
    engine = sa.create_engine("sqlite://", **options)
    with pytest.raises(InvalidInput) as refused:
        SQLCheckpointer(engine)
    assert problem in str(refused.value)
    assert "StaticPool" in str(refused.value)
    assert "check_same_thread" in str(refused.value)
    engine.dispose()


@pytest.mark.sqlite
def test_an_in_memory_sqlite_engine_with_a_connection_per_thread_serves_its_opener_only() -> None:
    # create_engine("sqlite://") gives each thread a database of its own: the thread that
    # opened the store keeps working on its data, another is told why it cannot share it
    # instead of reading an empty database (SchemaMissing) or writing where no one reads.
    engine = sa.create_engine("sqlite://")
    with SQLCheckpointer(engine) as store:
        state = RunState(run_id="r", seq=2)
        store.save_events([ev("r", 1), ev("r", 2)], snapshot=state)
        refused: list[BaseException] = []

        def elsewhere() -> None:
            try:
                store.save_event(ev("other", 1))
            except BaseException as exc:
                refused.append(exc)

        writer = threading.Thread(target=elsewhere)
        writer.start()
        writer.join()
        assert len(refused) == 1
        assert isinstance(refused[0], InvalidInput)
        assert "SingletonThreadPool gives each thread a database of its own" in str(refused[0])
        assert "check_same_thread" in str(refused[0])
        assert store.list_runs() == ["r"]
        assert store.recover("r") == Recovery(state, [])
        assert [e.seq for e in store.list_events("r")] == [1, 2]
    engine.dispose()


@pytest.mark.sqlite
def test_an_in_memory_sqlite_engine_on_one_shared_connection_serves_every_thread() -> None:
    engine = sa.create_engine(
        "sqlite://", poolclass=sa.pool.StaticPool, connect_args={"check_same_thread": False}
    )
    with SQLCheckpointer(engine) as store:
        store.save_event(ev("r", 1))
        assert _runs_seen_from_another_thread(store) == ["r"]
        assert store.list_events("r") == [ev("r", 1)]
    engine.dispose()


@pytest.mark.sqlite
def test_a_shared_cache_in_memory_sqlite_engine_serves_every_thread() -> None:
    engine = sa.create_engine(
        "sqlite:///file:pa_shared?mode=memory&cache=shared&uri=true",
        poolclass=sa.pool.SingletonThreadPool,
    )
    with SQLCheckpointer(engine) as store:
        store.save_event(ev("r", 1))
        assert _runs_seen_from_another_thread(store) == ["r"]
    engine.dispose()


def test_malformed_url_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="not a database URL"):
        SQLCheckpointer("definitely not a url")
    with pytest.raises(InvalidInput, match="cannot open"):
        SQLCheckpointer("nosuchdb+nodriver://x/y")


@pytest.mark.sqlite
def test_a_path_names_a_sqlite_file_for_both_stores(tmp_path: Path) -> None:
    # Before: AttributeError "'PosixPath' object has no attribute 'render_as_string'".
    path = tmp_path / "runs.db"
    with SQLCheckpointer(path) as store:
        store.save_event(ev("r", 1))
        assert store.url == f"sqlite:///{path}"

    async def read() -> list[PAEvent]:
        async with await AsyncSQLCheckpointer.open(path) as store:
            return await store.list_events("r")

    assert asyncio.run(read()) == [ev("r", 1)]
    assert sqlite3.connect(path).execute("SELECT count(*) FROM pa_events").fetchone() == (1,)


@pytest.mark.parametrize("store", [SQLCheckpointer, AsyncSQLCheckpointer])
@pytest.mark.parametrize(
    "url", [b"postgresql://u:hunter2@h/db", 42, ["postgresql://u:hunter2@h/db"]]
)
def test_a_url_of_another_type_is_invalid_input_naming_the_type(
    store: Callable[[Any], Any], url: Any
) -> None:
    with pytest.raises(InvalidInput, match=f"not {type(url).__name__}$") as refused:
        store(url)
    assert "hunter2" not in str(refused.value)


def test_a_tilde_in_a_sqlite_url_is_explained(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        with pytest.raises(InvalidInput, match="a URL's ~ is not the home directory"):
            SQLCheckpointer("sqlite:///~/runs.db")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("store", [SQLCheckpointer, AsyncSQLCheckpointer])
@pytest.mark.parametrize(
    "url", ["oracle://u@h/db", "mssql+pyodbc://u@h/db", "cockroachdb://u@h/db"]
)
def test_a_database_the_store_has_no_statements_for_is_refused_by_name(
    store: Callable[[str], Any], url: str
) -> None:
    # Before: the driver was looked for, so an uninstalled one read as the whole problem
    # ("No module named 'oracledb'") and an installed one failed later.
    with pytest.raises(InvalidInput) as refused:
        store(url)
    message = str(refused.value)
    assert "No module named" not in message
    assert "postgresql+psycopg://" in message
    if store is SQLCheckpointer:
        assert f"not {url.partition(':')[0].partition('+')[0]};" in message


@pytest.mark.parametrize(
    ("url", "package"),
    [
        ("mariadb+mariadbconnector://u@h/db", "mariadb"),
        ("mysql+mysqldb://u@h/db", "mysqlclient"),
        ("mysql+mysqlconnector://u@h/db", "mysql-connector-python"),
    ],
)
def test_a_missing_driver_is_named_by_the_package_that_installs_it(url: str, package: str) -> None:
    # Before: "pip install mariadbconnector", "pip install mysqldb": packages that do not exist.
    with pytest.raises(InvalidInput) as refused:
        SQLCheckpointer(url)
    assert str(refused.value).endswith(f"install the driver with pip install {package}")


class Elsewhere(SQLiteDialect_pysqlite):
    """A dialect of a database the store has no statements for (SQLite's driver underneath)."""

    name = "elsewhere"


def test_an_engine_of_a_database_the_store_has_no_statements_for_is_invalid_input() -> None:
    sa.dialects.registry.register("elsewhere", __name__, "Elsewhere")
    with pytest.raises(InvalidInput, match="not elsewhere"):
        SQLCheckpointer(sa.create_engine("elsewhere://"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.postgres
def test_unreachable_server_is_store_unavailable_not_a_driver_error() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/test?connect_timeout=2"
    with pytest.raises(StoreUnavailable) as info:
        SQLCheckpointer(url)
    assert "opening the store failed" in str(info.value)
    assert isinstance(info.value.__cause__, sa.exc.DBAPIError)


def _corrupt(
    url: URL | str, table: type[EventRecord] | type[SnapshotRecord], **values: object
) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.update(table).where(table.run_id == "r").values(**values))
    engine.dispose()


@pytest.mark.parametrize(
    ("values", "detail"),
    [
        ({"data": "{not json"}, "not JSON"),
        ({"data": "[1]"}, "not an object"),
        ({"data": '{"x": NaN}'}, "not JSON"),
        ({"kind": "no_such_kind"}, "unknown event kind"),
    ],
)
def test_corrupt_event_row_raises_corrupt_record(
    empty_database: str, values: dict[str, object], detail: str
) -> None:
    with SQLCheckpointer(empty_database) as store:
        store.save_events([ev("r", 1), ev("r", 2)])
        _corrupt(empty_database, EventRecord, **values)
        for read in (
            lambda: store.list_events("r"),
            lambda: list(store.iter_events("r")),
            lambda: store.recover("r"),
        ):
            with pytest.raises(CorruptRecord) as info:
                read()
            assert info.value.run_id == "r"
            assert info.value.seq == 1
            assert detail in str(info.value)
            assert "'r'" in str(info.value)


def test_corrupt_snapshot_raises_corrupt_record(empty_database: str) -> None:
    with SQLCheckpointer(empty_database) as store:
        store.save_snapshot("r", st("r", 4))
        _corrupt(empty_database, SnapshotRecord, state='{"run_id": "r"')
        with pytest.raises(CorruptRecord) as info:
            store.load_latest("r")
        assert info.value.seq == 4
        with pytest.raises(CorruptRecord):
            store.recover("r")


def _kill_connections(url: str) -> int:
    target = sa.make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :db AND pid <> pg_backend_pid()"
            ),
            {"db": target.database},
        ).scalar()
    admin.dispose()
    return int(killed or 0)


@pytest.mark.postgres
def test_killed_connections_cost_no_call_and_lose_nothing(postgres_url: URL) -> None:
    url = postgres_url.render_as_string(hide_password=False)
    with SQLCheckpointer(url) as store:
        store.delete_run("lost")
        store.save_events([ev("lost", 1), ev("lost", 2)])
        assert store.list_events("lost")  # a pooled connection is now idle
        assert _kill_connections(url) >= 1
        store.save_event(ev("lost", 3))  # its connection was dead: retried on a fresh one
        assert _kill_connections(url) >= 1
        assert [e.seq for e in store.list_events("lost")] == [1, 2, 3]
        assert _kill_connections(url) >= 1
        store.save_events([ev("lost", 4)], snapshot=st("lost", 4))
        assert store.recover("lost") is not None
        assert store.load_latest("lost") == st("lost", 4)


@pytest.mark.mariadb
def test_mariadb_keeps_case_and_trailing_spaces_of_run_ids_apart(mariadb_url: URL) -> None:
    with SQLCheckpointer(mariadb_url) as store:
        for run_id in ("Case", "case", "case "):
            store.delete_run(run_id)
            store.save_event(ev(run_id, 1, id=run_id))
        for run_id in ("Case", "case", "case "):
            assert store.list_events(run_id) == [ev(run_id, 1, id=run_id)]


@pytest.mark.sqlite
def test_reading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    import gc

    with SQLCheckpointer(f"sqlite:///{tmp_path / 'gc.db'}") as store:
        store.save_events([ev("r", seq) for seq in range(1, 50)], snapshot=st("r", 10))
        assert gc.isenabled()
        assert len(store.list_events("r")) == 49
        assert store.recover("r") is not None
        assert gc.isenabled()
        gc.disable()
        try:
            assert len(list(store.iter_events("r"))) == 49
            assert not gc.isenabled()  # a caller's choice is kept
        finally:
            gc.enable()


@pytest.mark.sqlite
def test_recover_on_sqlite_reads_snapshot_and_tail_in_key_order_without_sorting(
    tmp_path: Path,
) -> None:
    """The recovery statement merges two primary-key reads; it copies no row into a sort.

    Sorting the whole union (the state's text with it) through a temporary b-tree was a
    third of the statement's time, and ``recover`` was slower than the same read by hand.
    """
    path = tmp_path / "plan.db"
    with SQLCheckpointer(f"sqlite:///{path}") as store:
        store.save_events([ev("r", seq) for seq in range(1, 8)], snapshot=st("r", 4))
        sent: list[tuple[str, Any]] = []

        def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            sent.append((statement, params))

        sa.event.listen(store.engine, "before_cursor_execute", capture)
        try:
            recovery = store.recover("r")
        finally:
            sa.event.remove(store.engine, "before_cursor_execute", capture)
    assert recovery is not None
    assert recovery.state == st("r", 4)
    assert [e.seq for e in recovery.events] == [5, 6, 7]
    reads = [(sql, params) for sql, params in sent if "pa_snapshots" in sql]
    assert len(reads) == 1, sent
    sql, params = reads[0]
    with contextlib.closing(sqlite3.connect(path)) as conn:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert any("pa_events USING INDEX" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


@pytest.mark.postgres
def test_a_failed_pipeline_leaves_no_statement_the_server_never_prepared(
    postgres_url: URL,
) -> None:
    """psycopg counts a statement prepared once it sent its Parse, skipped or not.

    In a pipeline whose first statement failed, the server skips the rest, the Parse of a
    statement reaching psycopg's prepare threshold included. The connection is replaced, or
    its next use of that statement fails with "prepared statement ... does not exist".
    """
    from purpose_agent.db.queries import run_pipelined

    url = postgres_url.render_as_string(hide_password=False)
    query = ("SELECT %(n)s::int + 1", {"n": 1})
    with SQLCheckpointer(url) as store, store.engine.connect() as conn:
        for _ in range(5):  # psycopg prepares a statement at its sixth execution
            conn.connection.driver_connection.execute(*query)  # type: ignore[union-attr]
        with pytest.raises(sa.exc.DataError, match="division by zero"):
            run_pipelined(conn, [("SELECT 1 / %(z)s::int", {"z": 0}), query])
        found = conn.connection.driver_connection.execute(*query).fetchall()  # type: ignore[union-attr]
        assert found == [(2,)]


@pytest.mark.postgres
def test_direct_postgres_sessions_prepare_statements_and_use_generic_plans(
    postgres_url: URL,
) -> None:
    # A direct connection keeps session state, so the store takes what it saves there
    # (behind a pooler it takes none of it: see tests/reliability/test_pgbouncer.py).
    def setting(store: SQLCheckpointer, name: str) -> object:
        with store.engine.connect() as conn:
            return conn.exec_driver_sql(f"SHOW {name}").scalar()

    def prepared(store: SQLCheckpointer) -> int:
        with store.engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar())

    url = postgres_url.render_as_string(hide_password=False)
    with SQLCheckpointer(url) as store:
        assert setting(store, "plan_cache_mode") == "force_generic_plan"
        assert setting(store, "jit") == "off"
        assert setting(store, "synchronous_commit") == "on"
        for seq in range(1, 21):  # psycopg prepares a statement after 5 executions
            store.save_event(PAEvent(run_id="prep", seq=seq, kind=EventKind.CUSTOM))
            assert store.list_events("prep", since_seq=seq - 1)[0].seq == seq
        assert prepared(store) >= 2
        store.delete_run("prep")
    with SQLCheckpointer(url, durability="normal") as store:
        assert setting(store, "synchronous_commit") == "off"


@pytest.mark.postgres
def test_direct_postgres_sessions_do_not_compile_the_stores_statements() -> None:
    # A generic plan expects a read of one run to return a share of the table, so beside a
    # run holding most rows, recover() of a short tail was costed past jit_above_cost and
    # compiled on every call: 5-20 ms each instead of 0.7 (python -m benchmarks, full
    # profile). This database compiles every statement (jit_above_cost = 0), which stands in
    # for that estimate without a million rows.
    with server_url("postgres") as admin, throwaway_database(admin, "pa_jit") as url:
        plain = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            with plain.begin() as conn:
                conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" SET jit = on')
                conn.exec_driver_sql(f'ALTER DATABASE "{url.database}" SET jit_above_cost = 0')
            text = url.render_as_string(hide_password=False)
            with SQLCheckpointer(text) as store:
                store.save_events([ev("tail", seq) for seq in range(1, 11)], st("tail", 5))
                assert [e.seq for e in store.recover("tail").events] == [6, 7, 8, 9, 10]
                recovery = store._queries._recovery.statement.params(run_id="tail")
                sql = str(recovery.compile(store.engine, compile_kwargs={"literal_binds": True}))

                def compiled(engine: sa.Engine) -> bool:
                    with engine.connect() as conn:
                        found = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
                        return "JIT" in found.scalar_one()[0]

                assert not compiled(store.engine)
                with plain.connect() as conn:
                    jit_here = conn.exec_driver_sql("SELECT pg_jit_available()").scalar()
                # Where the server can compile at all, a session of its own does.
                assert compiled(plain) == bool(jit_here)
        finally:
            plain.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+asyncpg://u@localhost/db", "asyncpg is an asyncio driver"),
        ("postgresql+pg8000://u@localhost/db", "pip install pg8000"),
    ],
)
def test_a_driver_the_package_does_not_install_is_named_with_its_own_fix(
    url: str, says: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        SQLCheckpointer(url)
    assert says in str(caught.value)
    assert "purpose-agent[postgres]" not in str(caught.value)


@pytest.mark.sqlite
def test_a_sqlite_file_in_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    with pytest.raises(InvalidInput) as caught:
        SQLCheckpointer(f"sqlite:///{missing / 'runs.db'}")
    assert f"its directory {missing} does not exist" in str(caught.value)
    assert not missing.exists()


@pytest.mark.sqlite
def test_a_closed_store_says_so_instead_of_losing_its_tables() -> None:
    store = SQLCheckpointer("sqlite://")
    store.save_event(PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM))
    store.close()
    for call in (store.list_runs, lambda: store.list_events("r")):
        with pytest.raises(StoreUnavailable, match="the store is closed"):
            call()


@pytest.mark.sqlite
def test_an_engine_passed_in_gets_wal_and_the_busy_timeout(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'given.db'}")
    with engine.connect() as conn:  # a connection pooled before the store sees the engine
        conn.exec_driver_sql("SELECT 1")
    with SQLCheckpointer(engine, busy_timeout=7) as store:
        store.save_event(PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM))
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
    # The engine stays the caller's: still open, and its own transactions still work.
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM pa_events").scalar() == 1
    engine.dispose()


@pytest.mark.sqlite
@pytest.mark.parametrize("column", ["data", "kind", "lane_id", "state"])
def test_bytes_that_are_not_utf8_in_a_sqlite_text_column_are_a_corrupt_record(
    tmp_path: Path, column: str
) -> None:
    url = f"sqlite:///{tmp_path / 'damaged.db'}"
    with SQLCheckpointer(url) as store:
        # The snapshot covers seq 1, so recover() reads the damaged event at seq 2 too.
        store.save_events([ev("hurt", 1), ev("hurt", 2)], snapshot=st("hurt", 1))
        store.save_events([ev("whole", 1)], snapshot=st("whole", 1))
        table, seq = ("pa_snapshots", 1) if column == "state" else ("pa_events", 2)
        where = "run_id = 'hurt'" + ("" if column == "state" else " AND seq = 2")
        with store.engine.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE {table} SET {column} = CAST(X'7bff' AS TEXT) WHERE {where}"
            )
        reads = [lambda: store.recover("hurt")]
        if column == "state":
            reads.append(lambda: store.load_latest("hurt"))
        else:
            reads += [lambda: store.list_events("hurt"), lambda: list(store.iter_events("hurt"))]
        for read in reads:
            with pytest.raises(CorruptRecord) as caught:
                read()
            assert (caught.value.run_id, caught.value.seq) == ("hurt", seq)
            assert "not UTF-8" in str(caught.value)
        recovery = store.recover("whole")  # another run stays readable
        assert recovery is not None
        assert recovery.state == st("whole", 1)


def _as_reader_without_write_access(probe: Callable[[], object]) -> object:
    """Run ``probe`` where the file permissions bind: as ``nobody`` under root."""
    return run_as(NOBODY, probe)


@pytest.mark.sqlite
def test_a_read_only_sqlite_database_reads_and_refuses_writes_saying_why() -> None:
    folder = Path(tempfile.mkdtemp(prefix="pa-read-only-"))
    try:
        path = folder / "archive.db"
        with SQLCheckpointer(f"sqlite:///{path}") as store:
            store.save_events([ev("kept", 1), ev("kept", 2)], snapshot=st("kept", 2))
        # The same listing as root first: the child that drops root cannot import modules
        # from an interpreter under /root, so everything it runs is loaded beforehand.
        assert invoke("runs", "list", "--url", f"sqlite:///{path}", "--json").exit_code == 0
        path.chmod(0o444)
        folder.chmod(0o555)

        def probe() -> object:
            with SQLCheckpointer(f"sqlite:///{path}", migrate=False) as store:
                recovery = store.recover("kept")
                read = (store.list_runs(), [e.seq for e in store.list_events("kept")])
                try:
                    store.save_event(ev("kept", 3))
                except StoreUnavailable as exc:
                    refused = str(exc)
                else:
                    refused = "the write went through"
                listed = invoke("runs", "list", "--url", f"sqlite:///{path}", "--json")
                recovered = recovery is not None and recovery.state == st("kept", 2)
                return read, recovered, refused, listed.exit_code, listed.stdout + listed.stderr

        read, recovered, refused, code, listing = _as_reader_without_write_access(probe)  # type: ignore[misc]
        assert read == (["kept"], [1, 2])
        assert recovered
        assert "read-only for this process" in refused
        assert f"sqlite:///{path}" in refused  # the URL as given, not the read-only URI
        assert code == 0, listing
        assert '"run_id": "kept"' in listing
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


def test_compact_on_a_sqlite_file_the_store_just_migrated_is_committed(tmp_path: Path) -> None:
    """The migration switches its connection to autocommit and back; back must stay autocommit.

    Otherwise pysqlite wraps the next single-statement write on that pooled connection in an
    implicit transaction that nothing commits, and the compaction silently disappears.
    """
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with SQLCheckpointer(url) as store:  # migrates the new file
        state = RunState(run_id="r", seq=3)
        store.save_events(
            [PAEvent(run_id="r", seq=seq, kind=EventKind.CUSTOM) for seq in range(1, 6)],
            snapshot=state,
        )
        assert store.compact("r") == 3
    with SQLCheckpointer(url) as reopened:
        assert [event.seq for event in reopened.list_events("r")] == [4, 5]


def _run_row(store: SQLCheckpointer, run_id: str) -> tuple[object, ...] | None:
    columns = (RunRecord.created_ns, RunRecord.updated_ns, RunRecord.last_seq, RunRecord.group_id)
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(*columns).where(RunRecord.run_id == run_id)).first()
    return tuple(row) if row is not None else None


def _traced(store: SQLCheckpointer) -> list[str]:
    """The statements SQLite runs on the store's connections from now on."""
    statements: list[str] = []

    @sa.event.listens_for(store.engine, "connect")
    def trace(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    store.engine.dispose()  # connections opened before now would not be traced
    return statements


@pytest.mark.sqlite
@pytest.mark.parametrize("returning", [True, False], ids=["upsert-returning", "locking"])
def test_a_sqlite_append_runs_four_statements_where_sqlite_returns_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    with SQLCheckpointer(f"sqlite:///{tmp_path / 'a.db'}") as store:
        # A SQLite older than 3.35 has no RETURNING: SQLAlchemy's dialect says so.
        monkeypatch.setattr(store.engine.dialect, "insert_returning", returning)
        statements = _traced(store)
        counts = []
        for batch in ([new(key="a")], [new(key="b")], [new()], [new(key="a")]):
            statements.clear()
            store.append("r", batch)
            counts.append(len(statements))
        assert [event.seq for event in store.list_events("r")] == [1, 2, 3]
    if returning:
        # A stored key (the last append, a retry) fails the insert and takes the full path.
        assert counts == [4, 4, 4, 4 + 5]
        assert statements[:4] == ["BEGIN IMMEDIATE", *statements[1:3], "ROLLBACK"]
        assert statements[1].startswith("INSERT INTO pa_runs")
        assert "RETURNING last_seq" in statements[1]
        assert statements[2].startswith("INSERT INTO pa_events")
    else:
        assert counts == [7, 7, 6, 5]  # a stored key: no insert, no update


@pytest.mark.parametrize("returning", [True, False], ids=["default", "locking"])
def test_a_refused_append_leaves_the_run_row_as_it_was(
    empty_database: str, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    with SQLCheckpointer(empty_database) as store:
        if not returning:
            monkeypatch.setattr(store.engine.dialect, "insert_returning", False)
            monkeypatch.setattr(store.queries, "_append_in_one", {})
        store.append("r", [new(key="k", n=1), new(n=2)], group="g")
        created = _run_row(store, "r")
        assert created is not None
        # Created, then written once the append held its row (one stamp where the writer
        # stamps, the server's clock read twice on a server).
        assert created[0] <= created[1]  # type: ignore[operator]
        assert created[2:] == (2, "g")
        refused: list[tuple[list[NewEvent], int | None]] = [
            ([new(n=3)], 1),
            ([new(key="j", n=3)], 5),
            ([new(n=3), new(key="k", n="other")], None),
            ([new(n=3), new(key="k", n="other")], 2),
        ]
        for batch, expected in refused:
            with pytest.raises(SequenceConflict):
                store.append("r", batch, expected_last_seq=expected, group="h")
            assert _run_row(store, "r") == created
        with pytest.raises(SequenceConflict):
            store.append("fresh", [new()], expected_last_seq=3, group="h")
        assert _run_row(store, "fresh") is None
        assert store.list_events("r") == [new(n=1).at("r", 1), new(n=2).at("r", 2)]

        store.append("r", [new(key="k", n=1), new(n=3)], expected_last_seq=2)
        kept = _run_row(store, "r")
        assert kept is not None
        assert kept[0] == created[0]
        assert kept[1] > created[1]  # type: ignore[operator]
        assert kept[2:] == (3, "g")  # no group given: the run keeps its own
        store.append("r", [new(n=4)], group="h")
        assert _run_row(store, "r")[2:] == (4, "h")  # type: ignore[index]
        store.save_snapshot("r", st("r", 9))
        store.compact("r")
        [after] = store.append("r", [new(n=10)], expected_last_seq=9)
        assert after.seq == 10
        assert _run_row(store, "r")[2:] == (10, "h")  # type: ignore[index]


def _step(run_id: str, number: int) -> tuple[list[PAEvent], RunState]:
    events = [
        PAEvent(run_id=run_id, seq=seq, kind=EventKind.CUSTOM, ts=1.0, data={"n": seq})
        for seq in range(number * 3 - 2, number * 3 + 1)
    ]
    return events, RunState(run_id=run_id, seq=number * 3, data={"step": number})


def test_threads_outnumbering_the_pools_connections_each_get_their_turn(
    empty_database: str,
) -> None:
    """More threads than the pool holds connections, each saving steps back to back: none starves.

    A thread that gave a connection back and asked again at once usually got it back before
    any thread waiting on the pool woke up: the threads beyond the pool's connections (8 + 16
    on a server) saved a step or none while the others saved hundreds, and in longer runs
    failed with the pool's timeout (``QueuePool limit of size 8 overflow 16 reached``).
    """
    threads, lead = 48, 30  # more threads than any backend's pool holds connections (at most 40)
    done = [0] * threads
    failures: list[BaseException] = []
    finished = threading.Event()
    with SQLCheckpointer(empty_database) as store:
        start = threading.Barrier(threads)

        def run(index: int) -> None:
            try:
                while not finished.is_set():
                    events, state = _step(f"t-{index}", done[index] + 1)
                    store.save_events(events, snapshot=state)
                    done[index] += 1
                    if done[index] == 1:
                        start.wait()  # the pool's connections are open: all race from here
                    if done[index] == lead:
                        # What each thread had saved when the first reached ``lead``.
                        reached.extend(done)
                        finished.set()
            except BaseException as exc:  # reported below, with the thread's index
                failures.append(exc)
                finished.set()

        reached: list[int] = []
        workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert not any(worker.is_alive() for worker in workers)
        assert not failures, failures
        for index in range(threads):
            assert store.last_seq(f"t-{index}") == done[index] * 3
    # Taking turns, each thread is a few steps behind the first to reach ``lead`` (more on a
    # server, where threads that open the pool's overflow connections again after the barrier
    # lose the turns taken meanwhile). Starved threads had saved their first step and no more.
    # The bound leaves room for the machine: with `tox p` running another suite beside this
    # one, one thread of 48 had 5 steps when the first reached 30, and the median was 24.
    assert min(reached[:threads]) >= lead // 10, str(sorted(reached[:threads]))
    assert sorted(reached[:threads])[threads // 2] >= lead // 2, str(sorted(reached[:threads]))


def test_bursts_of_threads_reuse_the_pools_connections_instead_of_reopening_them(
    empty_database: str,
) -> None:
    """Threads saving in bursts, idle in between, do not close and reopen connections.

    The pool closed every connection beyond its size the moment it came back while the pool's
    size of others were idle, so each burst opened them again.
    """
    with SQLCheckpointer(empty_database) as store:
        opened: list[object] = []
        sa.event.listen(store.engine, "connect", lambda *_: opened.append(None))
        pool: Any = store.engine.pool
        most = pool.size() + pool._max_overflow
        threads = most + 8
        for burst in range(1, 5):
            start = threading.Barrier(threads)

            def run(index: int, burst: int = burst, start: threading.Barrier = start) -> None:
                start.wait()
                store.save_events(*_step(f"b-{index}", burst))

            workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            time.sleep(0.02)
        for index in range(threads):
            assert store.last_seq(f"b-{index}") == 12
    assert len(opened) <= most


def test_connections_beyond_the_pools_size_linger_then_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idle connections beyond ``pool_size`` stay for ``linger`` s, then go, and can come again.

    On a clock of the test's own: a busy machine's pause between two closes must not count.
    """
    import types

    from purpose_agent.db import pool_queue, thread_pool

    clock = [1000.0]
    monkeypatch.setattr(pool_queue, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    made: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:
        made.append(sqlite3.connect(":memory:", check_same_thread=False))
        return made[-1]

    pool = thread_pool.ThreadQueuePool(connect, pool_size=2, max_overflow=4, timeout=0.05)
    pool.linger = 0.2
    held = [pool.connect() for _ in range(6)]
    for connection in held:
        connection.close()
    assert (pool.checkedin(), len(made)) == (6, 6)  # all six kept idle
    held = [pool.connect() for _ in range(6)]
    assert len(made) == 6  # and taken again: nothing reopened
    for connection in held:
        connection.close()
    clock[0] += 0.3
    pool.connect().close()  # a connection coming back trims the ones idle too long
    assert (pool.checkedin(), pool.checkedout(), pool.overflow()) == (2, 0, 0)
    closed = 0
    for connection in made:
        try:
            connection.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            closed += 1
    assert closed == 4
    held = [pool.connect() for _ in range(6)]  # the overflow is counted right: four can open
    assert len(made) == 10
    with pytest.raises(sa.exc.TimeoutError):
        pool.connect()
    for connection in held:
        connection.close()

    monkeypatch.setattr(pool_queue, "time", time)  # the real clock again
    again = pool.recreate()  # what Engine.dispose() puts in its place keeps the setting
    assert again.linger == 0.2  # type: ignore[attr-defined]
    again.linger = 0  # type: ignore[attr-defined]
    held = [again.connect() for _ in range(6)]
    for connection in held:
        connection.close()
    assert again.checkedin() == 2  # closed as they came back, as SQLAlchemy's pool does


def test_a_connection_handed_to_a_thread_as_its_wait_ran_out_is_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread whose wait times out just as a connection is handed to it takes the connection.

    Lost, the pool would count it checked out for ever, one connection fewer each time. A wait
    that times out with nothing handed over leaves no place in the queue, and the pool reports
    it as its own timeout (which the store translates).
    """
    from sqlalchemy.util.queue import Empty

    from purpose_agent.db import thread_pool

    queue = thread_pool.ThreadHandOverQueue(maxsize=1)
    connection: Any = object()

    class LateWaiter(thread_pool._Waiter):
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            baton = self.baton

            class Late:
                def acquire(self, timeout: float = -1) -> bool:
                    queue.put_nowait(connection)  # handed over just as the wait runs out
                    return False

                def release(self) -> None:
                    baton.release()

            self.baton = Late()  # type: ignore[assignment]

    monkeypatch.setattr(thread_pool, "_Waiter", LateWaiter)
    assert queue.get(True, 0.01) is connection
    assert queue.qsize() == 0
    assert not queue._waiting
    monkeypatch.undo()

    with pytest.raises(Empty):
        queue.get(True, 0.01)
    assert not queue._waiting
    queue.put_nowait(connection)  # nobody waits: it stays idle
    assert queue.get_nowait() is connection

    pool = thread_pool.ThreadQueuePool(lambda: sqlite3.connect(":memory:"), 1, 0, timeout=0.05)
    held = pool.connect()
    with pytest.raises(sa.exc.TimeoutError, match="QueuePool limit"):
        pool.connect()
    held.close()
    pool.connect().close()  # the timed-out wait took no connection with it
    pool.dispose()


def test_stores_share_statements_compiled_for_the_same_dialect(
    empty_database: str, tmp_path: Path
) -> None:
    """A store opens without compiling again what another store of the process compiled."""
    with SQLCheckpointer(empty_database) as first, SQLCheckpointer(empty_database) as second:
        shared = first._queries._by_key._cursor
        assert second._queries._by_key._cursor is shared
        first.save_event(ev("shared", 1))
        assert second.list_events("shared") == [ev("shared", 1)]
        assert second.event_by_key("shared", "missing") is None
    if not empty_database.startswith("sqlite"):
        with SQLCheckpointer(f"sqlite:///{tmp_path / 'other.db'}") as other:
            other_sql = other._queries._by_key._cursor
            assert other_sql is not shared
            assert other_sql.sql != shared.sql  # each dialect's own parameter style


def _open_and_close(url: URL, *, asynchronous: bool) -> None:
    """Open a store on ``url`` (the sync one, or the async one in a loop of its own), close it."""

    async def open_async() -> None:
        store = await AsyncSQLCheckpointer.open(url)
        await store.close()

    if asynchronous:
        asyncio.run(open_async())
    else:
        SQLCheckpointer(url).close()


@pytest.mark.mariadb
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_url_option_the_driver_does_not_take_is_invalid_input_naming_it(
    mariadb_url: URL, asynchronous: bool
) -> None:
    """PyMySQL and aiomysql take URL options as keyword arguments: a typo was a TypeError."""
    url = mariadb_url.update_query_dict({"ssl_disable": "true"})

    with pytest.raises(InvalidInput) as raised:
        _open_and_close(url, asynchronous=asynchronous)
    message = str(raised.value)
    assert "ssl_disable" in message, message
    shown = url.render_as_string(hide_password=True)
    assert message.startswith(f"cannot connect to {shown}: "), message
    with SQLCheckpointer(mariadb_url.update_query_dict({"ssl_disabled": "true"})) as store:
        store.save_event(ev("url-options", 1))  # an option the driver takes still works
        assert store.list_events("url-options") == [ev("url-options", 1)]
        store.delete_run("url-options")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("backend", "option"),
    [
        pytest.param("sqlite", "timeout", marks=pytest.mark.sqlite),
        pytest.param("mariadb", "connect_timeout", marks=pytest.mark.mariadb),
    ],
)
def test_a_url_option_with_a_malformed_value_is_invalid_input(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, option: str, asynchronous: bool
) -> None:
    """The dialect reads numbers from the URL: ``?timeout=ten`` was a bare ``ValueError``."""
    if backend == "sqlite":
        base = sa.make_url(f"sqlite:///{tmp_path / 'options.db'}")
    else:
        base = request.getfixturevalue("mariadb_url")
    url = base.update_query_dict({option: "ten"})

    with pytest.raises(InvalidInput) as raised:
        _open_and_close(url, asynchronous=asynchronous)
    message = str(raised.value)
    shown = url.render_as_string(hide_password=True)
    assert message.startswith(f"cannot open {shown}: an option of the URL is refused"), message
    assert "'ten'" in message, message


def test_an_append_racing_delete_run_goes_with_the_run_or_starts_it_afresh(
    empty_database: str,
) -> None:
    """The delete is held just after it removed the run's events, while an append arrives.

    The append must either wait for the delete or have gone before it: never commit between
    the delete's statements, which left its event behind with no run row, under a
    ``last_seq`` that later appends reused (each then failed on the taken seq).
    """
    deleting = threading.get_ident
    events_gone, go_on = threading.Event(), threading.Event()
    deleter: list[int] = []

    with SQLCheckpointer(empty_database) as store:
        store.append("race", [new() for _ in range(3)])

        def hold(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if deleting() in deleter and statement.lstrip().upper().startswith(
                "DELETE FROM PA_EVENTS"
            ):
                events_gone.set()
                assert go_on.wait(30)

        sa.event.listen(store.engine, "after_cursor_execute", hold)

        def delete() -> None:
            deleter.append(deleting())
            store.delete_run("race")

        remover = threading.Thread(target=delete)
        remover.start()
        assert events_gone.wait(30)
        appended: list[PAEvent] = []
        appender = threading.Thread(
            target=lambda: appended.extend(store.append("race", [new(late=True)]))
        )
        appender.start()
        appender.join(1.0)  # an append that does not wait for the delete is done by now
        go_on.set()
        remover.join(30)
        appender.join(30)
        sa.event.remove(store.engine, "after_cursor_execute", hold)

        stored = store.list_events("race")
        if appended:
            # It waited, then started the run afresh (or went first and was deleted with it).
            assert stored in ([], appended)
        assert ("race" in store.list_runs()) == bool(stored)
        later = [store.append("race", [new(n=n)])[0].seq for n in range(3)]
        assert later == [len(stored) + 1, len(stored) + 2, len(stored) + 3]


@pytest.mark.parametrize("damage", ["behind", "missing"])
@pytest.mark.parametrize("grouped", [False, True], ids=["alone", "grouped"])
def test_an_append_to_a_run_whose_row_is_behind_its_events_takes_the_seqs_after_them(
    empty_database: str, damage: str, grouped: bool
) -> None:
    """A run row behind its events (a restore of the events alone, a manual fix) is caught up.

    Before, every append to such a run took a seq already stored and failed, for good, with
    a driver's duplicate-key error reported as the database being unavailable.
    """
    options: dict[str, Any] = {"group_commit": GroupCommitPolicy()} if grouped else {}
    with SQLCheckpointer(empty_database, **options) as store:
        store.append("lagging", [new(n=n) for n in range(3)])
        with store.engine.begin() as conn:
            runs = RunRecord.__table__
            where = runs.c.run_id == "lagging"
            if damage == "behind":
                conn.execute(sa.update(runs).where(where).values(last_seq=1))
            else:
                conn.execute(sa.delete(runs).where(where))
        assert [e.seq for e in store.append("lagging", [new(n=3), new(n=4)])] == [4, 5]
        assert [e.data for e in store.list_events("lagging")] == [{"n": n} for n in range(5)]
        assert store.last_seq("lagging") == 5
        assert "lagging" in store.list_runs()
        assert store.append("lagging", [new(n=5)], expected_last_seq=5)[0].seq == 6


@pytest.mark.parametrize("handed", [False, True], ids=["waiting", "as-handed-over"])
def test_a_thread_interrupted_while_it_waits_for_a_connection_leaks_none(
    monkeypatch: pytest.MonkeyPatch, handed: bool
) -> None:
    """Ctrl-C in a thread waiting for a pooled connection, before or as one is handed to it.

    Left in the queue, the interrupted wait was handed the next connection given back, which
    the pool then counted checked out for good: after as many interrupts as the pool holds
    connections, every call waited 30 s and failed.
    """
    from purpose_agent.db import thread_pool

    queue = thread_pool.ThreadHandOverQueue(maxsize=1)
    connection: Any = object()

    class Interrupted(thread_pool._Waiter):
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            baton = self.baton

            class Baton:
                def acquire(self, timeout: float = -1) -> bool:
                    if handed:
                        queue.put_nowait(connection)
                    raise KeyboardInterrupt

                def release(self) -> None:
                    baton.release()

            self.baton = Baton()  # type: ignore[assignment]

    monkeypatch.setattr(thread_pool, "_Waiter", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        queue.get(True, 5)
    monkeypatch.undo()
    assert not queue._waiting
    if handed:
        assert queue.get(False) is connection  # back among the idle ones
    queue.put_nowait(connection)
    assert queue.get(False) is connection  # not given to the interrupted wait


@pytest.mark.postgres
def test_runs_written_together_are_ordered_alike_whatever_the_databases_collation(
    postgres_url: URL,
) -> None:
    """``list_runs``, ``prune`` and ``delete_runs(keep_newest=...)`` agree on the newest.

    Runs written in one transaction share their write stamp and are ordered by id. On a
    database whose collation orders by letters (ICU ``en-US``: ``a`` before ``B``), the
    listing and prune ordered them so, ``delete_runs`` by code point: ``keep_newest=1``
    deleted the run the listing called the newest.
    """
    from purpose_agent.ops.prune import delete_selected, prune, selection

    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    name = f"pa_icu_{os.getpid()}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.exec_driver_sql(
            f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
            "ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        )
    url = postgres_url.set(database=name).render_as_string(hide_password=False)
    together = [ev("B", 1), ev("B", 2), ev("a", 1), ev("c", 1)]
    try:
        for remove in ("delete_runs", "prune", "delete_selected"):
            with SQLCheckpointer(url) as store:
                store.delete_runs(prefix="")
                store.save_events(together)
                listed = store.list_runs()
                assert listed == sorted(listed)  # by code point: "B" < "a" < "c"
                assert store.list_runs(limit=1, offset=1) == [listed[1]]
                if remove == "delete_runs":
                    store.delete_runs(keep_newest=1)
                elif remove == "prune":
                    prune(store, keep_newest=1)
                else:
                    delete_selected(store, selection(keep_newest=1))
                assert store.list_runs() == listed[:1], remove
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_appends_racing_delete_run_in_a_loop_all_succeed_and_leave_a_whole_run(
    empty_database: str,
) -> None:
    """Four threads append to one run while a fifth deletes it over and over.

    Each append goes with a delete or starts the run afresh. Before, an append failed with a
    bare ``IndexError`` when a delete committed between making the run's row and locking it,
    and a delete that began while an append was creating the run (no row to lock yet) left
    that append's events behind with no row: later appends failed on the taken seqs.
    """
    failures: list[BaseException] = []
    stop = threading.Event()

    with SQLCheckpointer(empty_database) as store:

        def append() -> None:
            while not stop.is_set():
                try:
                    store.append("contested", [new(), new()])
                except BaseException as exc:  # any failure is the finding
                    failures.append(exc)
                    return

        def delete() -> None:
            while not stop.is_set():
                try:
                    store.delete_run("contested")
                except BaseException as exc:
                    failures.append(exc)
                    return

        threads = [threading.Thread(target=append) for _ in range(4)]
        threads.append(threading.Thread(target=delete))
        for thread in threads:
            thread.start()
        time.sleep(3)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert failures == []
        seqs = [event.seq for event in store.list_events("contested")]
        assert seqs == list(range(1, len(seqs) + 1))
        assert store.last_seq("contested") == len(seqs)
        assert ("contested" in store.list_runs()) == bool(seqs)
        assert store.append("contested", [new()])[0].seq == len(seqs) + 1


@pytest.mark.parametrize("watched", [False, True], ids=["fast", "listened"])
@pytest.mark.parametrize("grouped", [False, True], ids=["plain", "grouped"])
def test_an_in_memory_store_is_thread_safe(watched: bool, grouped: bool) -> None:
    """Its one connection was used by every thread at once: transactions interleaved ("cannot
    start a transaction within a transaction"), and one thread's rollback ended another's, so
    a commit failed for writes that were stored."""
    policy = GroupCommitPolicy(max_batch=8) if grouped else False
    with SQLCheckpointer("sqlite://", group_commit=policy) as store:
        if watched:
            sa.event.listen(store.engine, "before_cursor_execute", lambda *_: None)
        errors: list[BaseException] = []
        start = threading.Barrier(6)

        def work(n: int) -> None:
            try:
                start.wait()
                for step in range(40):
                    store.append(f"t{n}", [new(step=step)], expected_last_seq=step)
                    assert len(store.list_events(f"t{n}")) == step + 1
                    store.save_snapshot(f"t{n}", st(f"t{n}", step + 1))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for n in range(6):
            assert [e.data["step"] for e in store.list_events(f"t{n}")] == list(range(40))
            state = store.load_latest(f"t{n}")
            assert state is not None
            assert state.seq == 40
        assert sorted(store.list_runs()) == [f"t{n}" for n in range(6)]


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_deleting_runs_by_age_waits_for_no_writer_of_a_newer_run(backend: str) -> None:
    """``delete_runs(older_than=...)`` locked every run row of the store (the age was applied
    after the ``SELECT ... FOR UPDATE``), so every live writer waited for the whole delete:
    at 100,000 runs an append to a run the delete did not select waited 0.5-0.9 s."""
    with (
        server_url(backend) as admin,
        throwaway_database(admin, "pa_age") as url,
        SQLCheckpointer(url) as store,
    ):
        # Enough runs that MariaDB reads them through the index on the write time, as on a
        # store where this matters (on a few rows it scans them all, locks included).
        runs = [f"r{n:04}" for n in range(2_000)]
        store.save_events([ev(run_id, 1) for run_id in runs])
        old = time.time_ns() - 2 * 86_400 * 10**9
        with store.writing("ageing runs") as conn:
            conn.execute(
                sa.update(RunRecord).where(RunRecord.run_id < "r1000").values(updated_ns=old)
            )
        holder = sa.create_engine(url, poolclass=sa.pool.NullPool)
        deleted: list[list[str]] = []
        try:
            with holder.connect() as conn:
                # A writer of a recent run, inside its transaction, holding the run's row.
                hold_run(conn, runs[-1])
                worker = threading.Thread(
                    target=lambda: deleted.append(store.delete_runs(older_than=timedelta(days=1)))
                )
                worker.start()
                worker.join(30)
                finished = not worker.is_alive()
                conn.rollback()
            worker.join(60)
        finally:
            holder.dispose()
        assert finished, "the delete waited for the row of a run it does not delete"
        assert [sorted(ids) for ids in deleted] == [runs[:1000]]
        assert sorted(store.list_runs()) == runs[1000:]


@pytest.mark.parametrize(
    "server",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ],
)
def test_a_write_that_waited_for_a_lock_never_moves_a_run_behind_later_writes(
    server: str,
) -> None:
    with server_url(server) as admin, throwaway_database(admin, "pa_written") as made:
        url = made.render_as_string(hide_password=False)
        holder = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with SQLCheckpointer(url) as store:
            store.save_event(ev("a", 1))
            saved: list[BaseException | None] = []

            def save_across_runs() -> None:
                try:
                    store.save_events([ev("a", 2), ev("b", 100)])
                    saved.append(None)
                except BaseException as exc:
                    saved.append(exc)

            with holder.connect() as conn:
                # Another writer of run a holds its row: the step across a and b waits for it.
                hold_run(conn, "a")
                worker = threading.Thread(target=save_across_runs)
                worker.start()
                wait_for_a_lock_wait(holder, made.database, "the step")
                store.save_event(ev("c", 1))
                store.append("b", [new()])  # b is written after c
                conn.rollback()
            worker.join(60)
        holder.dispose()
        assert saved == [None]
        with SQLCheckpointer(url) as store:
            # b's last write came after every other write began and ended.
            assert store.list_runs()[0] == "b"
            assert store.delete_runs(keep_newest=1) == ["a", "c"]
            assert [event.seq for event in store.list_events("b")] == [1, 100]


@pytest.mark.mariadb
def test_a_save_and_an_append_of_one_run_lock_it_in_one_order() -> None:
    with server_url("mariadb") as admin, throwaway_database(admin, "pa_order") as made:
        url = made.render_as_string(hide_password=False)
        holder = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with SQLCheckpointer(url) as store:
            wrote_first, go_on = threading.Event(), threading.Event()
            deadlocks: list[BaseException] = []
            outcomes: dict[str, object] = {}

            def after_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                # The save stops after its first write, its locks held, until the append waits.
                if (
                    threading.current_thread().name == "save"
                    and not wrote_first.is_set()
                    and statement.lstrip().upper().startswith("INSERT")
                ):
                    wrote_first.set()
                    go_on.wait(60)

            def on_error(context: Any) -> None:
                if getattr(context.original_exception, "args", (None,))[0] == 1213:
                    deadlocks.append(context.original_exception)

            sa.event.listen(store.engine, "after_cursor_execute", after_execute)
            sa.event.listen(store.engine, "handle_error", on_error)

            def call(name: str, work: Callable[[], object]) -> threading.Thread:
                def run() -> None:
                    try:
                        outcomes[name] = work()
                    except BaseException as exc:
                        outcomes[name] = exc

                thread = threading.Thread(target=run, name=name)
                thread.start()
                return thread

            save = call("save", lambda: store.save_events([ev("r", 1), ev("r", 2)]))
            assert wrote_first.wait(60)
            append = call("append", lambda: [e.seq for e in store.append("r", [new()])])
            wait_for_a_lock_wait(holder, made.database, "the append")
            go_on.set()
            save.join(60)
            append.join(60)
            assert outcomes == {"save": None, "append": [3]}
            assert deadlocks == []
            assert [event.seq for event in store.list_events("r")] == [1, 2, 3]
        holder.dispose()


def _write_and_read_in_child(store: SQLCheckpointer, child: int, close: bool) -> None:
    run_id = f"child-{child}"
    for seq in range(1, 51):
        store.save_events([ev(run_id, seq)])
        # Each read must see the child's own write: on a socket shared with the parent it
        # read the parent's answers, or none.
        assert store.list_events(run_id, since_seq=seq - 1) == [ev(run_id, seq)]
    if close:
        store.close()  # the child's close, not the parent's sessions


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_forked_children_write_and_read_on_connections_of_their_own(empty_database: str) -> None:
    """gunicorn's --preload, multiprocessing's fork: children used the parent's pooled
    connections, whose sockets the parent kept using, and a child's close() ended them."""
    with SQLCheckpointer(empty_database) as store:
        store.save_events([ev("parent", 1)])
        assert store.list_events("parent") == [ev("parent", 1)]  # an idle pooled connection
        fork = multiprocessing.get_context("fork")
        children = [
            fork.Process(target=_write_and_read_in_child, args=(store, child, child % 2 == 0))
            for child in range(3)
        ]
        for child in children:
            child.start()
        for seq in range(2, 101):
            store.save_events([ev("parent", seq)])
            assert store.list_events("parent", since_seq=seq - 1) == [ev("parent", seq)]
        for child in children:
            child.join(60)
        assert [child.exitcode for child in children] == [0, 0, 0]
        store.save_events([ev("parent", 101)])
        assert store.list_events("parent") == [ev("parent", seq) for seq in range(1, 102)]
        for child in range(3):
            assert len(store.list_events(f"child-{child}")) == 50
        assert store.engine.pool.checkedout() == 0 or store.engine.dialect.name == "sqlite"
