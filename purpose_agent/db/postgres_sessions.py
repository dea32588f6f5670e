"""Postgres sessions: fast on a direct connection, safe behind a pooler, told apart at connect.

On a direct connection the store wants server-side prepared statements (psycopg prepares a
statement after a few executions; planning the store's ``INSERT ... WITH`` each time costs
about as much as running it) and generic plans (a custom plan built from stale statistics can
turn a page read into a scan and sort of the rest of the run). Both are session state, which a
pooler in transaction mode does not keep: PgBouncer refuses the ``options`` startup parameter
(or ignores it, when told to), and a statement prepared on one server connection is missing,
or worse is another client's statement of the same name, on the next.

So every connection asks for a marker setting in its startup options and reads it back. A
direct connection has it: prepared statements and generic plans stay on. A refused or ignored
option means a pooler: the connection is opened again without options and without prepared
statements, and so is every later connection of the engine.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from sqlalchemy import Engine, event

from purpose_agent.db.network import postgres_parameters

MARKER = "purpose_agent.direct"
# READ COMMITTED whatever the database's or role's default_transaction_isolation: the store's
# writes serialise on row locks (an upsert of the run's row waits for the writer holding it,
# then takes the seqs after its), which REPEATABLE READ or SERIALIZABLE turn into
# serialization failures (40001) for writers of one run, and SERIALIZABLE's predicate locks
# for writers of different runs. A write transaction also says so in its BEGIN (see
# ``PostgresFlavor.begin_sql``), which reaches the server behind a pooler too.
#
# JIT off: a generic plan is costed without the statement's values, so on a table where one
# run holds most rows it expects a read of another run to return a share of the table, and a
# cost past jit_above_cost (100,000 by default) has the server compile the statement to
# machine code on every execution. recover() of a 100-event tail beside a 1,000,000-event run
# took 5-20 ms so, instead of 0.7 ms. The store's statements are reads and writes by key,
# which compiled expressions do not speed up.
_DIRECT_OPTIONS = (
    f"-c {MARKER}=on -c plan_cache_mode=force_generic_plan -c jit=off "
    r"-c default_transaction_isolation=read\ committed"
)
# What PgBouncer answers to a startup parameter it does not pass on (SQLSTATE 08P01 is any
# protocol violation, so the message decides).
_REFUSED = "unsupported startup parameter"


class SessionMode:
    """Whether an engine's connections reach Postgres directly or through a pooler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pooled = False

    def mark_pooled(self) -> None:
        """Remember that a pooler is in front: later connections skip the direct-only setup."""
        with self._lock:
            self.pooled = True


def configure_postgres(engine: Engine, *, synchronous_commit_off: bool) -> SessionMode:
    """Set up an engine's Postgres sessions as described above.

    Args:
        engine: An engine on ``postgresql+psycopg``.
        synchronous_commit_off: Ask for ``synchronous_commit = off`` on direct connections
            (``durability="normal"``); behind a pooler it is the role's setting to make.

    Returns:
        The engine's mode, which tests and operators can read (``.pooled``).

    """
    mode = SessionMode()
    options = _DIRECT_OPTIONS + (" -c synchronous_commit=off" if synchronous_commit_off else "")

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        # UTF-8 whatever the database's or role's client_encoding: under LATIN1 a run id or
        # key outside it failed in the driver (UnicodeEncodeError), and a SQL_ASCII database
        # answers in bytes, which SQLAlchemy cannot even read the server's version from. A
        # pooler passes client_encoding on. A URL that names one keeps it; so does a URL that
        # names one of the network limits (see network).
        cparams = postgres_parameters({"client_encoding": "utf8", **cparams})
        if not mode.pooled:
            given = str(cparams.get("options", ""))
            direct = {**cparams, "options": f"{given} {options}".strip()}
            try:
                connection = dialect.loaded_dbapi.connect(*cargs, **direct)
            except dialect.loaded_dbapi.OperationalError as exc:
                if _REFUSED not in str(exc):
                    raise
                mode.mark_pooled()
            else:
                try:
                    direct_session = _is_direct(connection)
                except BaseException:
                    # Cancelled (or failed) while it checked: the connection is nobody's, and
                    # left to the garbage collector psycopg warns that it was never closed.
                    with contextlib.suppress(Exception):
                        connection.close()
                    raise
                if direct_session:
                    return connection
                connection.close()  # a pooler that ignored the options
                mode.mark_pooled()
        return dialect.loaded_dbapi.connect(*cargs, **{**cparams, "prepare_threshold": None})

    return mode


def _is_direct(connection: Any) -> bool:
    # Closed by hand: the asyncio driver's adapted cursor is not a context manager in every
    # SQLAlchemy 2.0 release.
    cursor = connection.cursor()
    try:
        cursor.execute(f"SELECT current_setting('{MARKER}', true)")
        row = cursor.fetchone()
    finally:
        cursor.close()
    if not connection.autocommit:
        connection.rollback()  # the check must not leave a transaction open
    return bool(row and row[0] == "on")
