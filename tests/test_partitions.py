"""The partitioned layout of the event log on Postgres: made, undone, kept across revisions.

``pa_events`` hash-partitioned by run id is opt-in (``purpose-agent db partition``, or
``alembic -x events_partitions=N``). These tests check that the change keeps every row and the
key index, that the revisions and the store work on either layout, that the statements on one
run touch one partition, and that a store left open across the change goes on working. The
shared behaviour suite runs on this layout too (the ``postgres-partitioned`` backend).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from psycopg import sql as pgsql

from purpose_agent import InvalidInput, NewEvent, RunState, SequenceConflict, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.db.models import Base
from purpose_agent.db.partitions import events_layout, partition_events
from purpose_agent.testing.samples import ev
from tests.servers import server_url, throwaway_database
from tests.test_cli_support import invoke, run_python_module
from tests.test_rolling_deploys import writes_pass_a_waiting_change

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parent.parent
PARTITION = re.compile(r"\bpa_events_p\d+\b")


@pytest.fixture
def url() -> Iterator[str]:
    """A throwaway Postgres database, empty."""
    with server_url("postgres") as admin, throwaway_database(admin, "pa_part") as made:
        yield made.render_as_string(hide_password=False)


@pytest.fixture
def engine(url: str) -> Iterator[sa.Engine]:
    made = sa.create_engine(url, poolclass=sa.pool.NullPool)
    yield made
    made.dispose()


def _layout(engine: sa.Engine) -> tuple[int, str | None]:
    with engine.connect() as conn:
        found = events_layout(conn)
    assert found is not None
    return found.partitions, found.key


def _rows(engine: sa.Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(row) for row in conn.execute(sa.text("SELECT * FROM pa_events ORDER BY 1, 2"))
        ]


def _fill(url: str) -> None:
    """Runs with keys, groups, snapshots and payloads a copy could damage."""
    with SQLCheckpointer(url) as store:
        for index in range(12):
            run_id = f"run-{index}"
            store.append(
                run_id,
                [
                    NewEvent(kind="step_started", key=f"k{index}", data={"x": -0.0, "n": 2**70}),
                    NewEvent(kind="tool_result", data={"text": "nul\x00 and é"}),
                ],
                group="g" if index % 2 else None,
            )
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=1, data={"i": index}))


def _rows_per_partition(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT tableoid::regclass::text, count(*) FROM pa_events GROUP BY 1")
        )
        return {name: int(count) for name, count in found}


def test_partitioning_keeps_every_row_and_spreads_runs_over_the_partitions(
    url: str, engine: sa.Engine
) -> None:
    _fill(url)
    before = _rows(engine)
    changed = partition_events(engine, 4)
    assert (changed[0].partitions, changed[1].partitions) == (0, 4)
    assert _layout(engine) == (4, "HASH (run_id)")
    assert _rows(engine) == before
    spread = _rows_per_partition(engine)
    assert set(spread) <= {f"pa_events_p{i}" for i in range(4)}
    assert len(spread) > 1, spread
    with engine.connect() as conn:
        names = set(
            conn.execute(
                sa.text(
                    "SELECT relname FROM pg_class WHERE relname IN"
                    " ('pk_pa_events', 'uq_pa_events_run_id_key') AND relkind = 'I'"
                )
            ).scalars()
        )
    assert names == {"pk_pa_events", "uq_pa_events_run_id_key"}


def test_the_key_and_the_position_stay_unique_per_run_on_the_partitioned_table(
    url: str, engine: sa.Engine
) -> None:
    _fill(url)
    partition_events(engine, 4)
    with SQLCheckpointer(url) as store:
        # A key stored with other content conflicts; with the same content it is a no-op.
        with pytest.raises(SequenceConflict):
            store.append("run-3", [NewEvent(kind="step_finished", key="k3")])
        again = store.append(
            "run-3", [NewEvent(kind="step_started", key="k3", data={"x": -0.0, "n": 2**70})]
        )
        assert again[0].seq == 1
        with pytest.raises(SequenceConflict):
            store.save_event(ev("run-3", 2, data={"other": True}))
        # The same key in another run is another event.
        store.append("run-4", [NewEvent(kind="step_finished", key="k3")])
        assert store.event_by_key("run-4", "k3") is not None
    with engine.connect() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(
            sa.text(
                "INSERT INTO pa_events (run_id, seq, kind, ts, lane_id, data, key)"
                " VALUES ('run-5', 99, 'step_started', 0, 'main', '{}', 'k5')"
            )
        )


def test_unpartitioning_gives_back_the_layout_the_models_describe(
    url: str, engine: sa.Engine
) -> None:
    _fill(url)
    before = _rows(engine)
    partition_events(engine, 3)
    partition_events(engine, 5)  # from one partitioned layout to another
    assert _layout(engine) == (5, "HASH (run_id)")
    after = partition_events(engine, 0)
    assert after[1].partitions == 0
    assert after[1].key is None
    assert _rows(engine) == before
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": migrate.VERSION_TABLE,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        assert compare_metadata(context, Base.metadata) == []
        leftovers = conn.execute(
            sa.text("SELECT relname FROM pg_class WHERE relname LIKE 'pa\\_events\\_%'")
        ).scalars()
        assert [name for name in leftovers if PARTITION.match(name) or "next" in name] == []


def test_asking_for_the_layout_a_table_has_changes_nothing(url: str, engine: sa.Engine) -> None:
    SQLCheckpointer(url).close()
    partition_events(engine, 4)
    with engine.connect() as conn:
        oid = conn.execute(sa.text("SELECT 'pa_events'::regclass::oid")).scalar()
    before, after = partition_events(engine, 4)
    assert before == after
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 'pa_events'::regclass::oid")).scalar() == oid


def test_privileges_on_the_table_survive_the_change(url: str, engine: sa.Engine) -> None:
    SQLCheckpointer(url).close()
    with engine.begin() as conn:
        conn.execute(sa.text("GRANT SELECT, INSERT ON pa_events TO PUBLIC"))
    granted = "SELECT has_table_privilege('public', 'pa_events', :what)"
    for partitions in (4, 0):
        partition_events(engine, partitions)
        with engine.connect() as conn:
            for what, expected in (("SELECT", True), ("INSERT", True), ("DELETE", False)):
                assert conn.execute(sa.text(granted), {"what": what}).scalar() is expected


def test_refused_where_there_is_nothing_to_partition(
    url: str, engine: sa.Engine, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="db upgrade"):
        partition_events(engine, 4)
    sqlite = sa.create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(InvalidInput, match="PostgreSQL only"):
        partition_events(sqlite, 4)
    sqlite.dispose()
    SQLCheckpointer(url).close()
    for wrong in (-1, 1025):
        with pytest.raises(InvalidInput, match="between"):
            partition_events(engine, wrong)


def test_a_failed_change_leaves_the_old_table_as_it_was(url: str, engine: sa.Engine) -> None:
    _fill(url)
    before = _rows(engine)
    with engine.begin() as conn:
        # A unique index without run_id cannot exist on a table partitioned by run_id.
        conn.execute(
            sa.text("CREATE UNIQUE INDEX ix_by_kind_seq ON pa_events (kind, seq, lane_id, ts)")
        )
    with pytest.raises(InvalidInput, match="partitioning columns"):
        partition_events(engine, 4)
    assert _layout(engine) == (0, None)
    assert _rows(engine) == before
    with engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_by_kind_seq"))


@pytest.mark.parametrize(
    ("made", "named"),
    [
        (
            "CREATE FUNCTION pa_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RETURN NEW; END $$; CREATE TRIGGER pa_events_audit AFTER INSERT ON "
            "pa_events FOR EACH ROW EXECUTE FUNCTION pa_audit()",
            "triggers ['pa_events_audit']",
        ),
        (
            "ALTER TABLE pa_events ENABLE ROW LEVEL SECURITY; CREATE POLICY only_a ON pa_events "
            "USING (run_id = 'a')",
            "row-level security policies ['(row-level security enabled)', 'only_a']",
        ),
        ("CREATE PUBLICATION pa_pub FOR TABLE pa_events", "publications ['pa_pub']"),
        ("ALTER TABLE pa_events SET (fillfactor = 90)", "storage options ['fillfactor=90']"),
        ("CREATE VIEW pa_recent AS SELECT * FROM pa_events", "views ['pa_recent']"),
        ("CREATE TABLE pa_events_p1 (n int)", "tables ['pa_events_p1'] are not partitions"),
    ],
    ids=["trigger", "row-security", "publication", "storage", "view", "taken-name"],
)
def test_a_change_that_would_drop_what_the_table_has_is_refused(
    url: str, engine: sa.Engine, made: str, named: str
) -> None:
    """The rebuilt table copies columns, constraints, indexes, owner and grants, nothing else.

    Before, triggers, row-level security (every role then read every row), publications and
    storage options went without a word, and a view or a detached partition's name failed the
    change after the whole copy with a driver's error.
    """
    _fill(url)
    before = _rows(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(made)
    try:
        with pytest.raises(InvalidInput) as refused:
            partition_events(engine, 4)
        assert named in str(refused.value)
        assert _layout(engine) == (0, None)
        assert _rows(engine) == before
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP PUBLICATION IF EXISTS pa_pub")
            conn.exec_driver_sql("DROP VIEW IF EXISTS pa_recent")
            conn.exec_driver_sql("DROP TABLE IF EXISTS pa_events_p1")


def test_a_partition_detached_by_hand_is_named_and_the_change_refused(
    url: str, engine: sa.Engine
) -> None:
    _fill(url)
    partition_events(engine, 4)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE pa_events DETACH PARTITION pa_events_p3")
    with engine.connect() as conn:
        found = events_layout(conn)
    assert found is not None
    assert (found.partitions, found.missing) == (4, (3,))
    assert "with none for remainder 3" in found.describe()
    for count in (3, 4, 0):  # before, 3 reported "already 3 partitions"; 4 and 0 copied
        with pytest.raises(InvalidInput, match="none holds remainder 3"):
            partition_events(engine, count)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "ALTER TABLE pa_events ATTACH PARTITION pa_events_p3"
            " FOR VALUES WITH (MODULUS 4, REMAINDER 3)"
        )
    before = _rows(engine)
    partition_events(engine, 0)
    assert _layout(engine) == (0, None)
    assert _rows(engine) == before  # every row, the reattached partition's included


def test_revisions_upgrade_and_downgrade_a_partitioned_database(
    url: str, engine: sa.Engine
) -> None:
    # Partitioned at 0001 (no key column yet), then upgraded: 0002 adds the key and its index
    # to every partition.
    migrate.upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO pa_events (run_id, seq, kind, ts, lane_id, data)"
                " VALUES ('old', 1, 'step_started', 1.5, 'main', '{\"a\": 1}')"
            )
        )
        conn.execute(sa.text("INSERT INTO pa_runs VALUES ('old', 1, 1, 1)"))
    partition_events(engine, 4)
    migrate.upgrade(engine, "head")
    assert _layout(engine) == (4, "HASH (run_id)")
    with SQLCheckpointer(url, migrate=False) as store:
        assert [e.seq for e in store.list_events("old")] == [1]
        store.append("old", [NewEvent(kind="step_finished", key="k")])
        assert store.event_by_key("old", "k") is not None
    with engine.connect() as conn:
        indexed = conn.execute(
            sa.text(
                "SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%(run_id, key)%'"
                " AND tablename LIKE 'pa\\_events\\_p%'"
            )
        ).scalar()
    assert indexed == 4
    migrate.downgrade(engine, "0001")
    assert _layout(engine) == (4, "HASH (run_id)")
    assert [row[:2] for row in _rows(engine)] == [("old", 1), ("old", 2)]
    migrate.downgrade(engine, "base")
    with engine.connect() as conn:
        assert events_layout(conn) is None
        assert not conn.execute(
            sa.text("SELECT count(*) FROM pg_class WHERE relname LIKE 'pa\\_events%'")
        ).scalar()


def _alembic(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PURPOSE_AGENT_DB_URL": url}
    return run_python_module("alembic", *args, cwd=REPO, env=env)


def test_alembic_option_lays_out_the_log_and_a_plain_upgrade_keeps_it(
    url: str, engine: sa.Engine
) -> None:
    done = _alembic("-x", "events_partitions=4", "upgrade", "head", url=url)
    assert done.returncode == 0, done.stderr
    assert _layout(engine) == (4, "HASH (run_id)")
    # Without the option, nothing changes the layout, and autogenerate sees the models.
    done = _alembic("upgrade", "head", url=url)
    assert done.returncode == 0, done.stderr
    checked = _alembic("check", url=url)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _layout(engine) == (4, "HASH (run_id)")
    with SQLCheckpointer(url, migrate=False) as store:
        store.save_event(ev("r", 1))
    done = _alembic("-x", "events_partitions=0", "upgrade", "head", url=url)
    assert done.returncode == 0, done.stderr
    assert _layout(engine) == (0, None)
    with SQLCheckpointer(url, migrate=False) as store:
        assert store.list_events("r") == [ev("r", 1)]


def test_alembic_option_refuses_a_bad_count_and_offline_mode(url: str) -> None:
    bad = _alembic("-x", "events_partitions=many", "upgrade", "head", url=url)
    assert bad.returncode != 0
    assert "events_partitions" in bad.stderr
    offline = _alembic("-x", "events_partitions=4", "upgrade", "head", "--sql", url=url)
    assert offline.returncode != 0
    assert "--sql" in offline.stderr


def test_cli_partitions_and_unpartitions(url: str, engine: sa.Engine) -> None:
    SQLCheckpointer(url).close()
    done = invoke("db", "partition", "--partitions", "6", "--url", url)
    assert done.exit_code == 0, done.output
    assert "one table" in done.stdout
    assert "6 partitions, HASH (run_id)" in done.stdout
    assert _layout(engine) == (6, "HASH (run_id)")
    done = invoke("db", "unpartition", "--url", url, "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["before"]["partitions"] == 6
    assert report["after"]["partitions"] == 0
    assert _layout(engine) == (0, None)
    refused = invoke("db", "partition", "--partitions", "0", "--url", url)
    assert refused.exit_code != 0


def test_alembic_option_off_postgres_is_refused_before_any_revision_runs(tmp_path: Path) -> None:
    """Before, every revision ran and committed on SQLite, then the layout was refused."""
    database = f"sqlite:///{tmp_path / 's.db'}"
    refused = _alembic("-x", "events_partitions=4", "upgrade", "head", url=database)
    assert refused.returncode != 0
    assert "PostgreSQL only" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "s.db").exists() or "pa_events" not in _sqlite_tables(tmp_path / "s.db")
    one_table = _alembic("-x", "events_partitions=0", "upgrade", "head", url=database)
    assert one_table.returncode == 0, one_table.stderr  # the layout SQLite has: nothing to do
    assert "pa_events" in _sqlite_tables(tmp_path / "s.db")


def _sqlite_tables(path: Path) -> set[str]:
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_cli_refuses_sqlite(tmp_path: Path) -> None:
    done = invoke("db", "partition", "--partitions", "4", "--url", f"sqlite:///{tmp_path / 's.db'}")
    assert done.exit_code != 0
    assert "PostgreSQL only" in done.output


def test_a_store_open_across_the_change_goes_on_without_losing_a_write(
    url: str, engine: sa.Engine
) -> None:
    acknowledged: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    with SQLCheckpointer(url) as store:

        def write(worker: int) -> None:
            run_id = f"w{worker}"
            try:
                while not stop.is_set():
                    placed = store.append(run_id, [NewEvent(kind="step_started")])
                    acknowledged.append((run_id, placed[0].seq))
                    store.recover(run_id)
            except BaseException as exc:
                errors.append(exc)

        # Enough calls first that psycopg has prepared the statements on the server.
        for _ in range(10):
            store.append("w0", [NewEvent(kind="step_started")])
        threads = [threading.Thread(target=write, args=(worker,)) for worker in range(3)]
        for thread in threads:
            thread.start()

        def writes_meanwhile(count: int) -> None:
            # Each writer appends ``count`` more times before the next change (or the end).
            def done(run_id: str) -> int:
                return sum(run == run_id for run, _ in acknowledged)

            target = {f"w{worker}": count + done(f"w{worker}") for worker in range(3)}
            deadline = time.monotonic() + 60
            while any(done(run_id) < n for run_id, n in target.items()):
                assert not errors, errors
                assert time.monotonic() < deadline, "the writers made no progress"
                time.sleep(0.01)

        try:
            for partitions in (4, 0, 2):
                writes_meanwhile(2)
                partition_events(engine, partitions)
            writes_meanwhile(2)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert errors == []
        stored = {
            (run_id, e.seq) for run_id in ("w0", "w1", "w2") for e in store.list_events(run_id)
        }
    assert set(acknowledged) <= stored
    assert len(acknowledged) >= 24  # two appends of each writer before, between and after


# -- statements keyed by run id touch one partition ----------------------------------------


class _Captured:
    """The SQL the store sends through psycopg, with its parameters."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> _Captured:
        self._execute = psycopg.Cursor.execute
        captured = self.statements
        original = self._execute

        def execute(cursor: Any, query: Any, params: Any = None, **kw: Any) -> Any:
            captured.append((str(query), params))
            return original(cursor, query, params, **kw)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        psycopg.Cursor.execute = self._execute  # type: ignore[method-assign]


def _positional(statement: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    body = re.sub(r"%\((\w+)\)[sb]", number, statement)
    return body, [params[name] for name in names]


def _plans(url: str, statement: str, params: dict[str, Any]) -> tuple[str, str]:
    """EXPLAIN of a statement as planned for its values, and as a generic prepared plan."""
    dsn = sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, prepare_threshold=None) as conn:
        custom = "\n".join(row[0] for row in conn.execute("EXPLAIN " + statement, params))
        conn.rollback()
        body, values = _positional(statement, params)
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(pgsql.SQL("PREPARE q AS ") + pgsql.SQL(body))  # type: ignore[arg-type]
        arguments = pgsql.SQL(", ").join(pgsql.Literal(v) for v in values)
        call = pgsql.SQL("EXPLAIN EXECUTE q")
        if values:
            call += pgsql.SQL("(") + arguments + pgsql.SQL(")")
        generic = "\n".join(row[0] for row in conn.execute(call))
        conn.rollback()
    return custom, generic


CALLS: dict[str, Callable[[SQLCheckpointer], object]] = {
    "list_events": lambda s: s.list_events("one"),
    "list_events limited": lambda s: s.list_events("one", 1, 2),
    "bounded read": lambda s: s.list_events(
        "one", newest_first=True, limit=2, kinds=["step_started"]
    ),
    "iter_events": lambda s: list(s.iter_events("one")),
    "recover": lambda s: s.recover("one"),
    "event_by_key": lambda s: s.event_by_key("one", "k1"),
    "append with a stored key": lambda s: s.append(
        "one", [NewEvent(kind="step_started", key="k1")]
    ),
    "compact": lambda s: s.compact("one"),
    "delete_runs by id": lambda s: s.delete_runs(["two"]),
    "delete_run": lambda s: s.delete_run("one"),
}


def test_statements_on_one_run_read_one_partition(url: str, engine: sa.Engine) -> None:
    with SQLCheckpointer(url) as store:
        for run_id in ("one", "two", "three", "four", "five"):
            store.append(
                run_id, [NewEvent(kind="step_started", key="k1"), NewEvent(kind="tool_call")]
            )
            store.save_snapshot(run_id, RunState(run_id=run_id, seq=1))
        partition_events(engine, 8)
        seen = 0
        for name, call in CALLS.items():
            with _Captured() as captured:
                call(store)
            reads = [
                (sql, params)
                for sql, params in captured.statements
                if "pa_events" in sql and not sql.lstrip().startswith(("INSERT", "WITH"))
            ]
            assert reads, f"{name}: no statement on pa_events"
            for sql, params in reads:
                custom, generic = _plans(url, sql, dict(params or {}))
                assert len(set(PARTITION.findall(custom))) == 1, f"{name}\n{sql}\n{custom}"
                # The store's sessions force generic plans: planned once for any run, the
                # partitions are pruned when the statement starts. Postgres 15 does not prune
                # `run_id = ANY($1)` (an array parameter) at that point, so the delete of a
                # list of runs probes every partition (see docs/scaling.md).
                if "= ANY" not in sql:
                    assert "Subplans Removed: 7" in generic, f"{name}\n{sql}\n{generic}"
                seen += 1
    assert seen >= len(CALLS)


def test_benchmark_runs_on_both_layouts_at_a_small_size(tmp_path: Path) -> None:
    """``python -m benchmarks.partitions`` end to end at 10k events; timings are not judged."""
    with server_url("postgres") as admin:
        admin_url = admin.render_as_string(hide_password=False)
    out = tmp_path / "partitions.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.partitions",
            "--url",
            admin_url,
            "--sizes",
            "0,10000",
            "--samples",
            "20",
            "--rounds",
            "2",
            "--runs",
            "3",
            "--partitions",
            "4",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert len(report["databases"]) == 4
    for database in report["databases"]:
        expected = 4 if database["layout"] == "partitioned" else 0
        assert database["events_layout"]["partitions"] == expected
    points = {(p["layout"], p["events"]): p for p in report["points"]}
    assert set(points) == {
        (layout, size) for layout in ("plain", "partitioned") for size in (0, 10000)
    }
    for (_, size), point in points.items():
        # The bulk-loaded events, plus those the runs measured at smaller sizes wrote.
        assert size <= point["events_in_table"] < size + 5000
        for name in ("append", "step", "recover"):
            figures = point["operations"][name]
            assert 0 < figures["p50_ms"] <= figures["p99_ms"], (name, figures)
            assert len(figures["rounds"]) == 2
    assert "| partitioned | 10,000 |" in done.stdout


def test_a_conversion_waiting_behind_a_long_transaction_does_not_stop_the_writers(
    url: str, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LOCK TABLE pa_events`` waited behind a report, and every writer queued behind it."""
    SQLCheckpointer(url).close()
    monkeypatch.setattr(migrate, "MIGRATION_LOCK_TIMEOUT", 0.2)
    writes_pass_a_waiting_change(url, lambda: partition_events(engine, 4))
    assert _layout(engine)[0] == 4
    assert len(_rows(engine)) == 1
