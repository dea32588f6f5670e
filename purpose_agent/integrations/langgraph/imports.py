"""Moving LangGraph threads from any checkpointer into a :class:`PurposeAgentSaver`.

A deployment that switches from LangGraph's ``PostgresSaver``, ``SqliteSaver`` or
``InMemorySaver`` must not lose its conversations or its interrupted runs. The source is read
through LangGraph's public saver API only (``list`` of a thread, which covers every namespace,
and ``get_tuple`` where a listing leaves the writes out), so any ``BaseCheckpointSaver`` can be
read; the target is written through the saver's own ``put`` and ``put_writes``, so what is
imported is stored exactly as if the graph had run on the target.

What carries over, per thread and namespace: every checkpoint with its id, parent, metadata,
channel values and versions, in the source's order (oldest first, so the target lists them
newest first as the source does), and each checkpoint's pending writes with their task ids.
LangGraph's public API gives the writes without their task paths but in their order
(``task_path``, ``task_id``, ``idx``), which is what LangGraph replays them in (a
``DeltaChannel`` is rebuilt from them): each task is given a path that keeps that order,
``<n>`` as ten digits, which also sorts before the real paths (``~...``) of writes added later;
the writes of no task (``update_state``, resume values) keep LangGraph's empty path. A task that
first writes at a checkpoint after an earlier import of it may sort among the others in
another place than in the source (its neighbours' paths are numbered already).

An import is resumed by running it again. Before writing a thread, its copy in the target is
read and compared: checkpoints present and equal are skipped, a task's writes present and
equal are skipped, and only what is missing is written, checkpoint before its writes, one
task's writes in one append. A target copy that is not a part of the source's (a checkpoint
with the same id and other content, or checkpoints the source lacks while the source has new
ones to add) is refused as :class:`~purpose_agent.errors.ThreadConflict`, never merged: two
histories in one thread would resume neither. A target that moved on after an import (the
graph ran there since) holds all the source has and more; it is left as it is. A thread the
source cannot load whole (a blob cut short, a serialization ``type`` its serializer does not
know, a row that loads as no checkpoint) is refused before anything of it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    CheckpointTuple,
    PendingWrite,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from purpose_agent.errors import (
    CheckpointError,
    InvalidInput,
    StoreUnavailable,
    ThreadConflict,
    translated,
)
from purpose_agent.integrations.langgraph.payloads import writes_key
from purpose_agent.integrations.langgraph.saver import PurposeAgentSaver

# The task LangGraph keeps writes of no task under (``update_state``, resume values); its
# constant is private since LangGraph 1.0, the value is in every saver's database.
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class ImportProgress:
    """Where an import stands, passed to the progress callback after every checkpoint.

    Attributes:
        thread_id: The thread being imported.
        threads_done: Threads finished so far (imported, found up to date, or refused).
        threads_total: Threads to import.
        checkpoints_done: Checkpoints written so far, over all threads.

    """

    thread_id: str
    threads_done: int
    threads_total: int
    checkpoints_done: int


@dataclass(frozen=True)
class ThreadProblem:
    """A thread that was not imported.

    Attributes:
        thread_id: The thread.
        message: Why, in one line.

    """

    thread_id: str
    message: str


@dataclass
class ImportReport:
    """What an import wrote and what it found already there.

    Attributes:
        threads_total: Threads read from the source.
        threads_imported: Threads into which something was written.
        threads_unchanged: Threads the target already held in full.
        checkpoints: Checkpoints written.
        writes: Pending writes written (each ``(channel, value)`` counts one).
        checkpoints_present: Source checkpoints found already in the target, with their
            writes (a re-run's or a resumed import's).
        checkpoints_completed: Source checkpoints found in the target without some of their
            writes (an import stopped between a checkpoint and its writes), whose missing
            writes were written; counted in ``writes``, not in ``checkpoints``.
        problems: Threads refused (a conflict, a row damaged in the source) or failed (a
            value the target refuses).

    """

    threads_total: int = 0
    threads_imported: int = 0
    threads_unchanged: int = 0
    checkpoints: int = 0
    writes: int = 0
    checkpoints_present: int = 0
    checkpoints_completed: int = 0
    problems: list[ThreadProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every thread is in the target in full."""
        return not self.problems


Progress = Callable[[ImportProgress], None]


# LangGraph's serializer, in strict msgpack mode (``LANGGRAPH_STRICT_MSGPACK``, its announced
# default), gives a type it does not allow back as its raw fields and says so only in an event
# (and a warning logged once per type); imported so, a pydantic model or an enum would resume
# as a dict.
_blocked: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "langgraph_import_blocked", default=None
)


def _note_blocked(event: Mapping[str, Any]) -> None:
    """Note a type the serializer refused, for the thread being read in this context."""
    seen = _blocked.get()
    if seen is not None and event.get("kind") == "msgpack_blocked":
        seen.append(f"{event.get('module')}.{event.get('name')}")


def _listening() -> Callable[[], None]:
    """Listen to the serializer's events; the function that stops listening."""
    try:
        from langgraph.checkpoint.serde.event_hooks import (  # noqa: PLC0415
            register_serde_event_listener,
        )
    except ImportError:  # a LangGraph without strict msgpack: nothing is ever refused
        return lambda: None
    return register_serde_event_listener(_note_blocked)


@contextlib.contextmanager
def _loaded_whole(thread_id: str) -> Iterator[None]:
    """Refuse a thread whose source values the source's serializer would not load.

    Raises:
        InvalidInput: The serializer gave back a value of a type it does not allow.
    """
    seen: list[str] = []
    token = _blocked.set(seen)
    stop = _listening()
    try:
        yield
    finally:
        stop()
        _blocked.reset(token)
    if seen:
        types = ", ".join(sorted(set(seen)))
        raise InvalidInput(
            f"the source's serializer will not load {types} of thread {thread_id!r} "
            "(strict msgpack): pass the source saver with them allowed "
            "(saver.with_allowlist([(module, name), ...])), or unset LANGGRAPH_STRICT_MSGPACK"
        )


def _source_errors() -> tuple[type[BaseException], ...]:
    """The driver errors LangGraph's own savers raise when their database fails."""
    kinds: list[type[BaseException]] = [sqlite3.Error, OSError]
    try:
        import psycopg  # noqa: PLC0415 - only where langgraph-checkpoint-postgres is used
    except ImportError:
        pass
    else:
        kinds.append(psycopg.Error)
    return tuple(kinds)


def _config(thread_id: str, namespace: str | None = None, checkpoint_id: str | None = None) -> Any:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if namespace is not None:
        configurable["checkpoint_ns"] = namespace
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _where(config: RunnableConfig) -> tuple[str, str]:
    configurable = config["configurable"]
    return configurable.get("checkpoint_ns", ""), configurable["checkpoint_id"]


# Listing every checkpoint to find the threads loads each one's values (PostgresSaver fetches
# the whole result, blobs and all, before the first row): LangGraph's own SQL savers are asked
# for the ids alone, newest thread first as a listing names them.
_THREAD_IDS = (
    "SELECT thread_id FROM checkpoints GROUP BY thread_id "
    "ORDER BY max(checkpoint_id) DESC, thread_id"
)


def _kind(source: BaseCheckpointSaver[Any]) -> tuple[str, str]:
    # The exact class: a subclass may keep its checkpoints elsewhere.
    return type(source).__module__, type(source).__qualname__


def _sql_thread_ids(source: Any) -> list[str] | None:
    """The threads of a ``SqliteSaver`` or ``PostgresSaver`` from its table, else ``None``."""
    kind = _kind(source)
    if kind == ("langgraph.checkpoint.sqlite", "SqliteSaver"):
        with source.cursor(transaction=False) as cursor:
            cursor.execute(_THREAD_IDS)
            return [str(row[0]) for row in cursor.fetchall()]
    if kind == ("langgraph.checkpoint.postgres", "PostgresSaver"):
        # The saver's own connection and lock; it has no public way to run a query.
        with source._cursor() as cursor:
            cursor.execute(_THREAD_IDS)
            return [str(row["thread_id"]) for row in cursor.fetchall()]
    return None


async def _asql_thread_ids(source: Any) -> list[str] | None:
    """:func:`_sql_thread_ids` for ``AsyncSqliteSaver`` and ``AsyncPostgresSaver``."""
    kind = _kind(source)
    if kind == ("langgraph.checkpoint.sqlite.aio", "AsyncSqliteSaver"):
        await source.setup()  # as its alist does: a new file has no tables yet
        async with source.lock, source.conn.execute(_THREAD_IDS) as cursor:
            return [str(row[0]) for row in await cursor.fetchall()]
    if kind == ("langgraph.checkpoint.postgres.aio", "AsyncPostgresSaver"):
        async with source._cursor() as cursor:
            await cursor.execute(_THREAD_IDS)
            return [str(row["thread_id"]) for row in await cursor.fetchall()]
    return None


def _asked(thread_ids: Iterable[str]) -> list[str]:
    """The threads asked for, each once, in the order given.

    Raises:
        InvalidInput: One id given alone (a ``str`` is an iterable of its characters: ``"tt"``
            would import the thread ``"t"``), or an id that is not a string.
    """
    if isinstance(thread_ids, (str, bytes)):
        raise InvalidInput(
            f"thread_ids must be a list of thread ids, not one {type(thread_ids).__name__}: "
            f"give [{thread_ids!r}]"
        )
    threads = list(dict.fromkeys(thread_ids))
    if any(not isinstance(thread, str) for thread in threads):
        raise InvalidInput("thread_ids must be strings")
    return threads


def _parent_id(found: CheckpointTuple) -> str | None:
    if found.parent_config is None:
        return None
    parent: str | None = found.parent_config["configurable"].get("checkpoint_id")
    return parent


_DAMAGED = "the source's copy of thread {thread_id!r} is damaged ({what}): {advice}"
_DAMAGE_ADVICE = "repair or delete it in the source, or leave it out"


@contextlib.contextmanager
def _loadable(thread_id: str, drivers: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Say a source row its saver cannot load as the thread's problem, not a crash.

    A checkpoint or write damaged in the source's database (a blob cut short, a ``type`` its
    serializer does not know, metadata that is no mapping) fails inside the source's own
    read with whatever its decoder raises: that thread is reported and the import goes on
    with the next, as for a value the target refuses. The driver's errors are the store's.

    Raises:
        InvalidInput: The source's read raised neither a driver error nor one of ours.
    """
    try:
        yield
    except CheckpointError:
        raise
    except drivers:
        raise
    except Exception as exc:
        what = f"{type(exc).__name__}: {exc}"
        raise InvalidInput(
            _DAMAGED.format(thread_id=thread_id, what=what, advice=_DAMAGE_ADVICE)
        ) from exc


def _damage(found: CheckpointTuple) -> str:
    """What makes a tuple the source loaded no checkpoint to resume from, or ``""``.

    A source saver loads a row into whatever it decodes to; what the import and the
    target's ``put`` read of it must be there, or the thread would fail half written.
    """
    checkpoint: Any = found.checkpoint
    if not isinstance(checkpoint, Mapping):
        return "a checkpoint that is not a mapping"
    _, checkpoint_id = _where(found.config)
    if checkpoint.get("id") != checkpoint_id:
        return f"checkpoint {checkpoint_id!r} names another id"
    for key in ("channel_values", "channel_versions", "versions_seen"):
        if not isinstance(checkpoint.get(key), Mapping):
            return f"checkpoint {checkpoint_id!r} has no {key}"
    if not isinstance(found.metadata, Mapping):
        return f"the metadata of checkpoint {checkpoint_id!r} is not a mapping"
    return ""


def _whole(thread_id: str, found: list[CheckpointTuple]) -> list[CheckpointTuple]:
    """The thread's tuples, each checked to be a checkpoint (see :func:`_damage`).

    Raises:
        InvalidInput: One is not.
    """
    for one in found:
        what = _damage(one)
        if what:
            raise InvalidInput(
                _DAMAGED.format(thread_id=thread_id, what=what, advice=_DAMAGE_ADVICE)
            )
    return found


class _Reading:
    """The source's reads, with its driver errors said as the store's own."""

    def __init__(self, source: BaseCheckpointSaver[Any], where: str) -> None:
        self.source = source
        self.where = where
        self.kinds = _source_errors()

    def thread_ids(self) -> list[str]:
        """Every thread of the source, in the order its listing first names them.

        LangGraph's API has no listing of threads: every checkpoint is read to find them,
        except in LangGraph's own SQL savers, whose table is asked.
        """
        seen: dict[str, None] = {}
        with translated("listing LangGraph threads", self.where, *self.kinds):
            listed = _sql_thread_ids(self.source)
            if listed is not None:
                return listed
            for found in self.source.list(None):
                seen.setdefault(str(found.config["configurable"]["thread_id"]), None)
        return list(seen)

    def thread(self, thread_id: str) -> list[CheckpointTuple]:
        """Every checkpoint of every namespace of the thread, each with its pending writes.

        Raises:
            InvalidInput: A checkpoint or write of the thread is damaged in the source.
        """
        with (
            translated(f"reading LangGraph thread {thread_id!r}", self.where, *self.kinds),
            _loadable(thread_id, self.kinds),
        ):
            listed = list(self.source.list(_config(thread_id)))
            return _whole(thread_id, [self._with_writes(found) for found in listed])

    def _with_writes(self, found: CheckpointTuple) -> CheckpointTuple:
        if found.pending_writes is not None:
            return found
        # A saver may leave the writes out of a listing; get_tuple must give them.
        again = self.source.get_tuple(found.config)
        writes = again.pending_writes if again is not None else None
        return found._replace(pending_writes=list(writes or []))


def _same(serde: SerializerProtocol, one: Any, other: Any) -> bool:
    """Equal, or serialized alike (a value whose class compares by identity)."""
    if one == other:
        return True
    try:
        return serde.dumps_typed(one) == serde.dumps_typed(other)
    except Exception:  # noqa: BLE001 - a value the serializer refuses is simply not equal
        return False


def _same_checkpoint(
    serde: SerializerProtocol, one: CheckpointTuple, other: CheckpointTuple
) -> str:
    """What differs between two tuples of the same checkpoint id (``""`` if nothing does)."""
    if _parent_id(one) != _parent_id(other):
        return "its parent"
    if not _same(serde, dict(one.metadata), dict(other.metadata)):
        return "its metadata"
    body = {k: v for k, v in one.checkpoint.items() if k != "channel_values"}
    stored = {k: v for k, v in other.checkpoint.items() if k != "channel_values"}
    if not _same(serde, body, stored):
        return "its channel versions or body"
    values, stored_values = one.checkpoint["channel_values"], other.checkpoint["channel_values"]
    if values.keys() != stored_values.keys():
        return "its channels"
    for channel, value in values.items():
        if not _same(serde, value, stored_values[channel]):
            return f"the value of channel {channel!r}"
    return ""


def _tasks(writes: Iterable[PendingWrite]) -> dict[str, list[tuple[str, Any]]]:
    """A checkpoint's writes by task, tasks and writes in the order given."""
    tasks: dict[str, list[tuple[str, Any]]] = {}
    for task_id, channel, value in writes:
        tasks.setdefault(task_id, []).append((channel, value))
    return tasks


Writes = list[tuple[str, Any]]


def _task_diff(serde: SerializerProtocol, given: Writes, stored: Writes) -> tuple[Writes, str]:
    """What of a task's writes the target lacks, and what it holds that the source does not.

    LangGraph keeps a task's first regular writes and replaces a special one (an interrupt,
    a resume value, an error) when the task writes it again: a task interrupted when it was
    imported and resumed in the source since has new regular writes and another interrupt.
    Regular writes are stored in one call (their positions count from 0), so a task that has
    some in the target cannot be given more.

    Returns:
        The writes to add (in the source's order), and ``""`` or why the target is ahead.
    """
    regular = [write for write in given if write[0] not in WRITES_IDX_MAP]
    held = [write for write in stored if write[0] not in WRITES_IDX_MAP]
    held_special = {channel: value for channel, value in stored if channel in WRITES_IDX_MAP}
    if held and not _same(serde, regular, held):
        return [], "other writes"
    if held_special.keys() - {channel for channel, _ in given}:
        return [], "writes the source has not"
    add = []
    for channel, value in given:  # in the source's order, the order LangGraph replays them in
        if channel not in WRITES_IDX_MAP:
            if not held:
                add.append((channel, value))
        elif channel not in held_special or not _same(serde, value, held_special[channel]):
            add.append((channel, value))
    return add, ""


@dataclass
class _Step:
    """One source checkpoint: whether to write it, and which writes of which tasks to add."""

    found: CheckpointTuple
    put: bool
    writes: dict[str, Writes]


@dataclass
class _Plan:
    """What one thread needs in the target, checkpoints in the order to write them.

    Attributes:
        steps: Per source checkpoint, what to write.
        present: Source checkpoints the target holds with every write.
        ahead: What the target holds that the source lacks (it moved on), or ``""``.

    """

    steps: list[_Step] = field(default_factory=list)
    present: int = 0
    ahead: str = ""

    @property
    def empty(self) -> bool:
        return not any(step.put or step.writes for step in self.steps)


def _plan(
    thread_id: str,
    source: list[CheckpointTuple],
    target: list[CheckpointTuple],
    serde: SerializerProtocol,
) -> _Plan:
    """Compare the thread's two copies and list what to write.

    Raises:
        ThreadConflict: A checkpoint differs between the two, or the target holds what the
            source lacks while the source has something to add.
    """
    stored = {_where(found.config): found for found in target}
    plan = _Plan()
    # Oldest first in each namespace, the root's first: the target's runs keep that order.
    for found in sorted(source, key=lambda found: _where(found.config)):
        namespace, checkpoint_id = _where(found.config)
        there = stored.pop((namespace, checkpoint_id), None)
        tasks = _tasks(found.pending_writes or [])
        if there is None:
            plan.steps.append(_Step(found, True, tasks))
            continue
        differs = _same_checkpoint(serde, found, there)
        if differs:
            raise ThreadConflict(thread_id, f"checkpoint {checkpoint_id!r} differs in {differs}")
        stored_tasks = _tasks(there.pending_writes or [])
        missing: dict[str, Writes] = {}
        for task_id, writes in tasks.items():
            add, ahead = _task_diff(serde, writes, stored_tasks.pop(task_id, []))
            if ahead:
                plan.ahead = plan.ahead or (
                    f"task {task_id!r} of checkpoint {checkpoint_id!r} has {ahead}"
                )
            elif add:
                missing[task_id] = add
        if stored_tasks:
            plan.ahead = plan.ahead or f"checkpoint {checkpoint_id!r} has writes of other tasks"
        plan.present += not missing
        plan.steps.append(_Step(found, False, missing))
    if stored:
        namespace, checkpoint_id = min(stored)
        plan.ahead = plan.ahead or f"it holds checkpoint {checkpoint_id!r}, which the source lacks"
    if plan.ahead:
        if any(step.put or _regular(step.writes) for step in plan.steps):
            raise ThreadConflict(thread_id, plan.ahead)
        # Only interrupts or resume values differ: the target moved on from them.
        plan.steps = []
    return plan


def _regular(tasks: Mapping[str, Writes]) -> bool:
    return any(channel not in WRITES_IDX_MAP for writes in tasks.values() for channel, _ in writes)


def _new_versions(found: CheckpointTuple, parent: CheckpointTuple | None) -> dict[str, Any]:
    """The channels this checkpoint changed: the ones its parent holds at another version."""
    versions = found.checkpoint["channel_versions"]
    if parent is None:
        return dict(versions)
    before = parent.checkpoint["channel_versions"]
    return {channel: v for channel, v in versions.items() if before.get(channel) != v}


def _paths(writes: Iterable[PendingWrite]) -> dict[str, str]:
    """A task path for each task that keeps the tasks in the source's order (see the module).

    The writes LangGraph keeps without a task (``update_state``, a resume value for every
    interrupt) have the empty path there too, and sort first; the others are numbered in
    order, so that a task keeps its path when the source gains such writes between two runs.
    """
    paths = {NULL_TASK_ID: ""}
    for task_id in _tasks(writes):
        paths.setdefault(task_id, f"{len(paths) - 1:010d}")
    return paths


class _Tally:
    """The report, added to from each thread being imported, and the progress it tells."""

    def __init__(self, report: ImportReport, progress: Progress | None) -> None:
        self.report = report
        self.progress = progress
        self.done = 0
        self._lock = threading.Lock()

    def add(
        self,
        thread_id: str,
        *,
        checkpoints: int = 0,
        writes: int = 0,
        present: int = 0,
        completed: int = 0,
        imported: bool = False,
        unchanged: bool = False,
        problem: str | None = None,
        done: bool = False,
    ) -> None:
        with self._lock:
            report = self.report
            report.checkpoints += checkpoints
            report.writes += writes
            report.checkpoints_present += present
            report.checkpoints_completed += completed
            report.threads_imported += imported
            report.threads_unchanged += unchanged
            if problem is not None:
                report.problems.append(ThreadProblem(thread_id, problem))
            self.done += done
            if self.progress is not None:
                step = ImportProgress(
                    thread_id, self.done, report.threads_total, report.checkpoints
                )
                self.progress(step)

    @contextlib.contextmanager
    def importing(self, thread_id: str, stop_on_conflict: bool) -> Iterator[None]:
        """Count the thread in, and done when the block ends, with what refused it if anything.

        A thread's own error (a conflict, a checkpoint the target refuses) becomes a problem in
        the report and the import goes on with the next thread; a conflict with
        ``stop_on_conflict`` and an unavailable store leave the block.
        """
        self.add(thread_id)
        problem = None
        try:
            yield
        except ThreadConflict as exc:
            if stop_on_conflict:
                raise
            problem = str(exc)
        except CheckpointError as exc:
            if isinstance(exc, StoreUnavailable):
                raise  # the store, not this thread: the next ones would fail alike
            problem = str(exc)
        self.add(thread_id, problem=problem, done=True)


@dataclass(frozen=True)
class _TaskWrites:
    """One task's writes to add to a checkpoint, as the saver's ``put_writes`` takes them.

    Attributes:
        config: The checkpoint's config.
        writes: What the plan found missing.
        task_id: The task.
        task_path: Its path (see :func:`_paths`).
        given: Every write of the task in the source, when the missing ones are stored
            without a key (see :meth:`missing`); ``None`` when they have one.

    """

    config: Any
    writes: Writes
    task_id: str
    task_path: str
    given: Writes | None

    def missing(self, serde: SerializerProtocol) -> Callable[[Writes], Writes]:
        """What the target lacks of the task's writes, given those it holds when written.

        Writes stored without a key (an interrupt, an error, a resume value) would be stored
        twice by two imports of the thread at once, each planned before the other wrote:
        they are compared again with the target's as the saver appends them, and appended
        only if the target's writes run did not change meanwhile.
        """
        given = self.given if self.given is not None else self.writes

        def lacking(held: Writes) -> Writes:
            add, ahead = _task_diff(serde, given, held)
            return [] if ahead else add

        return lacking


def _keyed(task_id: str, writes: Writes) -> bool:
    """Whether the saver stores these writes of a task with a key (see ``writes_key``)."""
    indexes = [WRITES_IDX_MAP.get(channel, idx) for idx, (channel, _) in enumerate(writes)]
    return writes_key(task_id, indexes) is not None


@dataclass
class _Call:
    """The saver calls one step of a plan makes: its checkpoint's ``put``, its tasks' writes."""

    checkpoint_id: str
    put: tuple[Any, ...] | None = None
    writes: list[_TaskWrites] = field(default_factory=list)

    @property
    def checkpoints(self) -> int:
        return int(self.put is not None)


def _calls(thread_id: str, plan: _Plan, source: list[CheckpointTuple]) -> Iterator[_Call]:
    """The arguments of each ``put`` and ``put_writes`` the plan needs, in order.

    Shared by the sync and the async import; steps that need no call are left out.
    """
    by_id = {_where(found.config): found for found in source}
    for step in plan.steps:
        found = step.found
        namespace, checkpoint_id = _where(found.config)
        call = _Call(checkpoint_id)
        if step.put:
            parent_id = _parent_id(found)
            parent = by_id.get((namespace, parent_id)) if parent_id is not None else None
            call.put = (
                _config(thread_id, namespace, parent_id),
                found.checkpoint,
                found.metadata,
                _new_versions(found, parent),
            )
        if step.writes:
            given = _tasks(found.pending_writes or [])
            paths = _paths(found.pending_writes or [])
            config = _config(thread_id, namespace, checkpoint_id)
            for task_id, writes in step.writes.items():
                unkeyed = None if _keyed(task_id, writes) else given[task_id]
                call.writes.append(_TaskWrites(config, writes, task_id, paths[task_id], unkeyed))
        if call.put is not None or call.writes:
            yield call


@contextlib.contextmanager
def _storable(call: _Call) -> Iterator[None]:
    """Say a value the target's serializer refuses as the thread's problem, not a crash.

    LangGraph's savers keep metadata as JSON, so a source may hold what the target's
    serializer cannot encode (an integer beyond 64 bits, say); that thread is reported and
    the import goes on with the next one, as for any other value the target refuses.

    Raises:
        InvalidInput: The serializer raised ``TypeError`` or ``ValueError``.
    """
    try:
        yield
    except CheckpointError:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"checkpoint {call.checkpoint_id!r} holds a value the target's serializer "
            f"refuses ({exc})"
        ) from exc


def _reported_plan(
    thread_id: str,
    source: list[CheckpointTuple],
    existing: list[CheckpointTuple],
    target: PurposeAgentSaver,
    tally: _Tally,
) -> _Plan | None:
    """The thread's plan, its present checkpoints counted; ``None`` if it writes nothing."""
    plan = _plan(thread_id, source, existing, target.serde)
    tally.add(thread_id, present=plan.present)
    if plan.empty:
        tally.add(thread_id, unchanged=True)
        return None
    return plan


def _count(tally: _Tally, thread_id: str, call: _Call, written: int) -> None:
    """Count one step of a plan: a checkpoint written, completed, or found whole after all.

    A checkpoint the target held without some of its writes is completed when they are
    written; if another import at once wrote them first, it is found there with them.
    """
    completed = present = 0
    if call.put is None:
        completed, present = (1, 0) if written else (0, 1)
    tally.add(
        thread_id,
        checkpoints=call.checkpoints,
        writes=written,
        completed=completed,
        present=present,
    )


def _write(
    thread_id: str,
    plan: _Plan,
    source: list[CheckpointTuple],
    target: PurposeAgentSaver,
    tally: _Tally,
) -> None:
    """Write what the plan lists: each checkpoint, then each task's missing writes."""
    for call in _calls(thread_id, plan, source):
        written = 0
        with _storable(call):
            if call.put is not None:
                target.put(*call.put)
            for task in call.writes:
                if task.given is None:
                    target.put_writes(task.config, task.writes, task.task_id, task.task_path)
                    written += len(task.writes)
                else:
                    written += target._put_missing_writes(
                        task.config, task.task_id, task.task_path, task.missing(target.serde)
                    )
        _count(tally, thread_id, call, written)


def import_threads(
    source: BaseCheckpointSaver[Any],
    target: PurposeAgentSaver,
    thread_ids: Iterable[str] | None = None,
    *,
    stop_on_conflict: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
    where: str | None = None,
) -> ImportReport:
    """Import LangGraph threads from any checkpointer into ``target``, resumably.

    Each thread is read whole from the source, compared with what the target holds of it,
    and what is missing is written (see the module): running the same import again, after
    a crash or to pick up threads that moved on in the source, writes nothing twice.

    Args:
        source: Any LangGraph checkpointer (``PostgresSaver``, ``SqliteSaver``,
            ``InMemorySaver``, another ``PurposeAgentSaver``).
        target: The saver to import into.
        thread_ids: The threads to import; every thread of the source when ``None`` (found
            by listing every checkpoint, LangGraph's API having no list of threads, or from
            the table of ``SqliteSaver`` and ``PostgresSaver`` and their async twins).
        stop_on_conflict: Raise the first :class:`ThreadConflict` instead of reporting it
            and going on with the next thread.
        workers: Threads imported at once. Each checkpoint and each task's writes is one
            transaction on the target, so a server database takes several at once faster
            than one after the other; a thread is always written by one worker, in order.
        progress: Called after every checkpoint written and every thread done (from the
            workers' threads when ``workers`` is above 1, one call at a time).
        where: How to name the source in errors (its URL, password hidden); the source's
            class name when omitted.

    Returns:
        The report; ``report.ok`` says whether every thread is now in the target in full.

    Raises:
        ThreadConflict: With ``stop_on_conflict``, the first thread refused.
        StoreUnavailable: The source or the target cannot be read or written (the import
            stops; run it again to go on).
        InvalidInput: ``workers`` below 1, or ``thread_ids`` one string or not strings.
    """
    if type(workers) is not int or workers < 1:
        raise InvalidInput(f"workers must be an int >= 1, got {workers!r}")
    reading = _Reading(source, where or type(source).__name__)
    threads = _asked(thread_ids) if thread_ids is not None else reading.thread_ids()
    tally = _Tally(ImportReport(threads_total=len(threads)), progress)

    def one(thread_id: str) -> None:
        with tally.importing(thread_id, stop_on_conflict):
            _import_thread(thread_id, reading, target, tally)

    if workers == 1:
        for thread_id in threads:
            one(thread_id)
        return tally.report
    with ThreadPoolExecutor(workers, thread_name_prefix="langgraph-import") as pool:
        futures = [pool.submit(one, thread_id) for thread_id in threads]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return tally.report


def _import_thread(
    thread_id: str, reading: _Reading, target: PurposeAgentSaver, tally: _Tally
) -> None:
    with _loaded_whole(thread_id):
        source = reading.thread(thread_id)
    if not source:
        tally.add(thread_id, problem="the source has no checkpoint of it")
        return
    existing = list(target.list(_config(thread_id)))
    plan = _reported_plan(thread_id, source, existing, target, tally)
    if plan is None:
        return
    _write(thread_id, plan, source, target, tally)
    tally.add(thread_id, imported=True)


# -- the async twin -------------------------------------------------------------------------


async def _athread(reading: _Reading, thread_id: str) -> list[CheckpointTuple]:
    """:meth:`_Reading.thread` through the source's async API."""
    source = reading.source
    with (
        translated(f"reading LangGraph thread {thread_id!r}", reading.where, *reading.kinds),
        _loadable(thread_id, reading.kinds),
    ):
        listed = [found async for found in source.alist(_config(thread_id))]
        complete = []
        for found in listed:
            if found.pending_writes is None:
                again = await source.aget_tuple(found.config)
                writes = again.pending_writes if again is not None else None
                found = found._replace(pending_writes=list(writes or []))  # noqa: PLW2901
            complete.append(found)
        return _whole(thread_id, complete)


async def _athread_ids(reading: _Reading) -> list[str]:
    """:meth:`_Reading.thread_ids` through the source's async API."""
    seen: dict[str, None] = {}
    with translated("listing LangGraph threads", reading.where, *reading.kinds):
        listed = await _asql_thread_ids(reading.source)
        if listed is not None:
            return listed
        async for found in reading.source.alist(None):
            seen.setdefault(str(found.config["configurable"]["thread_id"]), None)
    return list(seen)


async def _aimport_thread(
    thread_id: str, reading: _Reading, target: PurposeAgentSaver, tally: _Tally
) -> None:
    with _loaded_whole(thread_id):
        source = await _athread(reading, thread_id)
    if not source:
        tally.add(thread_id, problem="the source has no checkpoint of it")
        return
    existing = [found async for found in target.alist(_config(thread_id))]
    plan = _reported_plan(thread_id, source, existing, target, tally)
    if plan is None:
        return
    for call in _calls(thread_id, plan, source):
        written = 0
        with _storable(call):
            if call.put is not None:
                await target.aput(*call.put)
            for task in call.writes:
                if task.given is None:
                    await target.aput_writes(task.config, task.writes, task.task_id, task.task_path)
                    written += len(task.writes)
                else:
                    written += await target._aput_missing_writes(
                        task.config, task.task_id, task.task_path, task.missing(target.serde)
                    )
        _count(tally, thread_id, call, written)
    tally.add(thread_id, imported=True)


async def aimport_threads(
    source: BaseCheckpointSaver[Any],
    target: PurposeAgentSaver,
    thread_ids: Iterable[str] | None = None,
    *,
    stop_on_conflict: bool = False,
    workers: int = 1,
    progress: Progress | None = None,
    where: str | None = None,
) -> ImportReport:
    """:func:`import_threads` through the savers' async API (``alist``, ``aput``, ...).

    For a source that only works on an event loop (``AsyncPostgresSaver``,
    ``AsyncSqliteSaver``); ``workers`` threads are imported as concurrent tasks.

    Args:
        source: Any LangGraph checkpointer with the async methods.
        target: The saver to import into (on ``AsyncSQLCheckpointer`` for async drivers).
        thread_ids: As for :func:`import_threads`.
        stop_on_conflict: As for :func:`import_threads`.
        workers: Threads imported at once, as tasks on this loop.
        progress: As for :func:`import_threads`.
        where: As for :func:`import_threads`.

    Returns:
        The report.

    Raises:
        ThreadConflict: With ``stop_on_conflict``, the first thread refused.
        StoreUnavailable: The source or the target cannot be read or written.
        InvalidInput: ``workers`` below 1, or ``thread_ids`` one string or not strings.
    """
    if type(workers) is not int or workers < 1:
        raise InvalidInput(f"workers must be an int >= 1, got {workers!r}")
    reading = _Reading(source, where or type(source).__name__)
    threads = _asked(thread_ids) if thread_ids is not None else await _athread_ids(reading)
    tally = _Tally(ImportReport(threads_total=len(threads)), progress)
    pending = iter(threads)

    async def worker() -> None:
        # Each worker takes the next thread when it is done with one: threads stay whole.
        for thread_id in pending:
            with tally.importing(thread_id, stop_on_conflict):
                await _aimport_thread(thread_id, reading, target, tally)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(workers, len(threads)) or 1):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        # The others were cancelled: the caller gets the error, as from import_threads.
        raise failed.exceptions[0] from None
    return tally.report
