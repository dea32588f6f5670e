"""The errors a checkpointer raises.

Every failure a caller can act on is one of these, whatever the backend: driver exceptions
(sqlite3, psycopg, PyMySQL, OS errors) are translated at the store boundary and kept as
``__cause__`` so that nothing is lost for debugging.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class CheckpointError(Exception):
    """Base class of every error raised by ``purpose_agent`` stores."""


class InvalidInput(CheckpointError, ValueError):
    """A value that cannot be stored as given; nothing was written."""


class InvalidRunId(InvalidInput):
    """A run id that is empty, too long, or could address something other than one run."""


class StoreReadOnly(InvalidInput):
    """A write was sent to a store that only reads; nothing was written.

    An :class:`InvalidInput` because the request, not the store, is at fault: the same call on
    a current store would succeed.
    """


class SequenceConflict(CheckpointError):
    """``(run_id, seq)`` is already stored with different content; nothing was written.

    Attributes:
        run_id: The run whose log already holds the position.
        seq: The position that is taken.

    """

    def __init__(self, run_id: str, seq: int, reason: str | None = None) -> None:
        super().__init__(
            reason
            or (
                f"run {run_id!r} already has a different event at seq {seq}; "
                "another writer owns this run, or the caller reused a sequence number"
            )
        )
        self.run_id = run_id
        self.seq = seq
        self.reason = reason

    def __reduce__(self) -> tuple[type[SequenceConflict], tuple[str, int, str | None]]:
        return (type(self), (self.run_id, self.seq, self.reason))


class ThreadConflict(CheckpointError):
    """A LangGraph thread is already in the target store with other content; nothing was written.

    Importing a thread whose target copy is not a part of the source's (a checkpoint with the
    same id but other values, or checkpoints the source lacks while the source has new ones)
    would mix two histories into one; the importer refuses it instead.

    Attributes:
        thread_id: The thread.
        reason: What differs, in one line.

    """

    def __init__(self, thread_id: str, reason: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is already in the target with other content ({reason}); "
            "nothing of it was imported: delete it from the target to import it again, "
            "or leave it out"
        )
        self.thread_id = thread_id
        self.reason = reason

    def __reduce__(self) -> tuple[type[ThreadConflict], tuple[str, str]]:
        return (type(self), (self.thread_id, self.reason))


class CorruptRecord(CheckpointError):
    """A stored row or line cannot be decoded.

    Attributes:
        run_id: The run the record belongs to.
        seq: The record's sequence number, or ``None`` when it cannot be read.

    """

    def __init__(self, run_id: str, seq: int | None, detail: str) -> None:
        where = f"seq {seq}" if seq is not None else "an unreadable seq"
        super().__init__(f"corrupt record for run {run_id!r} at {where}: {detail}")
        self.run_id = run_id
        self.seq = seq
        self.detail = detail

    def __reduce__(self) -> tuple[type[CorruptRecord], tuple[str, int | None, str]]:
        return (type(self), (self.run_id, self.seq, self.detail))


class SchemaNotCurrent(CheckpointError):
    """The database schema is not at the revision this version of the package needs.

    Attributes:
        found: The revision the database is at (``None`` for a database never migrated).
        needed: The revision this version needs.
        command: What to run to fix it, as it works in this install.

    """

    def __init__(
        self, found: str | None, needed: str, command: str = "purpose-agent db upgrade"
    ) -> None:
        shown = found if found is not None else "none (never migrated)"
        super().__init__(
            f"database schema is at revision {shown}, this version needs {needed}; run `{command}`"
        )
        self.found = found
        self.needed = needed
        self.command = command

    def __reduce__(self) -> tuple[type[SchemaNotCurrent], tuple[str | None, str, str]]:
        return (type(self), (self.found, self.needed, self.command))


class SeedFormatDatabase(SchemaNotCurrent):
    """A SQLite file that holds runs in the seed's format, which the SQL store does not read.

    The store refuses to open it rather than add its own empty tables beside the seed's and
    list no runs; ``command`` imports the runs in place.
    """

    def __init__(self, found: str | None, needed: str, command: str) -> None:
        super().__init__(found, needed, command)
        self.args = (
            "this SQLite file holds runs in the seed's format (tables events and snapshots), "
            f"which the store does not read; import them with `{command}`",
        )


class SeedDefaultDatabase(SeedFormatDatabase):
    """The seed's default file holds runs, where ``SQLiteCheckpointer()`` now opens another.

    The seed's ``SQLiteCheckpointer()`` opened ``purpose_agent_checkpoints.db``; this package
    opens ``purpose_agent.db`` (or ``PURPOSE_AGENT_DB_URL``). Opening it while it does not exist
    yet, beside a seed file with runs, would start an empty store and the runs would seem gone.
    """

    def __init__(self, seed_file: str, default_file: str, command: str) -> None:
        super().__init__(None, default_file, command)
        self.args = (
            f"SQLiteCheckpointer() without a path opens {default_file}, which does not exist yet, "
            f"while the seed's default file {seed_file} here holds runs; import them with "
            f"`{command}`, or pass the path of the file to open",
        )


class SchemaUnclear(SchemaNotCurrent):
    """The version table records several revisions, which no upgrade of this package writes.

    Alembic would pick none of them, and the package cannot tell which one the tables are at:
    the message lists them, and the fix is to keep the row of the one they are at.
    """

    def __init__(self, found: str | None, needed: str, command: str) -> None:
        super().__init__(found, needed, command)
        self.args = (
            f"the version table records several revisions ({found}), this version needs "
            f"{needed}; keep only the row of the revision the tables are at ({command}), "
            "then open the store again",
        )


class SchemaMissing(SchemaNotCurrent):
    """The store's tables are gone from under an open store.

    The database was dropped and created again, or its schema downgraded, while the store was
    open: every statement fails the same way until the schema is made again, so it is
    reported as a schema to upgrade, not as an outage to wait out.

    Attributes:
        where: The store, password hidden.
        detail: The database's own words (``relation "pa_runs" does not exist``).

    """

    def __init__(self, needed: str, command: str, where: str, detail: str) -> None:
        super().__init__(None, needed, command)
        self.where = where
        self.detail = detail
        self.args = (
            f"the store's tables are missing from {where} ({detail}): the database was "
            "dropped and created again, or its schema downgraded, while the store was open; "
            f"run `{command}`",
        )

    def __reduce__(self) -> tuple[type[SchemaMissing], tuple[str, str, str, str]]:  # type: ignore[override]
        return (type(self), (self.needed, self.command, self.where, self.detail))


class SchemaDamaged(SchemaNotCurrent):
    """The version table records the head revision, but tables, columns or indexes are gone.

    Dropped or altered by hand, or by a restore that left part of the schema out: the store
    would fail on a missing table or column at some later call, and without the key index a
    retried keyed append would append a second event. ``purpose-agent db upgrade`` (and an
    open with ``migrate=True``) makes what is missing again, unless it held data that is gone.

    Attributes:
        where: The store, password hidden.
        missing: What the schema lacks (``index uq_pa_events_run_id_key on pa_events``).

    """

    def __init__(self, found: str | None, command: str, where: str, missing: str) -> None:
        super().__init__(found, found or "", command)
        self.where = where
        self.missing = missing
        self.args = (
            f"the schema of {where} is at revision {found} but lacks {missing} (dropped or "
            f"changed by hand); run `{command}`",
        )

    def __reduce__(self) -> tuple[type[SchemaDamaged], tuple[str | None, str, str, str]]:  # type: ignore[override]
        return (type(self), (self.found, self.command, self.where, self.missing))


class StoreUnavailable(CheckpointError):
    """The store could not be reached or refused the operation for a reason outside the data.

    Raised for a database that is down, a connection that was lost, a full disk or a permission
    error. The call may or may not have taken effect when the connection dropped during a
    commit; retrying a save is safe because an identical event is a no-op.
    """


def unavailable(
    action: str, where: str, exc: BaseException, advice: str | None = None
) -> StoreUnavailable:
    """The one wording of a failure outside the data: what was done, where, and the cause.

    Args:
        action: What was being done ("saving events").
        where: The store: a URL with the password hidden, or a folder.
        exc: The driver's or the OS's exception (SQLAlchemy's wrapper is unwrapped).
        advice: What to do about it, when the backend knows (see ``Flavor.advice``).

    Returns:
        The error to raise, with ``exc`` to be chained as its cause by the caller.

    """
    cause = getattr(exc, "orig", None) or exc
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return StoreUnavailable(
        f"{action} failed on {where}: {detail}" + (f"; {advice}" if advice else "")
    )


@contextlib.contextmanager
def translated(
    action: str,
    where: str,
    *kinds: type[BaseException],
    advice: Callable[[BaseException], str | None] | None = None,
) -> Iterator[None]:
    """Turn the given driver or OS errors raised inside the block into ``StoreUnavailable``.

    Every backend translates through this one block, so a caller sees the same wording and the
    same chaining whatever the store. Our own errors pass through untouched.

    Args:
        action: What was being done, for the message.
        where: The store, for the message.
        *kinds: The exception classes that mean "the store could not do it" for this backend
            (``OSError`` for files, ``SQLAlchemyError`` for databases).
        advice: What to do about an error, when the backend knows (see ``Flavor.advice``).

    Raises:
        StoreUnavailable: For an error of one of ``kinds`` inside the block.

    """
    try:
        yield
    except CheckpointError:
        raise
    except kinds as exc:
        raise unavailable(action, where, exc, None if advice is None else advice(exc)) from exc
