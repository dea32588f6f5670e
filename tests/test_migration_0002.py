"""Revision 0002 on a database filled under 0001: every row kept, keys and groups come and go.

Revision 0001's schema is frozen here: the database is upgraded to "0001" only, and filled
with plain SQL against the columns that revision created (the ORM models already carry 0002's
columns, so the stores cannot write a 0001 database). The payloads are the JSON text the codec
writes, tricky ones included, so "intact" means byte for byte.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import Recovery, SchemaNotCurrent, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.db.engine import make_engine
from purpose_agent.records import event_row, state_row
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState, RunStatus

ZERO_ONE = "0001"

# What revision 0001 created: its columns (in order) and its keys, spelled out so that a change
# to 0001 (or a 0002 that rewrites the old tables) shows up here.
COLUMNS_0001 = {
    "pa_events": ("run_id", "seq", "kind", "ts", "lane_id", "data"),
    "pa_runs": ("run_id", "created_ns", "updated_ns", "last_seq"),
    "pa_snapshots": ("run_id", "seq", "state", "written_ns"),
}
PRIMARY_KEYS = {"pa_events": ("run_id", "seq"), "pa_runs": ("run_id",), "pa_snapshots": ("run_id",)}
INDEXES_0001 = {
    "pa_events": set(),
    "pa_runs": {("ix_pa_runs_updated_ns", ("updated_ns",), False)},
    "pa_snapshots": set(),
}
# What 0002 adds.
NEW_COLUMNS = {"pa_events": "key", "pa_runs": "group_id"}
NEW_INDEXES = {
    "pa_events": {("uq_pa_events_run_id_key", ("run_id", "key"), True)},
    "pa_runs": {("ix_pa_runs_group_id_updated_ns", ("group_id", "updated_ns"), False)},
    "pa_snapshots": set(),
}

# Strings that have broken JSON text or text columns somewhere: NUL, lone surrogates (which
# the codec escapes and keeps), astral characters, combining marks, separators JavaScript
# treats as line ends, a BOM, control characters, quotes and backslashes.
TRICKY = (
    "",
    "plain",
    "NUL\x00inside",
    "\x00",
    "lone \ud800 high surrogate",
    "lone \udfff low surrogate",
    "emoji 🚀 family 👩\u200d👩\u200d👧",
    "combining e\u0301 vs \xe9",
    "RTL שלום مرحبا",
    "separators \u2028 \u2029",
    "tab\tnewline\ncr\r",
    'quote " backslash \\ slash / \\u0000 as text',
    "\x7f\x1f\x01",
    "日本語のテキスト",
    "\ufeffBOM",
    "\uffff\U0010ffff",
)
LANES = ("main", "main", "main", "lane-ß", "", "📎" * 10, "L" * 255, "worker 2")
BASE_NS = 1_764_000_000_000_000_000


def _tricky_payload(rng: random.Random, i: int) -> dict[str, Any]:
    """A payload of one of the shapes whose JSON text has to come back byte for byte."""
    shape = i % 9
    if shape == 0:
        return {"text": rng.choice(TRICKY), "i": i}
    if shape == 1:
        # -0.0 and the float extremes are exact in the JSON text (the Python values compare
        # equal to others, the text does not).
        return {
            "ints": [2**80, -(2**70), 0, i],
            "floats": [-0.0, 0.1, 1e308, -1e-308, 1.7976931348623157e308, 5e-324, rng.random()],
        }
    if shape == 2:
        return {"z": 1, "a": 2, "m": {"y": [], "b": {}}, "order": list(range(i % 7))}
    if shape == 3:
        nested: dict[str, Any] = {"leaf": rng.choice(TRICKY)}
        for depth in range(30):
            nested = {f"d{depth}": [nested]}
        return nested
    if shape == 4:
        return {}
    if shape == 5:
        return {"ключ": "значение", "\x00key": "a key with NUL", "": "empty key", "🔑": None}
    if shape == 6:
        return {"t": True, "f": False, "n": None, "mixed": [None, True, 1, 1.0, "1", [], {}]}
    if shape == 7:
        text = "".join(
            chr(rng.choice((rng.randrange(0x20, 0xD800), rng.randrange(0xE000, 0x110000))))
            for _ in range(40)
        )
        return {"random": text}
    if i % 97 == 8:
        # Past the 64 KiB of a MariaDB TEXT, once escaped: the column must be LONGTEXT.
        return {"large": "x" * 30_000 + "é" * 12_000, "tail": rng.choice(TRICKY)}
    return {"text": " ".join(rng.choice(TRICKY) for _ in range(5))}


@dataclass(frozen=True)
class RunPlan:
    """A run to write: its id, how many events, the seq its snapshot covers (if any)."""

    run_id: str
    events: int
    snapshot: int | None
    updated_ns: int


# The two "tie" runs share their updated_ns: list_runs orders them by run id.
PLANS = (
    RunPlan("plain-ascii-run", 300, 150, BASE_NS + 5_000),
    RunPlan("ünïcødé-ラン-🚀", 250, 250, BASE_NS + 9_000),
    RunPlan("A", 200, None, BASE_NS + 1_000),
    RunPlan("a ", 120, 60, BASE_NS + 7_000),  # differs from "A" by case and a trailing space
    RunPlan("r" * 200 + "é" * 54 + "🚀", 100, None, BASE_NS + 3_000),  # 255 characters
    RunPlan("snapshot-only", 0, 7, BASE_NS + 8_000),
    RunPlan("tie-b", 3, None, BASE_NS + 2_000),
    RunPlan("tie-a", 3, 2, BASE_NS + 2_000),
)
RUN_ORDER = [
    "ünïcødé-ラン-🚀",
    "snapshot-only",
    "a ",
    "plain-ascii-run",
    "r" * 200 + "é" * 54 + "🚀",
    "tie-a",
    "tie-b",
    "A",
]

Rows = dict[str, list[dict[str, Any]]]


@dataclass
class Filled:
    """A database at 0001 with the runs of ``PLANS`` in it, and what was written."""

    url: str
    engine: sa.Engine
    schema_0001: dict[str, Any]
    rows: Rows
    events: dict[str, list[PAEvent]] = field(default_factory=dict)
    states: dict[str, RunState] = field(default_factory=dict)


def _table(name: str, columns: tuple[str, ...]) -> sa.TableClause:
    return sa.table(name, *(sa.column(column) for column in columns))


def _plan_rows(rng: random.Random) -> tuple[Rows, dict[str, list[PAEvent]], dict[str, RunState]]:
    """The rows of every planned run, as a 0001-era store would have written them."""
    rows: Rows = {name: [] for name in COLUMNS_0001}
    events: dict[str, list[PAEvent]] = {}
    states: dict[str, RunState] = {}
    kinds = list(EventKind)
    for number, plan in enumerate(PLANS):
        run_events = [
            PAEvent(
                run_id=plan.run_id,
                seq=seq,
                kind=rng.choice(kinds),
                ts=rng.choice((1_700_000_000 + rng.random() * 1e7, 0.0, 1.5, rng.uniform(0, 4e9))),
                lane_id=rng.choice(LANES),
                data=_tricky_payload(rng, seq + number),
            )
            for seq in range(1, plan.events + 1)
        ]
        events[plan.run_id] = run_events
        rows["pa_events"] += [event_row(event)._asdict() for event in run_events]
        if plan.snapshot is not None:
            state = RunState(
                run_id=plan.run_id,
                seq=plan.snapshot,
                status=rng.choice(list(RunStatus)),
                created_at=1_700_000_000.25 + number,
                updated_at=1_700_000_100.5 + number,
                data=_tricky_payload(rng, number),
            )
            states[plan.run_id] = state
            snap = state_row(plan.run_id, state)
            written_ns = plan.updated_ns - 10
            rows["pa_snapshots"].append({**snap._asdict(), "written_ns": written_ns})
        rows["pa_runs"].append(
            {
                "run_id": plan.run_id,
                "created_ns": BASE_NS + number,
                "updated_ns": plan.updated_ns,
                "last_seq": plan.events,
            }
        )
    return {name: _sorted(name, table_rows) for name, table_rows in rows.items()}, events, states


def _sorted(name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Sorted in Python: a server's collation may order run ids differently.
    return sorted(rows, key=lambda row: tuple(row[column] for column in PRIMARY_KEYS[name]))


def upgraded(rows: Rows) -> Rows:
    """The rows as 0002 leaves them: a run's last_seq is at least its snapshot's seq."""
    covered = {snap["run_id"]: snap["seq"] for snap in rows["pa_snapshots"]}
    runs = [
        {**run, "last_seq": max(run["last_seq"], covered.get(run["run_id"], 0))}
        for run in rows["pa_runs"]
    ]
    return {**rows, "pa_runs": runs}


def dump(engine: sa.Engine) -> Rows:
    """Every row of the store's tables, every column the database has now."""
    metadata = sa.MetaData()
    with engine.connect() as conn:
        contents: Rows = {}
        for name in COLUMNS_0001:
            table = sa.Table(name, metadata, autoload_with=conn)
            for column in table.columns:
                if isinstance(column.type, sa.Float):
                    # MariaDB's DOUBLE reflects as a Decimal of 10 places: read the float itself.
                    column.type = sa.Double()
            contents[name] = _sorted(
                name, [dict(row._mapping) for row in conn.execute(sa.select(table))]
            )
    return contents


def project(contents: Rows) -> Rows:
    """The same rows with only 0001's columns."""
    return {
        name: [{column: row[column] for column in COLUMNS_0001[name]} for row in rows]
        for name, rows in contents.items()
    }


def new_values(contents: Rows) -> dict[str, list[Any]]:
    """The values of 0002's columns, row by row."""
    return {name: [row[column] for row in contents[name]] for name, column in NEW_COLUMNS.items()}


def schema(engine: sa.Engine) -> dict[str, Any]:
    """What the inspector sees of the store's tables: columns, primary key, indexes."""
    inspector = sa.inspect(engine)
    seen: dict[str, Any] = {}
    for name in sorted(set(inspector.get_table_names()) - {migrate.VERSION_TABLE}):
        pk = inspector.get_pk_constraint(name)
        seen[name] = {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"])
                for column in inspector.get_columns(name)
            ],
            "pk": tuple(pk["constrained_columns"]),
            "indexes": {
                (index["name"], tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(name)
            },
        }
    return seen


def revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return migrate.current_revision(conn)


@pytest.fixture
def filled(empty_database: str) -> Iterator[Filled]:
    """A database at 0001 holding every planned run, written with plain SQL."""
    engine = make_engine(empty_database, poolclass=sa.pool.NullPool)
    try:
        migrate.upgrade(engine, ZERO_ONE)
        frozen = schema(engine)
        assert {name: tuple(c[0] for c in t["columns"]) for name, t in frozen.items()} == (
            COLUMNS_0001
        )
        assert {name: t["pk"] for name, t in frozen.items()} == PRIMARY_KEYS
        assert {name: t["indexes"] for name, t in frozen.items()} == INDEXES_0001
        rows, events, states = _plan_rows(random.Random(2026))
        with engine.begin() as conn:
            for name, columns in COLUMNS_0001.items():
                conn.execute(_table(name, columns).insert(), rows[name])
        yield Filled(empty_database, engine, frozen, rows, events, states)
    finally:
        engine.dispose()


def expected_recovery(filled: Filled, run_id: str) -> Recovery:
    state = filled.states.get(run_id)
    covered = state.seq if state is not None else 0
    return Recovery(state, [event for event in filled.events[run_id] if event.seq > covered])


def assert_store_reads_the_runs(store: SQLCheckpointer, filled: Filled) -> None:
    """Everything the store reads is what the rows say."""
    assert store.list_runs() == RUN_ORDER
    assert store.list_runs(limit=3, offset=4) == RUN_ORDER[4:7]
    for plan in PLANS:
        assert store.list_events(plan.run_id) == filled.events[plan.run_id], plan.run_id
        assert list(store.iter_events(plan.run_id, since_seq=5)) == filled.events[plan.run_id][5:]
        assert store.recover(plan.run_id) == expected_recovery(filled, plan.run_id)
        assert store.load_latest(plan.run_id) == filled.states.get(plan.run_id)
        assert store.last_seq(plan.run_id) == max(plan.events, plan.snapshot or 0)
        assert store.run_group(plan.run_id) is None
        assert store.event_by_key(plan.run_id, "step-1") is None
    assert store.list_groups() == []


def test_fill_is_read_back_exactly_under_0001(filled: Filled) -> None:
    assert dump(filled.engine) == filled.rows
    assert revision(filled.engine) == ZERO_ONE
    sizes = {name: len(rows) for name, rows in filled.rows.items()}
    assert sizes == {"pa_events": 976, "pa_runs": 8, "pa_snapshots": 5}
    assert max(len(row["data"]) for row in filled.rows["pa_events"]) > 65_536


def test_upgrade_keeps_every_row_and_adds_empty_key_and_group(filled: Filled) -> None:
    migrate.upgrade(filled.engine)
    assert revision(filled.engine) == migrate.head_revision()
    after = dump(filled.engine)
    assert project(after) == upgraded(filled.rows)  # payloads compared as the exact text written
    assert {name: set(rows[0]) - set(COLUMNS_0001[name]) for name, rows in after.items()} == {
        "pa_events": {"key"},
        "pa_runs": {"group_id"},
        "pa_snapshots": set(),
    }
    assert new_values(after) == {
        "pa_events": [None] * len(filled.rows["pa_events"]),
        "pa_runs": [None] * len(filled.rows["pa_runs"]),
    }
    with SQLCheckpointer(filled.url, migrate=False) as store:
        assert_store_reads_the_runs(store, filled)


def test_upgrade_only_adds_the_new_columns_and_indexes(filled: Filled) -> None:
    migrate.upgrade(filled.engine)
    upgraded = schema(filled.engine)
    assert set(upgraded) == set(COLUMNS_0001)
    for name, old in filled.schema_0001.items():
        new = upgraded[name]
        added = [column for column in new["columns"] if column[0] == NEW_COLUMNS.get(name)]
        assert [column for column in new["columns"] if column not in added] == old["columns"]
        # Nullable, and typed as run ids are (on MariaDB: binary and no-pad, so that "k",
        # "K" and "k " are three keys).
        run_id_type = next(column[1] for column in old["columns"] if column[0] == "run_id")
        assert added == ([(NEW_COLUMNS[name], run_id_type, True)] if name in NEW_COLUMNS else [])
        assert new["pk"] == old["pk"]
        assert new["indexes"] == old["indexes"] | NEW_INDEXES[name]


def _probe(run_id: str, seq: int, key: str | None) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "seq": seq,
        "kind": "custom",
        "ts": 1.0,
        "lane_id": "main",
        "data": "{}",
        "key": key,
    }


EVENTS = _table("pa_events", (*COLUMNS_0001["pa_events"], "key"))
RUNS = _table("pa_runs", (*COLUMNS_0001["pa_runs"], "group_id"))


def _set_key(conn: sa.Connection, run_id: str, seq: int, key: str) -> None:
    where = sa.and_(EVENTS.c.run_id == run_id, EVENTS.c.seq == seq)
    assert conn.execute(EVENTS.update().where(where).values(key=key)).rowcount == 1


def test_event_key_is_unique_within_a_run_and_optional(filled: Filled) -> None:
    migrate.upgrade(filled.engine)
    engine = filled.engine
    with engine.begin() as conn:
        # Many NULL keys in one run (hundreds are there already), one key in two runs, and
        # keys that only a case- or pad-insensitive collation would confuse.
        conn.execute(
            EVENTS.insert(),
            [_probe("probe", seq, None) for seq in (1, 2, 3)]
            + [_probe("probe", 4, "k"), _probe("probe", 5, "K"), _probe("probe", 6, "k ")]
            + [_probe("probe-2", 1, "k")],
        )
        _set_key(conn, "A", 1, "old")
        _set_key(conn, "a ", 1, "old")
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(EVENTS.insert(), [_probe("probe", 7, "k")])
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        _set_key(conn, "A", 2, "old")
    with engine.connect() as conn:
        keyed = conn.execute(
            sa.select(EVENTS.c.run_id, EVENTS.c.seq, EVENTS.c.key).where(EVENTS.c.key.is_not(None))
        ).all()
        probe_rows = conn.execute(
            sa.select(sa.func.count()).select_from(EVENTS).where(EVENTS.c.run_id == "probe")
        ).scalar_one()
    assert sorted(map(tuple, keyed)) == sorted(
        [
            ("probe", 4, "k"),
            ("probe", 5, "K"),
            ("probe", 6, "k "),
            ("probe-2", 1, "k"),
            ("A", 1, "old"),
            ("a ", 1, "old"),
        ]
    )
    assert probe_rows == 6


def _write_keys_and_groups(engine: sa.Engine) -> None:
    """Keys on some old events and groups on some old runs, with plain SQL."""
    with engine.begin() as conn:
        for seq in range(1, 40):
            _set_key(conn, "plain-ascii-run", seq, f"step-{seq}")
        _set_key(conn, "ünïcødé-ラン-🚀", 1, "ключ 🔑")
        for run_id, group in (("A", "conversation-1"), ("a ", "conversation-1"), ("tie-a", "g")):
            conn.execute(RUNS.update().where(RUNS.c.run_id == run_id).values(group_id=group))


def test_downgrade_to_0001_drops_keys_and_groups_and_keeps_every_other_value(
    filled: Filled,
) -> None:
    migrate.upgrade(filled.engine)
    upgraded_schema = schema(filled.engine)
    _write_keys_and_groups(filled.engine)
    written = dump(filled.engine)
    assert sum(key is not None for key in new_values(written)["pa_events"]) == 40
    assert sum(group is not None for group in new_values(written)["pa_runs"]) == 3

    migrate.downgrade(filled.engine, ZERO_ONE)
    assert revision(filled.engine) == ZERO_ONE
    assert dump(filled.engine) == upgraded(filled.rows)  # last_seq stays where 0002 put it
    assert schema(filled.engine) == filled.schema_0001  # the columns and indexes are gone

    with pytest.raises(SchemaNotCurrent) as refused:
        SQLCheckpointer(filled.url, migrate=False)
    assert refused.value.found == ZERO_ONE
    assert refused.value.needed == migrate.head_revision()
    command = migrate.upgrade_command(sa.make_url(filled.url))
    assert command.startswith(f"{migrate.UPGRADE_COMMAND} --url ")
    assert refused.value.command == command
    assert f"`{command}`" in str(refused.value)
    assert revision(filled.engine) == ZERO_ONE  # refusing changed nothing

    migrate.upgrade(filled.engine)  # and back up: the round trip
    again = dump(filled.engine)
    assert project(again) == upgraded(filled.rows)
    assert set(new_values(again)["pa_events"]) == {None}
    assert set(new_values(again)["pa_runs"]) == {None}
    assert schema(filled.engine) == upgraded_schema
    with SQLCheckpointer(filled.url, migrate=False) as store:
        assert_store_reads_the_runs(store, filled)


def test_downgrade_after_appends_with_keys_and_groups_loses_only_the_keys_and_groups(
    filled: Filled,
) -> None:
    rng = random.Random(11)
    with SQLCheckpointer(filled.url) as store:  # upgrades to head
        keyed = NewEvent(kind=EventKind.TOOL_CALL, key="call-1", data=_tricky_payload(rng, 0))
        on_old = store.append(
            "A",
            [keyed, NewEvent(kind=EventKind.MESSAGE, data=_tricky_payload(rng, 5))],
            expected_last_seq=200,
            group="conversation ß",
        )
        assert [event.seq for event in on_old] == [201, 202]
        on_new = store.append(
            "new-run",
            [NewEvent(kind=EventKind.RUN_STARTED, key=f"k{i}", data={"i": i}) for i in range(30)],
            group="conversation ß",
        )
        tail = store.append(
            "plain-ascii-run",
            [NewEvent(kind=EventKind.STEP_FINISHED, key="ключ 🔑", data=_tricky_payload(rng, 1))],
            snapshot=RunState(run_id="plain-ascii-run", data={"after": "append"}),
            group="other",
        )
        assert store.event_by_key("A", "call-1") == on_old[0]
        assert store.event_by_key("new-run", "k29") == on_new[29]
        assert store.run_group("A") == "conversation ß"
        assert store.list_groups() == ["other", "conversation ß"]
        runs = store.list_runs()
        assert runs[:3] == ["plain-ascii-run", "new-run", "A"]
        logs = {run_id: store.list_events(run_id) for run_id in runs}
        recoveries = {run_id: store.recover(run_id) for run_id in runs}
        last_seqs = {run_id: store.last_seq(run_id) for run_id in runs}
    assert logs["A"][-2:] == on_old
    snapshot = recoveries["plain-ascii-run"]
    assert snapshot is not None
    assert snapshot.state is not None
    assert (snapshot.state.seq, snapshot.state.data, snapshot.events) == (
        301,
        {"after": "append"},
        [],
    )
    assert tail[0].seq == 301
    head = dump(filled.engine)
    assert sum(key is not None for key in new_values(head)["pa_events"]) == 32
    assert sum(group is not None for group in new_values(head)["pa_runs"]) == 3

    migrate.downgrade(filled.engine, ZERO_ONE)
    assert dump(filled.engine) == project(head)
    assert schema(filled.engine) == filled.schema_0001

    with SQLCheckpointer(filled.url) as store:  # upgrades again: keys and groups are gone
        assert store.list_runs() == runs
        assert {run_id: store.list_events(run_id) for run_id in runs} == logs
        assert {run_id: store.recover(run_id) for run_id in runs} == recoveries
        assert {run_id: store.last_seq(run_id) for run_id in runs} == last_seqs
        assert store.event_by_key("A", "call-1") is None
        assert store.run_group("A") is None
        assert store.list_groups() == []
        assert store.list_runs(group="conversation ß") == []
        # The key is free again: the same event appended with it is a new event.
        again = store.append("A", [keyed])
        assert [event.seq for event in again] == [203]
        assert store.event_by_key("A", "call-1") == again[0]
    final = project(dump(filled.engine))
    assert final["pa_events"] == _sorted(
        "pa_events", [*project(head)["pa_events"], event_row(again[0])._asdict()]
    )
    assert final["pa_snapshots"] == project(head)["pa_snapshots"]


def test_opening_a_filled_0001_database_upgrades_it(filled: Filled) -> None:
    with SQLCheckpointer(filled.url) as store:
        assert revision(store.engine) == migrate.head_revision()
        assert_store_reads_the_runs(store, filled)
    assert project(dump(filled.engine)) == upgraded(filled.rows)


def test_two_threads_opening_a_filled_0001_database_at_once_both_succeed(filled: Filled) -> None:
    start = threading.Barrier(2)
    results: dict[int, object] = {}

    def open_and_read(worker: int) -> None:
        try:
            start.wait(timeout=30)
            with SQLCheckpointer(filled.url) as store:
                results[worker] = (store.list_runs(), store.recover("plain-ascii-run"))
        except BaseException as exc:  # reported below, with the worker
            results[worker] = exc

    threads = [threading.Thread(target=open_and_read, args=(worker,)) for worker in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    expected = (RUN_ORDER, expected_recovery(filled, "plain-ascii-run"))
    assert results == {0: expected, 1: expected}
    with filled.engine.connect() as conn:
        versions = conn.execute(sa.text(f"SELECT version_num FROM {migrate.VERSION_TABLE}")).all()
    assert [tuple(row) for row in versions] == [(migrate.head_revision(),)]
    assert project(dump(filled.engine)) == upgraded(filled.rows)


def test_a_run_saved_by_a_snapshot_alone_appends_after_the_snapshot_once_upgraded(
    filled: Filled,
) -> None:
    """0001 left last_seq at 0 for such a run; an append below the snapshot would be hidden."""
    with SQLCheckpointer(filled.url) as store:
        assert store.last_seq("snapshot-only") == 7
        (appended,) = store.append("snapshot-only", [NewEvent(kind=EventKind.CUSTOM)])
        assert appended.seq == 8
        recovery = store.recover("snapshot-only")
        assert recovery is not None
        assert recovery.state == filled.states["snapshot-only"]
        assert recovery.events == [appended]


class Killed(Exception):
    """Stands for the process dying at this statement."""


def _die_at(engine: sa.Engine, prefix: str) -> Any:
    def die(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if " ".join(statement.split()).upper().startswith(prefix):
            raise Killed(statement)

    sa.event.listen(engine, "before_cursor_execute", die)
    return die


def test_an_upgrade_stopped_part_way_is_finished_by_the_next_open(filled: Filled) -> None:
    """The upgrade stops after 0002 altered ``pa_events``, before ``pa_runs``.

    Postgres and SQLite roll it all back. MariaDB had committed the new column and index
    under revision 0001, and every later open failed on them ("Duplicate column name").
    """
    die = _die_at(filled.engine, "ALTER TABLE PA_RUNS ADD")
    with pytest.raises(Killed):
        migrate.upgrade(filled.engine)
    sa.event.remove(filled.engine, "before_cursor_execute", die)
    assert revision(filled.engine) == ZERO_ONE
    with SQLCheckpointer(filled.url) as store:
        assert revision(store.engine) == migrate.head_revision()
        assert_store_reads_the_runs(store, filled)
        placed = store.append("after", [NewEvent(kind=EventKind.CUSTOM, key="k")], group="g")
        assert store.event_by_key("after", "k") == placed[0]
        assert store.list_runs(group="g") == ["after"]


def test_a_downgrade_stopped_part_way_is_finished_by_running_it_again(filled: Filled) -> None:
    migrate.upgrade(filled.engine)
    die = _die_at(filled.engine, "DROP INDEX UQ_PA_EVENTS_RUN_ID_KEY")
    with pytest.raises(Killed):
        migrate.downgrade(filled.engine, ZERO_ONE)
    sa.event.remove(filled.engine, "before_cursor_execute", die)
    migrate.downgrade(filled.engine, ZERO_ONE)
    assert revision(filled.engine) == ZERO_ONE
    assert schema(filled.engine) == filled.schema_0001
    assert dump(filled.engine) == upgraded(filled.rows)
