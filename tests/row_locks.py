"""A run's row held by another session, as a busy writer holds it, and writes that wait for it.

The server tests that prove what a store does while it waits for a lock (refuses past a limit,
or writes in the right order once it ends) share these steps.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import EventKind, NewEvent, SQLCheckpointer, StoreUnavailable
from purpose_agent.db.models import RunRecord

# Sessions of one database that wait for a lock, by dialect family (see :func:`family`).
_LOCK_WAITS = {
    "postgresql": (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND wait_event_type = 'Lock'"
    ),
    "mysql": (
        "SELECT count(*) FROM information_schema.innodb_trx t"
        " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
        " WHERE p.db = :d AND t.trx_state = 'LOCK WAIT'"
    ),
}


def family(engine: sa.Engine) -> str:
    """``postgresql`` or ``mysql``: a ``mariadb://`` URL's dialect is named ``mariadb``."""
    return "mysql" if engine.dialect.name in ("mysql", "mariadb") else engine.dialect.name


def hold_run(conn: sa.Connection, run_id: str) -> None:
    """Lock the run's row in ``conn``'s transaction, until it rolls back or commits."""
    conn.execute(
        sa.select(RunRecord.run_id).where(RunRecord.run_id == run_id).with_for_update()
    ).all()


def wait_for_a_lock_wait(engine: sa.Engine, database: str | None, what: str) -> None:
    """Return once a session of ``database`` waits for a lock; fail the test after a minute.

    Args:
        engine: An engine on the server, for a session of its own that watches.
        database: The database whose sessions are watched.
        what: What should be waiting, for the failure's message.
    """
    with engine.connect() as watcher:
        for _ in range(240):
            found = watcher.execute(sa.text(_LOCK_WAITS[family(engine)]), {"d": database})
            if found.scalar_one():
                return
            watcher.rollback()  # the activity views are read once per transaction
            time.sleep(0.25)  # InnoDB refreshes innodb_trx once unread for 0.1 s
    pytest.fail(f"{what} never waited for the lock")


def refused_append(store: SQLCheckpointer, server: URL) -> str:
    """Append to run ``r`` while another session holds its row: the refusal's message.

    The store's settings must end the wait (a lock or statement timeout); the append that was
    refused must leave nothing behind.

    Args:
        store: The store whose settings are tested.
        server: The database's URL without those settings, for the session that holds the row.
    """
    store.append("r", [NewEvent(kind=EventKind.CUSTOM)])
    holder = sa.create_engine(server, poolclass=sa.pool.NullPool)
    try:
        with holder.connect() as conn:
            hold_run(conn, "r")
            with pytest.raises(StoreUnavailable) as refused:
                store.append("r", [NewEvent(kind=EventKind.CUSTOM)])
            conn.rollback()
    finally:
        holder.dispose()
    assert store.last_seq("r") == 1
    return str(refused.value)
