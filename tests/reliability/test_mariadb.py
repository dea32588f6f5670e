"""MariaDB: killed connections, oversized values and outages on a private server."""

from __future__ import annotations

import functools
import re
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import CheckpointError, InvalidInput, NewEvent, SQLCheckpointer, StoreUnavailable
from purpose_agent.testing.suite import ev, st
from tests.reliability.workload import (
    CALM,
    attempt,
    describe,
    foreign,
    kill_mariadb_connections,
    outage_under_load,
    storm_under_load,
)
from tests.servers import LocalMariaDB

pytestmark = [pytest.mark.reliability, pytest.mark.mariadb]


def test_killed_pooled_connection_costs_at_most_the_call_in_flight(
    private_mariadb: LocalMariaDB, mariadb_db: URL
) -> None:
    with SQLCheckpointer(mariadb_db) as store:
        store.save_event(ev("r", 1))
        assert kill_mariadb_connections(private_mariadb.url, str(mariadb_db.database)) != []
        outcomes = [attempt(lambda seq=seq: store.save_event(ev("r", seq))) for seq in range(2, 32)]
        shown = [describe(error) for error in outcomes]
        assert foreign([error for error in outcomes if error is not None]) == [], shown
        assert isinstance(outcomes[0], StoreUnavailable | None), shown
        assert shown[1:] == ["ok"] * 29, shown
        saved = {1} | {seq for seq, error in zip(range(2, 32), outcomes, strict=True) if not error}
        stored = {event.seq for event in store.list_events("r")}
        assert saved <= stored
        assert store.list_events("r") == [ev("r", seq) for seq in sorted(stored)]


def _numbers(text: str) -> set[float]:
    return {float(found.replace(",", "")) for found in re.findall(r"\d[\d,]*(?:\.\d+)?", text)}


def _bytes_received(admin: URL) -> int:
    """What the whole server has read from its clients: this module's server is private."""
    engine = sa.create_engine(admin, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Bytes_received'").one()
            return int(row[1])
    finally:
        engine.dispose()


def test_snapshot_over_max_allowed_packet_is_refused_before_it_is_sent_and_clearly(
    private_mariadb: LocalMariaDB, mariadb_db: URL
) -> None:
    size = 20 * 1024 * 1024  # the server's max_allowed_packet is left at its 16 MiB default
    state = st("r", 1, blob="x" * size)
    with SQLCheckpointer(mariadb_db) as store:
        store.list_events("r")  # the store's connection and its limit, before the count starts
        received = _bytes_received(private_mariadb.url)
        started = time.monotonic()
        error = attempt(lambda: store.save_snapshot("r", state))
        elapsed = time.monotonic() - started
        sent = _bytes_received(private_mariadb.url) - received
        message = str(error)
        numbers = _numbers(message)
        after = attempt(lambda: store.save_event(ev("r", 1)))
        seen = {
            "is a CheckpointError": isinstance(error, CheckpointError),
            "names max_allowed_packet": "max_allowed_packet" in message,
            # The limit (16777216 bytes, or 16 MiB) and the payload (about 20 MiB).
            "names the limit": bool(numbers & {16_777_216.0, 16.0}),
            "names the size": any(19 <= n <= 21 or 20_000_000 <= n <= 22_000_000 for n in numbers),
            # Refused by the store, not by the server after 20 MiB crossed the wire (which
            # costs the connection too). Only a hang (a retry loop) could take 30 s.
            "sent under 1 MiB": sent < 1024 * 1024,
            "returned within 30 s": elapsed < 30.0,
            "next call": describe(after),
        }
        assert seen == {
            "is a CheckpointError": True,
            "names max_allowed_packet": True,
            "names the limit": True,
            "names the size": True,
            "sent under 1 MiB": True,
            "returned within 30 s": True,
            "next call": "ok",
        }, f"{describe(error)} (after {elapsed:.2f} s, {sent:,} bytes sent)"
        assert store.list_events("r") == [ev("r", 1)]
        assert store.load_latest("r") is None


def test_an_append_over_max_allowed_packet_names_the_event_by_its_place_in_the_call(
    mariadb_db: URL,
) -> None:
    """An append's seqs are not chosen when it is refused: it named every event "seq 1"."""
    with SQLCheckpointer(mariadb_db) as store:
        store.save_events([ev("r", seq) for seq in (1, 2, 3)])
        small, big = NewEvent(kind="custom"), NewEvent(kind="custom", data={"x": "x" * 17_000_000})
        with pytest.raises(InvalidInput) as refused:
            store.append("r", [small, big])
        assert "run 'r', event 2 of 2 appended: event data is 17,000,0" in str(refused.value)
        assert "seq" not in str(refused.value).split(":")[0]
        assert [event.seq for event in store.list_events("r")] == [1, 2, 3]


@pytest.mark.parametrize("outage", ["restart", "stop-start"])
def test_writers_under_load_lose_nothing_across_an_outage(
    private_mariadb: LocalMariaDB, mariadb_db: URL, outage: str
) -> None:
    outage_under_load(mariadb_db, private_mariadb, outage)


def test_a_kill_storm_under_write_load_loses_nothing(
    private_mariadb: LocalMariaDB, mariadb_db: URL
) -> None:
    database = mariadb_db.database or ""
    with SQLCheckpointer(mariadb_db) as store:
        kill = functools.partial(kill_mariadb_connections, private_mariadb.url, database)
        assert storm_under_load(store, kill) == CALM


@pytest.mark.parametrize("driver", ["mysql+pymysql", "mariadb+pymysql"])
def test_a_server_whose_default_row_format_is_compact_gets_the_stores_tables(
    private_mariadb: LocalMariaDB, mariadb_db: URL, driver: str
) -> None:
    """COMPACT rows take index keys up to 767 bytes: the first open failed on the 1,020-byte
    primary key (1709, "Index column size too large")."""
    admin = sa.create_engine(private_mariadb.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("SET GLOBAL innodb_default_row_format = 'compact'")
        try:
            with SQLCheckpointer(mariadb_db.set(drivername=driver)) as store:
                store.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2))
                assert store.list_events("r") == [ev("r", 1), ev("r", 2)]
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql("SET GLOBAL innodb_default_row_format = 'dynamic'")
        with admin.connect() as conn:
            formats = conn.exec_driver_sql(
                "SELECT DISTINCT row_format FROM information_schema.tables "
                f"WHERE table_schema = '{mariadb_db.database}' "
                "AND table_name IN ('pa_events', 'pa_runs', 'pa_snapshots')"
            ).all()
        assert formats == [("Dynamic",)]
    finally:
        admin.dispose()
