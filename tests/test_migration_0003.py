"""Revision 0003: the key and group indexes hold only rows that have a key or a group.

Where the backend has partial indexes (SQLite, Postgres), an unkeyed event and an ungrouped
run stay out of them, so a plain append writes fewer index entries. What the indexes are for
must not change: a key is still unique within its run, lookups by key and by group still use
them, and a downgrade to 0002 and back keeps every row.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from purpose_agent import NewEvent, SQLCheckpointer
from purpose_agent.db import migrate
from purpose_agent.db.engine import make_engine
from purpose_agent.db.models import EventRecord

INDEXES = {
    "uq_pa_events_run_id_key": "key is not null",
    "ix_pa_runs_group_id_updated_ns": "group_id is not null",
}


def _index_predicates(engine: sa.Engine) -> dict[str, str | None]:
    """Each index's WHERE clause as the database reports it (None: a full index)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(
                sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            ).all()
            definitions = {name: sql or "" for name, sql in rows}
        elif engine.dialect.name == "postgresql":
            rows = conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes")).all()
            definitions = dict(rows)
        else:
            found = {
                index["name"]
                for table in ("pa_events", "pa_runs")
                for index in sa.inspect(conn).get_indexes(table)
            }
            return {name: None for name in INDEXES if name in found}
    predicates: dict[str, str | None] = {}
    for name in INDEXES:
        if name not in definitions:
            continue
        _, where, predicate = definitions[name].upper().partition(" WHERE ")
        predicates[name] = predicate.strip("() ").lower() if where else None
    return predicates


def _rows(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    with engine.connect() as conn:
        return {
            table: [
                tuple(row) for row in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY 1, 2"))
            ]
            for table in ("pa_events", "pa_runs", "pa_snapshots")
        }


def _fill(store: SQLCheckpointer) -> None:
    store.append("plain", [NewEvent(kind="tool_call", data={"n": n}) for n in range(5)])
    store.append(
        "keyed",
        [NewEvent(kind="tool_call", data={"n": n}, key=f"k{n}") for n in range(5)],
        group="conversation",
    )


def test_key_and_group_indexes_hold_only_rows_with_a_key_or_group(empty_database: str) -> None:
    with SQLCheckpointer(empty_database) as store:
        _fill(store)
        predicates = _index_predicates(store.engine)
    assert set(predicates) == set(INDEXES)
    if store.engine.dialect.name in ("sqlite", "postgresql"):
        assert predicates == INDEXES
    else:
        assert predicates == dict.fromkeys(INDEXES)  # MariaDB has no partial indexes


def test_downgrade_to_0002_and_back_keeps_rows_and_key_uniqueness(empty_database: str) -> None:
    with SQLCheckpointer(empty_database) as store:
        _fill(store)
    engine = make_engine(empty_database, poolclass=sa.pool.NullPool)
    try:
        before = _rows(engine)
        migrate.downgrade(engine, "0002")
        assert _index_predicates(engine) == dict.fromkeys(INDEXES)
        assert _rows(engine) == before
        migrate.upgrade(engine)
        assert _rows(engine) == before
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                sa.insert(EventRecord).values(
                    run_id="keyed",
                    seq=99,
                    kind="tool_call",
                    ts=0.0,
                    lane_id="main",
                    data="{}",
                    key="k1",
                )
            )
    finally:
        engine.dispose()
    with SQLCheckpointer(empty_database) as store:
        assert store.event_by_key("keyed", "k3") is not None
        assert store.event_by_key("plain", "k3") is None
        assert store.list_runs(group="conversation") == ["keyed"]
        assert store.append("plain", [NewEvent(kind="tool_call", data={})])[0].seq == 6
