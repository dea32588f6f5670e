"""A damaged column gives exact data or a CorruptRecord that names the run and seq, never less.

Each case stores two runs, damages one column of one row of run ``r`` with raw SQL (what a bad
migration, a manual fix or a bit flip leaves behind), and reads both runs back through every
read method: run ``r`` must fail with ``CorruptRecord`` naming it and the damaged position, and
run ``other`` must read as it was saved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from purpose_agent import (
    AsyncSQLCheckpointer,
    CorruptRecord,
    EventKind,
    NewEvent,
    SQLCheckpointer,
    StoreUnavailable,
)
from purpose_agent.ops.verify import verify_runs
from purpose_agent.testing.suite import ev, st
from tests.sqlite_pages import ruin_page

DAMAGED_SEQ = 2
SNAPSHOT_SEQ = 4


@dataclass(frozen=True)
class Damage:
    """One column of one stored row set to a value the store never writes."""

    table: str
    column: str
    value: str  # a SQL expression in the backend's dialect
    seq: int | None  # the seq CorruptRecord must name (None: the seq itself is unreadable)
    detail: str  # a fragment of the message that says what is wrong
    backends: tuple[str, ...] = ("sqlite", "postgres", "mariadb")
    since: int = 0  # the since_seq that makes the damaged row part of a read


EVENT_DAMAGE = {
    # A REAL column on SQLite keeps any text it is given.
    "ts_text": Damage("pa_events", "ts", "'garbage'", DAMAGED_SEQ, "ts", ("sqlite",)),
    "ts_blob": Damage("pa_events", "ts", "X'00ff'", DAMAGED_SEQ, "ts", ("sqlite",)),
    # A Postgres double holds NaN and infinities, which are not times.
    "ts_nan": Damage("pa_events", "ts", "'NaN'::float8", DAMAGED_SEQ, "ts", ("postgres",)),
    "ts_infinite": Damage(
        "pa_events", "ts", "'-Infinity'::float8", DAMAGED_SEQ, "ts", ("postgres",)
    ),
    # An INTEGER column on SQLite keeps text that does not look like a number.
    "seq_text": Damage("pa_events", "seq", "'x5'", None, "seq", ("sqlite",)),
    # A position below 1 is only read by a caller asking for it (since_seq < 0); it must not
    # come back then either.
    "seq_zero": Damage("pa_events", "seq", "0", 0, "seq", since=-10),
    "seq_negative": Damage("pa_events", "seq", "-3", -3, "seq", since=-10),
    "kind_unknown": Damage("pa_events", "kind", "'no_such_kind'", DAMAGED_SEQ, "kind"),
    "kind_blob": Damage("pa_events", "kind", "X'6375'", DAMAGED_SEQ, "kind", ("sqlite",)),
    # Postgres refuses NUL in text: no lane it can store breaks the lane rules.
    "lane_nul_sqlite": Damage(
        "pa_events", "lane_id", "'a' || char(0) || 'b'", DAMAGED_SEQ, "lane_id", ("sqlite",)
    ),
    "lane_nul_mariadb": Damage(
        "pa_events", "lane_id", "CONCAT('a', CHAR(0), 'b')", DAMAGED_SEQ, "lane_id", ("mariadb",)
    ),
    "lane_too_long": Damage(
        "pa_events", "lane_id", "hex(zeroblob(150))", DAMAGED_SEQ, "lane_id", ("sqlite",)
    ),
    "lane_blob": Damage("pa_events", "lane_id", "X'ff'", DAMAGED_SEQ, "lane_id", ("sqlite",)),
    "data_not_json": Damage("pa_events", "data", "'{not json'", DAMAGED_SEQ, "not JSON"),
    "data_not_object": Damage("pa_events", "data", "'[1]'", DAMAGED_SEQ, "not an object"),
    "data_nan": Damage("pa_events", "data", """'{"x": NaN}'""", DAMAGED_SEQ, "not JSON"),
    "data_truncated": Damage("pa_events", "data", """'{"x": [1, '""", DAMAGED_SEQ, "not JSON"),
    "data_number": Damage("pa_events", "data", "7", DAMAGED_SEQ, "not an object", ("sqlite",)),
    "data_invalid_utf8": Damage(
        "pa_events",
        "data",
        "CAST(X'7b2278223a22ff227d' AS TEXT)",
        DAMAGED_SEQ,
        "not UTF-8",
        ("sqlite",),
    ),
}

SNAPSHOT_DAMAGE = {
    "state_not_json": Damage("pa_snapshots", "state", '\'{"run_id": "r"\'', SNAPSHOT_SEQ, "JSON"),
    "state_not_object": Damage("pa_snapshots", "state", "'[]'", SNAPSHOT_SEQ, "not a state"),
    "state_other_run": Damage(
        "pa_snapshots",
        "state",
        """'{"run_id":"x","seq":4,"status":"running","created_at":1.5,"updated_at":6.5,"data":{}}'""",
        SNAPSHOT_SEQ,
        "belongs to run 'x'",
    ),
    "state_bad_status": Damage(
        "pa_snapshots",
        "state",
        """'{"run_id":"r","seq":4,"status":"sleeping","created_at":1.5,"updated_at":6.5,"data":{}}'""",
        SNAPSHOT_SEQ,
        "status",
    ),
    # The column behind the state: recover() chooses the events after the snapshot by it.
    "snapshot_seq_behind": Damage("pa_snapshots", "seq", "3", SNAPSHOT_SEQ, "covers"),
    "snapshot_seq_ahead": Damage("pa_snapshots", "seq", "999", SNAPSHOT_SEQ, "covers"),
    "snapshot_seq_text": Damage("pa_snapshots", "seq", "'x'", SNAPSHOT_SEQ, "covers", ("sqlite",)),
}


_BACKENDS = [
    pytest.param(backend, marks=getattr(pytest.mark, backend), id=backend)
    for backend in ("sqlite", "postgres", "mariadb")
]


def _cases(damages: dict[str, Damage]) -> list[object]:
    cases = []
    for backend in ("sqlite", "postgres", "mariadb"):
        for name, damage in damages.items():
            if backend not in damage.backends:
                continue
            marks = [getattr(pytest.mark, backend)]
            cases.append(pytest.param(backend, damage, marks=marks, id=f"{backend}-{name}"))
    return cases


@pytest.fixture
def url(request: pytest.FixtureRequest, backend_name: str, tmp_path: Path) -> str:
    if backend_name == "sqlite":
        return f"sqlite:///{tmp_path}/damage.db"
    server_url = request.getfixturevalue(f"{backend_name}_url")
    engine = sa.create_engine(server_url, poolclass=sa.pool.NullPool)
    SQLCheckpointer(engine).close()  # migrates on first use
    with engine.begin() as conn:
        for table in ("pa_events", "pa_snapshots", "pa_runs"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    engine.dispose()
    return str(server_url.render_as_string(hide_password=False))


@pytest.fixture
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _damage(url: str, damage: Damage, where: int) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        condition = "run_id = 'r'" + (f" AND seq = {where}" if damage.table == "pa_events" else "")
        # Driver SQL: the JSON in some values would read as bind parameters to sa.text.
        changed = conn.exec_driver_sql(
            f"UPDATE {damage.table} SET {damage.column} = {damage.value} WHERE {condition}"
        ).rowcount
    engine.dispose()
    assert changed == 1


def _store_two_runs(store: SQLCheckpointer) -> None:
    store.save_events([ev("r", seq, n=seq) for seq in range(1, 6)], snapshot=st("r", SNAPSHOT_SEQ))
    store.save_events([ev("other", seq, n=seq) for seq in (1, 2)], snapshot=st("other", 1))


def _other_run_reads_as_saved(store: SQLCheckpointer) -> None:
    assert store.list_events("other") == [ev("other", 1, n=1), ev("other", 2, n=2)]
    assert list(store.iter_events("other")) == [ev("other", 1, n=1), ev("other", 2, n=2)]
    assert store.load_latest("other") == st("other", 1)
    recovery = store.recover("other")
    assert recovery is not None
    assert recovery.state == st("other", 1)
    assert recovery.events == [ev("other", 2, n=2)]


def _refuses(read: Callable[[], object], damage: Damage) -> None:
    with pytest.raises(CorruptRecord) as info:
        read()
    assert info.value.run_id == "r"
    assert info.value.seq == damage.seq
    assert damage.detail in str(info.value)
    assert "'r'" in str(info.value)


@pytest.mark.parametrize(
    ("backend_name", "damage"), _cases(EVENT_DAMAGE), indirect=["backend_name"]
)
def test_damaged_event_column_is_a_corrupt_record_naming_run_and_seq(
    url: str, damage: Damage
) -> None:
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        _damage(url, damage, DAMAGED_SEQ)
        since = damage.since
        reads: list[Callable[[], object]] = [
            lambda: store.list_events("r", since),
            lambda: store.list_events("r", since, limit=10),
            lambda: list(store.iter_events("r", since)),
        ]
        for read in reads:
            _refuses(read, damage)
        assert store.load_latest("r") == st("r", SNAPSHOT_SEQ)
        _other_run_reads_as_saved(store)


# A position damaged below the snapshot's moves the row out of the tail recover() reads.
TAIL_DAMAGE = {name: damage for name, damage in EVENT_DAMAGE.items() if damage.since == 0}


@pytest.mark.parametrize(("backend_name", "damage"), _cases(TAIL_DAMAGE), indirect=["backend_name"])
def test_damaged_event_after_the_snapshot_fails_recover(url: str, damage: Damage) -> None:
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        after = SNAPSHOT_SEQ + 1
        _damage(url, damage, after)
        _refuses(lambda: store.recover("r"), replace(damage, seq=damage.seq and after))
        _other_run_reads_as_saved(store)


@pytest.mark.parametrize(
    ("backend_name", "damage"), _cases(SNAPSHOT_DAMAGE), indirect=["backend_name"]
)
def test_damaged_snapshot_is_a_corrupt_record_naming_run_and_seq(url: str, damage: Damage) -> None:
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        _damage(url, damage, SNAPSHOT_SEQ)
        _refuses(lambda: store.load_latest("r"), damage)
        _refuses(lambda: store.recover("r"), damage)
        # The events themselves are intact.
        assert store.list_events("r") == [ev("r", seq, n=seq) for seq in range(1, 6)]
        _other_run_reads_as_saved(store)


# A damage that leaves the row at its position: a retry of the event saved there meets it.
RETRY_DAMAGE = {name: damage for name, damage in EVENT_DAMAGE.items() if damage.seq == DAMAGED_SEQ}


@pytest.mark.parametrize(
    ("backend_name", "damage"), _cases(RETRY_DAMAGE), indirect=["backend_name"]
)
def test_a_retry_onto_a_damaged_event_is_a_corrupt_record_not_a_conflict(
    url: str, damage: Damage
) -> None:
    # The stored row cannot be compared with the retry: calling it another writer's event
    # (SequenceConflict) would send the caller after a writer that does not exist.
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        _damage(url, damage, DAMAGED_SEQ)
        retry = ev("r", DAMAGED_SEQ, n=DAMAGED_SEQ)
        _refuses(lambda: store.save_event(retry), damage)
        _refuses(lambda: store.save_events([ev("r", 6, n=6), retry]), damage)
        _refuses(lambda: store.save_events([retry], snapshot=st("r", 6)), damage)
        assert store.load_latest("r") == st("r", SNAPSHOT_SEQ)
        assert [event.seq for event in store.list_events("r", DAMAGED_SEQ)] == [3, 4, 5]
        _other_run_reads_as_saved(store)


@pytest.mark.parametrize(
    ("backend_name", "damage"),
    _cases({name: RETRY_DAMAGE[name] for name in ("data_not_json", "data_invalid_utf8")}),
    indirect=["backend_name"],
)
def test_an_async_retry_onto_a_damaged_event_is_a_corrupt_record(url: str, damage: Damage) -> None:
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
    _damage(url, damage, DAMAGED_SEQ)

    async def retry() -> None:
        async with AsyncSQLCheckpointer(url) as store:
            await store.save_event(ev("r", DAMAGED_SEQ, n=DAMAGED_SEQ))

    _refuses(lambda: asyncio.run(retry()), damage)


@pytest.mark.parametrize("backend_name", _BACKENDS, indirect=True)
def test_a_keyed_append_onto_a_damaged_event_is_a_corrupt_record(url: str) -> None:
    damage = EVENT_DAMAGE["data_not_json"]
    answer = NewEvent(kind=EventKind.MODEL_RESPONSE, data={"text": "hi"}, key="msg-1")
    with SQLCheckpointer(url) as store:
        store.append("r", [NewEvent(kind=EventKind.STEP_STARTED), answer])
        _damage(url, damage, DAMAGED_SEQ)
        _refuses(lambda: store.append("r", [answer]), damage)
        assert store.last_seq("r") == DAMAGED_SEQ


def _record(damage: Damage) -> str:
    return "event" if damage.table == "pa_events" else "snapshot"


@pytest.mark.parametrize(
    ("backend_name", "damage"),
    _cases({**EVENT_DAMAGE, **SNAPSHOT_DAMAGE}),
    indirect=["backend_name"],
)
def test_verify_names_the_damaged_record_and_reads_every_other(url: str, damage: Damage) -> None:
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        _damage(url, damage, DAMAGED_SEQ if _record(damage) == "event" else SNAPSHOT_SEQ)
        report = verify_runs(store)
    assert [(found.run_id, found.record, found.seq) for found in report.damaged] == [
        ("r", _record(damage), damage.seq)
    ]
    assert damage.detail in report.damaged[0].detail
    # Stored: 7 events and 2 snapshots; each one but the damaged record was decoded.
    assert report.runs == 2
    expected = (6, 2) if _record(damage) == "event" else (7, 1)
    assert (report.events, report.snapshots) == expected


@pytest.mark.parametrize("backend_name", _BACKENDS, indirect=True)
def test_verify_reads_on_after_each_damaged_event_of_a_run(url: str) -> None:
    damage = EVENT_DAMAGE["data_not_json"]
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        _damage(url, damage, 2)
        _damage(url, damage, 4)
        report = verify_runs(store)
    assert [(found.run_id, found.seq) for found in report.damaged] == [("r", 2), ("r", 4)]
    assert (report.events, report.snapshots, report.damaged_runs) == (5, 2, 1)


@pytest.mark.parametrize("backend_name", _BACKENDS, indirect=True)
def test_verify_reports_a_listed_run_id_no_read_accepts(url: str) -> None:
    with SQLCheckpointer(url) as store:
        _store_two_runs(store)
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("UPDATE pa_runs SET run_id = 'bad/id' WHERE run_id = 'other'")
        engine.dispose()
        report = verify_runs(store)
    damaged = {(found.run_id, found.record): found.detail for found in report.damaged}
    assert set(damaged) == {("bad/id", "run"), ("other", "run")}
    assert "run id" in damaged["bad/id", "run"]
    # The events of 'other' lost their row to the rename: found by that, and read.
    assert "no run row" in damaged["other", "run"]
    assert (report.runs, report.events, report.snapshots) == (3, 7, 2)


# -- a damaged SQLite file, where no run is being read ---------------------------------------


@pytest.mark.sqlite
def test_a_file_that_is_not_a_sqlite_database_says_so_when_the_store_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    path.write_bytes(bytes(range(256)) * 64)  # a file of another program, or a ruined header
    with pytest.raises(StoreUnavailable) as refused:
        SQLCheckpointer(f"sqlite:///{path}")
    assert "file is not a database; the URL names a file that is not a SQLite database" in str(
        refused.value
    )


@pytest.mark.sqlite
def test_a_damaged_page_of_the_runs_table_says_what_to_do_when_runs_are_listed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "runs.db"
    url = f"sqlite:///{path}"
    with SQLCheckpointer(url) as store:
        for n in range(400):  # enough runs rows for pa_runs to span several pages
            store.save_event(ev(f"run-{n:03}", 1))
    ruin_page(path, "SELECT rootpage FROM sqlite_master WHERE name = 'pa_runs'")
    with SQLCheckpointer(url) as store, pytest.raises(StoreUnavailable) as refused:
        store.list_runs()
    assert "the SQLite file's own pages are damaged: `purpose-agent runs verify`" in str(
        refused.value
    )
