"""``PurposeAgentSaver``: LangGraph's ``BaseCheckpointSaver`` over a purpose_agent store."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from purpose_agent import (
    AsyncSQLCheckpointer,
    Checkpointer,
    InvalidInput,
    PAEvent,
    SequenceConflict,
    SQLCheckpointer,
)
from purpose_agent.integrations.langgraph import (
    calls,
    channels,
    history,
    maintenance,
    payloads,
    runs,
)
from purpose_agent.integrations.langgraph.calls import Op, Stream
from purpose_agent.integrations.langgraph.reads import Reader, config_for

if TYPE_CHECKING:  # LangGraph releases before DeltaChannel lack it
    from langgraph.checkpoint.base import DeltaChannelHistory

T = TypeVar("T")

Missing = Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]
"""Given a task's writes as stored, ``(channel, value)``, the writes to add to them."""

# What the saver calls beyond the Checkpointer protocol, and the keyword arguments it passes.
_NEEDED = {
    "append": ("group", "expected_last_seq"),
    "event_by_key": (),
    "last_seq": (),
    "list_events": ("before", "newest_first"),
    "list_runs": ("group", "prefix"),
    "compact": (),
    "delete_runs": ("group",),
    "save_snapshot": (),
}


def _writer(config: RunnableConfig) -> Any:
    """The LangGraph run a call belongs to, found where its checkpoints' metadata finds it."""
    for part in (config.get("metadata"), config.get("configurable")):
        if part and "run_id" in part:
            return part["run_id"]
    return None


def _ids(ids: Sequence[Any], what: str) -> list[Any]:
    """A sequence of ids as a list; one ``str`` would otherwise be taken as its characters."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of ids, not one {type(ids).__name__}: {ids!r}")
    return list(ids)


def _missing(store: object) -> list[str]:
    """The methods (or their arguments) the store lacks, named for an error message."""
    missing = []
    for name, keywords in _NEEDED.items():
        method = getattr(store, name, None)
        if not callable(method):
            missing.append(f"{name}()")
            continue
        parameters = inspect.signature(method).parameters
        missing += [f"{name}({keyword}=...)" for keyword in keywords if keyword not in parameters]
    return missing


class PurposeAgentSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer that keeps each thread as a group of runs of a store.

    A thread is the group ``lg:<thread>`` (see :mod:`~purpose_agent.integrations.langgraph.runs`):
    one run per namespace holds its checkpoints, in the order they were saved, each keyed by
    its id; one run per checkpoint holds the pending writes LangGraph keyed to it, whether
    they arrive before the checkpoint, with it or several checkpoints late (LangGraph sends
    them concurrently with ``put``). ``put`` and ``put_writes`` are one append each, and keys
    make a retried call store nothing twice; ``put`` reads its parent first only when this
    saver did not store it (see :mod:`~purpose_agent.integrations.langgraph.channels`).
    ``get_tuple`` by id is a key lookup plus the checkpoint's writes; the latest, and
    ``list(limit=N)``, a newest-first read limited by the database. What the saver keeps in
    memory spares ``put`` that read and nothing else, so any number of savers, in any number
    of processes, share a store.

    Args:
        store: A store with appends, event keys, run groups and retention:
            ``SQLCheckpointer``, ``AsyncSQLCheckpointer`` (whose async methods serve the
            saver's async methods), ``JSONLCheckpointer`` or ``InMemoryCheckpointer``.
        serde: LangGraph's serializer for checkpoint and write values; LangGraph's default
            (``JsonPlusSerializer``) when omitted.

    Raises:
        InvalidInput: The store lacks a method the saver needs.
    """

    def __init__(
        self,
        store: Checkpointer | AsyncSQLCheckpointer,
        *,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._async: AsyncSQLCheckpointer | None = None
        if isinstance(store, AsyncSQLCheckpointer):
            # Its synchronous twin (a second engine, connected and migrated as it is built)
            # serves the synchronous methods only, so it is built when one is first called:
            # built here, it blocked the event loop while it connected, failed the saver
            # while the database was down (the async store itself opens on its first
            # call), and held a connection the async methods never use.
            self._async = store
            self._synchronous: Callable[[], Checkpointer] = lambda: store.sync
        else:
            self._synchronous = lambda: store
        missing = _missing(store)
        if missing:
            raise InvalidInput(
                f"{type(store).__name__} cannot hold LangGraph threads: it lacks "
                f"{', '.join(missing)}; use SQLCheckpointer, AsyncSQLCheckpointer, "
                "JSONLCheckpointer or InMemoryCheckpointer"
            )
        self._readers = Reader(self.serde)
        self._last_stored = channels.LastStored()

    @property
    def store(self) -> Checkpointer:
        """The store the synchronous methods use.

        The store given, or for an ``AsyncSQLCheckpointer`` its synchronous twin
        (:attr:`AsyncSQLCheckpointer.sync`), built when first used.
        """
        return self._synchronous()

    @classmethod
    @contextlib.contextmanager
    def from_url(
        cls, url: str, *, serde: SerializerProtocol | None = None, **store_options: Any
    ) -> Iterator[PurposeAgentSaver]:
        """A saver on a new ``SQLCheckpointer(url, **store_options)``, closed on exit.

        Args:
            url: A SQLAlchemy URL (SQLite, Postgres through psycopg, MariaDB).
            serde: As for the class.
            **store_options: Passed to ``SQLCheckpointer``.

        Yields:
            The saver.
        """
        store = SQLCheckpointer(url, **store_options)
        try:
            yield cls(store, serde=serde)
        finally:
            store.close()

    @classmethod
    @contextlib.asynccontextmanager
    async def afrom_url(
        cls, url: str, *, serde: SerializerProtocol | None = None, **store_options: Any
    ) -> AsyncIterator[PurposeAgentSaver]:
        """A saver on a new ``AsyncSQLCheckpointer(url, **store_options)``, closed on exit.

        For graphs run with ``ainvoke``/``astream``, as LangGraph's
        ``AsyncPostgresSaver.from_conn_string`` is: the saver's async methods run on the
        asyncio drivers, and the store is opened (connected, migrated) before the block.

        Args:
            url: A SQLAlchemy URL (SQLite, Postgres through psycopg, MariaDB).
            serde: As for the class.
            **store_options: Passed to ``AsyncSQLCheckpointer`` (``group_commit=True``, ...).

        Yields:
            The saver.
        """
        store = await AsyncSQLCheckpointer.open(url, **store_options)
        try:
            yield cls(store, serde=serde)
        finally:
            await store.close()

    @property
    def _reader(self) -> Reader:
        # ``compile()`` calls ``with_allowlist``, which returns a shallow copy with another
        # serializer (the state schema's types allowed): the copy must read with its own.
        reader = self._readers
        if reader.serde is not self.serde:
            reader = self._readers = Reader(self.serde)
        return reader

    # -- running operations ---------------------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        return calls.run(self.store, op)

    async def _arun(self, op: Op[T]) -> T:
        if self._async is not None:
            return await calls.arun(self._async, op)
        # A synchronous store: the whole operation in one worker thread.
        return await asyncio.to_thread(calls.run, self.store, op)

    async def _astream(self, listing: Stream) -> AsyncIterator[CheckpointTuple]:
        if self._async is not None:
            async for found in calls.astream(self._async, listing):
                yield found
            return
        results = calls.stream(self.store, listing)
        done = object()
        while (item := await asyncio.to_thread(next, results, done)) is not done:
            yield item  # type: ignore[misc]

    # -- the operations -------------------------------------------------------------------

    def _get_tuple(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        configurable = config["configurable"]
        return self._reader.get_tuple(
            configurable["thread_id"],
            configurable.get("checkpoint_ns", ""),
            get_checkpoint_id(config) or None,  # "" names none, as in LangGraph's savers
        )

    def _listing(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
        store: object,
    ) -> Stream:
        only = None
        run_ids: Op[list[str]] | list[str]
        if config is None:
            run_ids = calls.list_runs(prefix=runs.PREFIX)
        else:
            configurable = config["configurable"]
            thread_id = configurable["thread_id"]
            namespace = configurable.get("checkpoint_ns")
            if namespace is None:
                run_ids = calls.list_runs(group=runs.group_for(thread_id), prefix=runs.PREFIX)
            else:
                run_ids = [runs.run_id_for(thread_id, namespace)]
            only = get_checkpoint_id(config) or None
        return self._reader.listing(
            run_ids,
            only=only,
            before_id=(get_checkpoint_id(before) or None) if before else None,
            wanted=filter or {},
            limit=limit,
            batched=callable(getattr(store, "events_of_runs", None)),
        )

    def _delta_history(
        self, config: RunnableConfig, channels: Sequence[str], store: object
    ) -> Op[Mapping[str, DeltaChannelHistory]]:
        configurable = config["configurable"]
        return history.delta_history(
            self._reader,
            configurable["thread_id"],
            configurable.get("checkpoint_ns", ""),
            get_checkpoint_id(config) or None,
            channels,
            batched=callable(getattr(store, "events_of_runs", None)),
        )

    def _put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns", "")
        run_id = runs.run_id_for(thread_id, namespace)
        where = (str(thread_id), namespace)
        parent_id = configurable.get("checkpoint_id")
        values = checkpoint["channel_values"]
        parent = None
        if parent_id is not None and any(channel not in new_versions for channel in values):
            parent = yield from channels.parent_of(
                self.serde, run_id, parent_id, self._last_stored, where
            )
        stored = channels.to_store(
            self.serde, values, checkpoint["channel_versions"], new_versions, parent
        )
        merged = get_checkpoint_metadata(config, metadata)
        run = merged.get("run_id")
        event = payloads.checkpoint(
            checkpoint["id"],
            parent_id,
            payloads.dump(self.serde, {**checkpoint, "channel_values": {}}),
            payloads.dump(self.serde, merged),
            values={channel: value for channel, (_, value) in stored.items()},
            step=merged.get("step"),
            run_id=str(run) if run is not None else None,
            names=where if runs.hashed(run_id) else None,
        )
        yield from calls.append(run_id, [event], group=runs.group_for(thread_id))
        self._last_stored.put(where, checkpoint["id"], stored)
        return config_for(thread_id, namespace, checkpoint["id"])

    def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
        expected_last_seq: int | None = None,
    ) -> Op[None]:
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns", "")
        checkpoint_id = configurable["checkpoint_id"]
        run_id = runs.writes_run_for(thread_id, namespace, checkpoint_id)
        names = (str(thread_id), namespace, checkpoint_id) if runs.hashed(run_id) else None
        stored = [
            (WRITES_IDX_MAP.get(channel, idx), channel, payloads.dump_value(self.serde, value))
            for idx, (channel, value) in enumerate(writes)
        ]
        if not stored:
            return
        group = runs.group_for(thread_id)
        writer = _writer(config)
        try:
            yield from calls.append(
                run_id,
                [payloads.writes_of(task_id, task_path, stored, names=names, run_id=writer)],
                group=group,
                expected_last_seq=expected_last_seq,
            )
        except SequenceConflict:
            if expected_last_seq is not None:
                raise  # the caller reads the run again and decides anew
            # The task's regular writes are stored with other values (the task ran again, or
            # a run that wrote them was rolled back): LangGraph keeps the first ones that
            # count, which the reads do; these are kept beside them, without a key.
            unkeyed = payloads.writes_of(
                task_id, task_path, stored, keyed=False, names=names, run_id=writer
            )
            yield from calls.append(run_id, [unkeyed], group=group)

    def _missing_writes(
        self,
        config: RunnableConfig,
        task_id: str,
        task_path: str,
        missing: Missing,
    ) -> Op[int]:
        """Append the writes of a task that ``missing`` finds lacking from those stored.

        The checkpoint's writes run is read, and what is missing is appended only if nothing
        was appended to the run since: two callers at once (two imports of one thread) store
        a write without a key (an interrupt, an error, a resume value) once, where keys
        alone would store it twice. After a conflict the run is read again, its last seq
        first (the one to expect), then the writes, and ``missing`` asked anew.

        Returns:
            How many writes were appended.
        """
        configurable = config["configurable"]
        run_id = runs.writes_run_for(
            configurable["thread_id"],
            configurable.get("checkpoint_ns", ""),
            configurable["checkpoint_id"],
        )
        exact = False  # read the run's last seq first: after a conflict
        while True:
            last = (yield from calls.last_seq(run_id)) if exact else None
            events: list[PAEvent] = yield calls.whole_run(run_id)
            held = [
                (write.channel, payloads.load_value(self.serde, write.value, run_id, write.seq))
                for write in payloads.writes(events).pending
                if write.task == task_id
            ]
            add = missing(held)
            if not add:
                return 0
            if last is None:  # a writes run has no snapshot: its last event is its last seq
                last = events[-1].seq if events else 0
            try:
                yield from self._put_writes(config, add, task_id, task_path, last)
            except SequenceConflict:
                if exact and (yield from calls.last_seq(run_id)) == last:
                    raise  # not a writer that came first
                exact = True
                continue
            return len(add)

    def _prune(self, thread_ids: Sequence[str], strategy: str) -> Op[None]:
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        threads = _ids(thread_ids, "thread_ids")
        if strategy == "delete":
            for thread_id in threads:
                yield from maintenance.delete_thread(thread_id)
            return
        # All refused before any is pruned, as LangGraph's PostgresSaver does.
        yield from maintenance.refuse_delta_threads(threads, self._reader)
        for thread_id in threads:
            yield from maintenance.prune(thread_id, self._reader)

    # -- BaseCheckpointSaver ------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the namespace's latest, with its pending writes.

        Args:
            config: ``thread_id``, optional ``checkpoint_ns`` and ``checkpoint_id``.

        Returns:
            The checkpoint tuple (pending writes in ``task_path``, ``task_id``, ``idx``
            order), or ``None``.
        """
        return self._run(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, read page by page as they are consumed.

        Args:
            config: A thread (every namespace unless ``checkpoint_ns`` is given, one
                checkpoint if ``checkpoint_id`` is), or ``None`` for every thread.
            filter: Metadata keys and the values they must equal.
            before: Only checkpoints older than this one.
            limit: At most this many.

        Returns:
            An iterator of checkpoint tuples.
        """
        return calls.stream(self.store, self._listing(config, filter, before, limit, self.store))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """What a ``DeltaChannel`` is rebuilt from: its writes along the parent chain.

        LangGraph's own walk (one ``get_tuple`` per ancestor), read a page of ancestors at
        a time (see :mod:`~purpose_agent.integrations.langgraph.history`).

        Args:
            config: ``thread_id``, optional ``checkpoint_ns`` and ``checkpoint_id`` (the
                latest checkpoint when omitted).
            channels: The channels to walk for.

        Returns:
            Per channel, its writes oldest first and, if an ancestor holds its value, the
            nearest such value as ``seed``.
        """
        return self._run(self._delta_history(config, channels, self.store))

    def get_next_version(self, current: int | str | None, channel: None) -> Any:
        """The version after ``current``: integers here, LangGraph's strings for its threads.

        New threads count 1, 2, 3. LangGraph's own savers write versions as text (a counter
        and a random part); a thread moved here from one of them goes on in that form, where
        the base class refused it.

        Args:
            current: The channel's current version, ``None`` for a new channel.
            channel: Unused (kept by LangGraph for compatibility).

        Returns:
            The next version, greater than ``current``.
        """
        if isinstance(current, str):
            # As LangGraph writes them: the random part tells branches apart, no secret.
            return f"{int(current.split('.')[0]) + 1:032}.{random.random():016}"  # noqa: S311
        return (current or 0) + 1

    def setup(self) -> None:
        """Bring a SQL store's schema to the revision this package needs; nothing else needs it.

        LangGraph's ``PostgresSaver`` and ``SqliteSaver`` must be set up once before use; code
        written for them runs unchanged here. A ``SQLCheckpointer`` migrated (or, with
        ``migrate=False``, checked) its schema when it opened, so this only upgrades a
        database changed since, by ``purpose-agent db downgrade`` say. Safe when several
        processes call it at once: one migrates, the others find the work done.

        Raises:
            SchemaNotCurrent: The database was migrated by a newer version of the package.
            StoreUnavailable: The database cannot be reached.
        """
        store = self.store
        if isinstance(store, SQLCheckpointer):
            store.upgrade_schema()

    async def asetup(self) -> None:
        """:meth:`setup`, as LangGraph's async savers have it.

        On an ``AsyncSQLCheckpointer``, on its own connections: ``setup`` would build its
        synchronous twin, a second engine whose pool stays open; otherwise in a worker thread.
        """
        if self._async is not None:
            await self._async.upgrade_schema()
            return
        await asyncio.to_thread(self.setup)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Append a checkpoint to its namespace's run, keyed by its id.

        Args:
            config: ``thread_id``, ``checkpoint_ns`` and the parent's ``checkpoint_id``.
            checkpoint: The checkpoint, stored whole through ``serde``.
            metadata: Its metadata, merged with the config's as LangGraph's savers do.
            new_versions: The channels this checkpoint changed. The others are stored as
                its parent stored them: LangGraph may have changed their live values in
                place since (see :mod:`~purpose_agent.integrations.langgraph.channels`).

        Returns:
            The config naming the stored checkpoint.

        Raises:
            InvalidInput: The checkpoint id cannot be a key (empty, over 255 characters).
            SequenceConflict: A different checkpoint is stored with the same id.
        """
        return self._run(self._put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Append a task's writes to the run of the checkpoint ``config`` names.

        Args:
            config: ``thread_id``, ``checkpoint_ns`` and the ``checkpoint_id`` the writes
                belong to (which may not be stored yet).
            writes: ``(channel, value)`` pairs.
            task_id: The task that wrote them.
            task_path: The task's path, LangGraph's first ordering key.
        """
        self._run(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        """Delete every run of the thread (namespaces, checkpoints, writes) in one transaction.

        Args:
            thread_id: The thread.
        """
        self._run(maintenance.delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Roll these LangGraph runs back: their checkpoints, and their writes to earlier ones.

        The checkpoints whose metadata names one of the runs are removed; the writes the runs
        left on the checkpoint each started from (a resume value, finished tasks' results)
        are withdrawn, so the next run from there runs those tasks again.

        Args:
            run_ids: LangGraph run ids (``metadata["run_id"]``), not store run ids.

        Raises:
            TypeError: ``run_ids`` is one string, not a sequence of them.
        """
        self._run(maintenance.delete_for_runs(_ids(run_ids, "run_ids")))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of a thread to another thread.

        Args:
            source_thread_id: The thread to copy.
            target_thread_id: The thread that receives the copies.
        """
        self._run(maintenance.copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint, or delete the threads.

        Pruning reclaims the space: the older checkpoints are compacted out of their run and
        their writes runs deleted.

        Args:
            thread_ids: The threads.
            strategy: ``"keep_latest"`` or ``"delete"``.

        Raises:
            ValueError: Another strategy.
            TypeError: ``thread_ids`` is one string, not a sequence of them.
            NotImplementedError: ``keep_latest`` of a thread whose graph uses a
                ``DeltaChannel`` (whose state the older checkpoints hold); no thread is
                pruned. ``"delete"`` deletes such threads.
        """
        self._run(self._prune(thread_ids, strategy))

    # -- async twins ----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """See :meth:`get_tuple`."""
        return await self._arun(self._get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """See :meth:`list`."""
        listing = self._listing(config, filter, before, limit, self._async or self.store)
        async for found in self._astream(listing):
            yield found

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """See :meth:`get_delta_channel_history`."""
        return await self._arun(self._delta_history(config, channels, self._async or self.store))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """See :meth:`put`."""
        return await self._arun(self._put(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """See :meth:`put_writes`."""
        await self._arun(self._put_writes(config, writes, task_id, task_path))

    def _put_missing_writes(
        self, config: RunnableConfig, task_id: str, task_path: str, missing: Missing
    ) -> int:
        """:meth:`_missing_writes`, for the import (which writes as LangGraph would)."""
        return self._run(self._missing_writes(config, task_id, task_path, missing))

    async def _aput_missing_writes(
        self, config: RunnableConfig, task_id: str, task_path: str, missing: Missing
    ) -> int:
        """See :meth:`_put_missing_writes`."""
        return await self._arun(self._missing_writes(config, task_id, task_path, missing))

    async def adelete_thread(self, thread_id: str) -> None:
        """See :meth:`delete_thread`."""
        await self._arun(maintenance.delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """See :meth:`delete_for_runs`."""
        await self._arun(maintenance.delete_for_runs(_ids(run_ids, "run_ids")))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """See :meth:`copy_thread`."""
        await self._arun(maintenance.copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """See :meth:`prune`."""
        await self._arun(self._prune(thread_ids, strategy))
