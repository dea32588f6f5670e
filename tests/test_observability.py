"""Every statement the SQL store runs is visible to SQLAlchemy's events, logging and tracing."""

from __future__ import annotations

import logging
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import create_engine, event

from purpose_agent import (
    CheckpointError,
    EventKind,
    PAEvent,
    RunState,
    SequenceConflict,
    SQLCheckpointer,
)

# What one step (three events and the state after them) costs, statement by statement.
STEP_STATEMENTS = {
    "sqlite": [
        "BEGIN IMMEDIATE",
        "INSERT INTO pa_runs",  # the run's row first, locked as an append locks it
        "INSERT INTO pa_events",
        "INSERT INTO pa_snapshots",
        "COMMIT",
    ],
    # Events, snapshot and run row are one statement (a WITH), in autocommit.
    "postgresql": ["WITH snapshot"],
    "mariadb": [
        "START TRANSACTION",
        "INSERT INTO pa_runs",  # the run's row first, locked as an append locks it
        "INSERT INTO pa_events",
        "INSERT INTO pa_snapshots",
        "COMMIT",
    ],
}


def _step(run_id: str) -> tuple[list[PAEvent], RunState]:
    events = [
        PAEvent(run_id=run_id, seq=seq, kind=EventKind.TOOL_CALL, ts=1.0, data={"n": seq})
        for seq in (1, 2, 3)
    ]
    return events, RunState(run_id=run_id, seq=3, data={"n": 3})


def _shape(statement: str) -> str:
    words = statement.split()
    if words[:2] == ["INSERT", "INTO"]:
        return " ".join(words[:3])
    if words[0] == "WITH":
        return " ".join(words[:2])
    return " ".join(words[:2]) if statement.startswith(("BEGIN ", "START ")) else words[0]


def _backend(store: SQLCheckpointer) -> str:
    name = store.engine.dialect.name
    return "mariadb" if name == "mysql" else name


def test_a_listener_sees_each_statement_of_a_step(empty_database: str) -> None:
    with SQLCheckpointer(empty_database) as store:
        seen: list[str] = []

        def record(*args: Any) -> None:
            seen.append(_shape(args[2]))

        event.listen(store.engine, "before_cursor_execute", record)
        events, state = _step("listened")
        store.save_events(events, snapshot=state)
        event.remove(store.engine, "before_cursor_execute", record)
        assert seen == STEP_STATEMENTS[_backend(store)]
        # With the listener gone the same step still lands (on the fast path) and is read back.
        events, state = _step("unlistened")
        store.save_events(events, snapshot=state)
        recovery = store.recover("unlistened")
        assert recovery is not None
        assert recovery.state == state
        assert seen == STEP_STATEMENTS[_backend(store)]


def test_engine_logging_shows_the_stores_statements(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with SQLCheckpointer(empty_database) as store:
        caplog.set_level(logging.INFO, logger="sqlalchemy.engine.Engine")
        store.save_event(PAEvent(run_id="logged", seq=1, kind=EventKind.CUSTOM, ts=1.0))
        assert store.list_events("logged")[0].seq == 1
    logged = [record.getMessage() for record in caplog.records]
    assert any("pa_events" in line and "INSERT" in line for line in logged), logged
    assert any("pa_events" in line and line.startswith("SELECT") for line in logged), logged


def test_an_events_data_is_in_no_log_line_and_no_error_a_listener_sees(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Statements' parameters are the events' data (an API key in a tool call's arguments):
    echo's log printed them, and so did the error of a failed write under a listener."""
    secret = "sk-do-not-log-4f2a"
    with SQLCheckpointer(empty_database) as store:
        caplog.set_level(logging.INFO, logger="sqlalchemy.engine.Engine")
        store.save_event(PAEvent(run_id="r", seq=1, kind=EventKind.CUSTOM, data={"key": secret}))
        assert store.list_events("r")[0].data == {"key": secret}
        seen: list[str] = []

        def fail(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> Any:
            # The snapshot's own statement, with its parameters, fails in the database.
            if "pa_snapshots" in statement and not statement.lstrip().upper().startswith("SELECT"):
                statement = statement.replace("pa_snapshots", "pa_no_such_table")
            return statement, parameters

        event.listen(store.engine, "before_cursor_execute", fail, retval=True)
        event.listen(
            store.engine,
            "handle_error",
            lambda context: seen.append(str(context.sqlalchemy_exception)),
        )
        with pytest.raises(CheckpointError):
            store.save_snapshot("r", RunState(run_id="r", seq=1, data={"key": secret}))
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "pa_events" in logged
    assert secret not in logged
    assert seen
    assert not [error for error in seen if secret in error]


def test_opentelemetry_records_a_span_per_statement(empty_database: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with SQLCheckpointer(empty_database) as store:
        instrumentor = SQLAlchemyInstrumentor()
        # The instrumentation declares SQLAlchemy < 2.1; its event hooks work on 2.1 unchanged.
        instrumentor.instrument(engine=store.engine, tracer_provider=provider, skip_dep_check=True)
        try:
            events, state = _step("traced")
            store.save_events(events, snapshot=state)
            assert store.recover("traced") is not None
        finally:
            instrumentor.uninstrument()
    statements = [
        str(span.attributes.get("db.statement", "")) for span in exporter.get_finished_spans()
    ]
    writes = [
        _shape(text) for text in statements if "pa_" in text and not text.startswith("SELECT")
    ]
    expected = [
        shape
        for shape in STEP_STATEMENTS[_backend(store)]
        if shape not in ("BEGIN", "BEGIN IMMEDIATE", "START TRANSACTION", "COMMIT")
    ]
    assert writes == expected, statements
    assert any(text.startswith("SELECT") and "pa_snapshots" in text for text in statements)


def test_a_bounded_read_is_one_query_the_database_bounds(empty_database: str) -> None:
    with SQLCheckpointer(empty_database) as store:
        store.save_events(
            PAEvent(run_id="long", seq=seq, kind=EventKind.TOOL_CALL, ts=1.0)
            for seq in range(1, 501)
        )
        seen: list[str] = []

        def record(*args: Any) -> None:
            seen.append(args[2])

        event.listen(store.engine, "before_cursor_execute", record)
        newest = store.list_events("long", newest_first=True, limit=3, kinds=[EventKind.TOOL_CALL])
        event.remove(store.engine, "before_cursor_execute", record)
    assert [e.seq for e in newest] == [500, 499, 498]
    assert len(seen) == 1
    assert "ORDER BY pa_events.seq DESC" in seen[0]
    assert "LIMIT" in seen[0]


def test_a_handle_error_listener_sees_the_driver_error_behind_a_conflict(
    empty_database: str,
) -> None:
    """``handle_error`` is a dialect event, which the check for observers did not look at: the
    statements ran on the driver's cursor, and the listener was never called."""
    seen: list[str] = []
    with SQLCheckpointer(empty_database) as store:
        event.listen(
            store.engine,
            "handle_error",
            lambda context: seen.append(type(context.original_exception).__name__),
        )
        store.save_event(PAEvent(run_id="clash", seq=1, kind=EventKind.CUSTOM, ts=1.0))
        with pytest.raises(SequenceConflict):
            store.save_event(PAEvent(run_id="clash", seq=1, kind=EventKind.CUSTOM, ts=2.0))
        assert [e.ts for e in store.list_events("clash")] == [1.0]
    assert seen
    assert all("Integrity" in name or "UniqueViolation" in name for name in seen), seen


def test_an_engine_logging_under_its_own_name_shows_the_stores_statements(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy logs an engine with a ``logging_name`` to a child logger, which the check
    for observers did not ask: only the statements of the migration check were logged."""
    engine = create_engine(empty_database, logging_name="store")
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine.Engine.store")
    try:
        with SQLCheckpointer(engine) as store:
            store.save_event(PAEvent(run_id="named", seq=1, kind=EventKind.CUSTOM, ts=1.0))
            assert store.list_events("named")[0].seq == 1
    finally:
        engine.dispose()
    logged = [r.getMessage() for r in caplog.records if r.name == "sqlalchemy.engine.Engine.store"]
    assert any("pa_events" in line and "INSERT" in line for line in logged), logged
    assert any("pa_events" in line and line.startswith("SELECT") for line in logged), logged


_INSTRUMENTED_LATE = """
import sys
from purpose_agent import PAEvent, SQLCheckpointer  # imported first, as an application does
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
with SQLCheckpointer(sys.argv[1]) as store:
    store.save_event(PAEvent(run_id="late", seq=1, kind="custom", ts=1.0))
spans = exporter.get_finished_spans()
print(sum("INSERT INTO pa_events" in str(s.attributes.get("db.statement", "")) for s in spans))
"""


def test_instrumenting_every_engine_after_the_package_is_imported_traces_the_store(
    empty_database: str,
) -> None:
    """OpenTelemetry's global instrumentation wraps ``sqlalchemy.create_engine``; the store
    called the function it had imported before, so its engines were never traced."""
    found = subprocess.run(
        [sys.executable, "-c", _INSTRUMENTED_LATE, empty_database],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    assert int(found.stdout) >= 1
