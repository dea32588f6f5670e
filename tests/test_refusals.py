"""Calls the contract refuses, refused the same way on every backend, before anything is written.

A value that cannot be stored as given is ``InvalidInput``, a bad run id ``InvalidRunId``,
whatever the backend and whatever state the store is in; never a bare ``TypeError`` or
``AttributeError``, and never ``StoreUnavailable``, which tells the caller to try again later.
The rows that take the ``backend`` fixture run on every backend of ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from purpose_agent import (
    AsyncSQLCheckpointer,
    Checkpointer,
    EventKind,
    InvalidInput,
    InvalidRunId,
    NewEvent,
    PAEvent,
    RunState,
    SQLCheckpointer,
)
from purpose_agent.testing import Backend
from purpose_agent.testing.samples import ev, st
from tests.servers import server_url, throwaway_database


@pytest.fixture
def cp(backend: Backend) -> Iterator[Checkpointer]:
    with backend.open() as store:
        yield store


def _nothing_written(cp: Checkpointer) -> None:
    assert cp.list_runs() == []
    assert cp.list_events("r") == []
    assert cp.load_latest("r") is None


@pytest.mark.parametrize("snapshot", [{"run_id": "r", "seq": 1}, "r", 5])
def test_a_snapshot_that_is_not_a_run_state_is_invalid_input(
    cp: Checkpointer, snapshot: Any
) -> None:
    """save_snapshot refuses a non-RunState with InvalidInput; save_events raised AttributeError."""
    with pytest.raises(InvalidInput):
        cp.save_events([ev("r", 1)], snapshot=snapshot)
    with pytest.raises(InvalidInput):
        cp.save_events([], snapshot=snapshot)
    _nothing_written(cp)


@pytest.mark.parametrize("events", [None, 5, 1.5])
def test_a_batch_that_is_not_an_iterable_is_invalid_input(cp: Checkpointer, events: Any) -> None:
    """A single event is refused with InvalidInput; None or a number raised a bare TypeError."""
    with pytest.raises(InvalidInput):
        cp.save_events(events)
    with pytest.raises(InvalidInput):
        cp.save_events(events, snapshot=st("r", 1))
    if hasattr(cp, "append"):
        with pytest.raises(InvalidInput):
            cp.append("r", events)
    _nothing_written(cp)


def test_integers_past_the_default_digit_limit_are_refused_whatever_the_process_allows(
    cp: Checkpointer,
) -> None:
    """The contract stops at Python's *default* 4,300 digits. A process that raised its own
    limit (sys.set_int_max_str_digits, PYTHONINTMAXSTRDIGITS) stored a longer integer, which
    every process with the default limit, this one included once it is reset, reads as a
    CorruptRecord: what was saved is not what is loaded."""
    before = sys.get_int_max_str_digits()
    try:
        sys.set_int_max_str_digits(0)
        calls: list[Callable[[], object]] = [
            lambda: cp.save_event(ev("r", 1, v=10**4300)),
            lambda: cp.save_events([ev("r", 1, v=[-(10**5000)])]),
            lambda: cp.save_snapshot("r", st("r", 1, v={"k": 10**4300})),
        ]
        if hasattr(cp, "append"):
            calls.append(
                lambda: cp.append("r", [NewEvent(kind=EventKind.CUSTOM, data={"v": 10**4300})])
            )
        for call in calls:
            with pytest.raises(InvalidInput):
                call()
    finally:
        sys.set_int_max_str_digits(before)
    _nothing_written(cp)


def test_a_closed_store_still_refuses_a_bad_run_id_as_invalid_run_id(backend: Backend) -> None:
    """Every method checks its run id on every backend: the sync stores do so after close();
    the asyncio store answered StoreUnavailable ('opening the store failed ... it is closed')."""
    store = backend.open()
    store.close()
    for call in (
        lambda: store.list_events("../x"),
        lambda: store.load_latest("a/b"),
        lambda: store.recover(""),
        lambda: store.delete_run(".."),
        lambda: store.save_snapshot("a\x00", RunState(run_id="ok")),
    ):
        with pytest.raises(InvalidRunId):
            call()


@pytest.mark.sqlite
def test_a_payload_over_sqlites_length_limit_is_invalid_input(tmp_path: Path) -> None:
    """MariaDB refuses a payload over max_allowed_packet with InvalidInput ('a value that cannot
    be stored as given'); SQLite's SQLITE_TOOBIG (1e9 bytes by default, lowered here to keep
    the test small) came out as StoreUnavailable, which tells the caller to try again later."""
    engine = sa.create_engine(f"sqlite:///{tmp_path}/limit.db")

    @sa.event.listens_for(engine, "connect")
    def _limit(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000)

    big = "x" * 2_000_000
    with SQLCheckpointer(engine) as store:
        for call in (
            lambda: store.save_event(ev("r", 1, v=big)),
            lambda: store.save_snapshot("r", st("r", 1, v=big)),
            lambda: store.save_events([ev("q", 1), ev("r", 1, v=big)]),
            lambda: store.append("r", [NewEvent(kind=EventKind.CUSTOM, data={"v": big})]),
        ):
            with pytest.raises(InvalidInput):
                call()
        assert store.list_runs() == []
    engine.dispose()


@pytest.mark.postgres
def test_a_run_id_a_latin1_database_cannot_hold_is_invalid_input_not_an_outage() -> None:
    """In a Postgres database created with ENCODING 'LATIN1', a run id such as '🙂' failed on
    every call, reads included, with StoreUnavailable (the server's 'has no equivalent in
    encoding LATIN1'): an outage to wait out, which never ends. Ids the encoding holds work."""
    with (
        server_url("postgres") as admin,
        throwaway_database(
            admin, "pa_latin1", "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ) as url,
        SQLCheckpointer(url) as store,
    ):
        for run_id in ("🙂", "a\u2028b", "é☃"):
            event = PAEvent(run_id=run_id, seq=1, kind=EventKind.CUSTOM, ts=1.0)
            with pytest.raises(InvalidInput, match="ENCODING 'UTF8'"):
                store.save_event(event)
            with pytest.raises(InvalidInput, match="ENCODING 'UTF8'"):
                store.list_events(run_id)
            with pytest.raises(InvalidInput, match="ENCODING 'UTF8'"):
                store.append(run_id, [NewEvent(kind=EventKind.CUSTOM)])
        assert store.list_runs() == []
        held = PAEvent(run_id="café", seq=1, kind=EventKind.CUSTOM, ts=1.0, data={"v": "🙂"})
        store.save_event(held)
        assert store.list_events("café") == [held]


@pytest.mark.postgres
def test_a_payload_over_postgres_message_limit_is_refused_before_it_is_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A value over Postgres's 1 GB message limit made the server close the connection: the
    store sent it again, then reported an outage (StoreUnavailable) after sending 2 GB. The
    limit is lowered here so that the test sends megabytes, not a gigabyte."""
    from purpose_agent.db.dialects import PostgresFlavor

    monkeypatch.setattr(PostgresFlavor, "payload_limit", 1_000_000)
    big = "x" * 2_000_000
    with (
        server_url("postgres") as admin,
        throwaway_database(admin, "pa_too_big") as url,
        SQLCheckpointer(url) as store,
    ):
        for call in (
            lambda: store.save_event(ev("r", 1, v=big)),
            lambda: store.save_snapshot("r", st("r", 1, v=big)),
            lambda: store.save_events([ev("q", 1), ev("r", 1, v=big)]),
            lambda: store.append("r", [NewEvent(kind=EventKind.CUSTOM, data={"v": big})]),
        ):
            with pytest.raises(InvalidInput, match="Postgres takes a statement of up to"):
                call()
        assert store.list_runs() == []
        store.save_event(ev("r", 1, v="x" * 500_000))
        assert store.list_runs() == ["r"]


@pytest.mark.sqlite
def test_the_async_store_refuses_a_bad_run_id_after_close(tmp_path: Path) -> None:
    """The asyncio store itself, without the test adapter."""

    async def main() -> None:
        store = await AsyncSQLCheckpointer.open(f"sqlite:///{tmp_path}/a.db")
        await store.close()
        with pytest.raises(InvalidRunId):
            await store.list_events("../x")

    asyncio.run(main())


@pytest.mark.parametrize("base_dir", [5, None, b"folder"])
def test_a_jsonl_store_given_no_path_is_invalid_input(base_dir: Any) -> None:
    """``SQLCheckpointer(5)`` is InvalidInput; ``JSONLCheckpointer(5)`` raised a bare TypeError."""
    from purpose_agent import JSONLCheckpointer

    with pytest.raises(InvalidInput, match="folder's path"):
        JSONLCheckpointer(base_dir)
