"""``PurposeAgentSaver``: LangGraph's ``BaseCheckpointSaver`` over a purpose_agent store."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    PAEvent,
    RunState,
    SequenceConflict,
    SQLCheckpointer,
)
from purpose_agent.integrations.langgraph import payloads, runs
from purpose_agent.integrations.langgraph.index import CheckpointEntry, RunIndex, WriteEntry

# Appends race other writers of the same run; each lost race re-reads the tail and tries the
# next seq, so this bounds only a pathological pile-up, not ordinary contention.
_MAX_ATTEMPTS = 1_000
# Positions fetched by one ranged read may include this many unwanted events between wanted
# ones before the read is split in two.
_GAP = 16
# Checkpoints fetched per read while listing.
_PAGE = 64
# A read that wants events at most this far from the run's end reads from them to the end.
_TAIL = 32

_Chosen = tuple[str, CheckpointEntry, list[WriteEntry]]


@dataclass
class _Run:
    """One run's index and the lock that orders this process's appends to it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    index: RunIndex = field(default_factory=RunIndex)
    # The last seq the saved index covers, and whether a new index may start from it.
    saved_through: int = 0
    use_saved: bool = True


class PurposeAgentSaver(BaseCheckpointSaver[int]):
    """A LangGraph checkpointer that keeps threads as runs of a purpose_agent store.

    Each (thread, namespace) is one run (see :func:`run_id_for`). ``put`` appends a checkpoint
    event, ``put_writes`` one event per write keyed to the checkpoint id LangGraph passes in
    ``config``, whether or not that checkpoint has arrived yet: LangGraph sends writes
    concurrently with ``put``, and no pending write may be lost. Deleting checkpoints of a
    thread that lives on (``prune``, ``delete_for_runs``) appends an event that removes them
    from every read, since a store deletes whole runs only: their space comes back when the
    thread is deleted. ``delete_thread`` and ``prune(strategy="delete")`` delete the runs.

    Seqs are chosen by the saver: the next after the run's last, retried on
    ``SequenceConflict`` (the store arbitrates between writers, in this process or others).

    Args:
        store: Any store: ``SQLCheckpointer``, ``AsyncSQLCheckpointer`` (its synchronous store
            is used from worker threads), ``JSONLCheckpointer`` or ``InMemoryCheckpointer``.
        serde: LangGraph's serializer for checkpoint and write values; LangGraph's default
            (``JsonPlusSerializer``) when omitted.
        cached_runs: How many runs' indexes to keep in memory, least recently used dropped
            first; a dropped run's index is read again from the store when next used.
        save_index_every: Save a run's index as its snapshot (at seq 0, covering no event)
            whenever this many events were added since it was last saved, so that a new
            process starts from it instead of reading the whole run; 0 never saves one.

    Raises:
        ValueError: ``cached_runs`` is below 1 or ``save_index_every`` below 0.
    """

    def __init__(
        self,
        store: Checkpointer | AsyncSQLCheckpointer,
        *,
        serde: SerializerProtocol | None = None,
        cached_runs: int = 1024,
        save_index_every: int = 1000,
    ) -> None:
        super().__init__(serde=serde)
        if cached_runs < 1:
            raise ValueError(f"cached_runs must be at least 1, not {cached_runs}")
        if save_index_every < 0:
            raise ValueError(f"save_index_every must be 0 or more, not {save_index_every}")
        self._save_index_every = save_index_every
        self.store: Checkpointer = store.sync if isinstance(store, AsyncSQLCheckpointer) else store
        self._cached_runs = cached_runs
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._runs_lock = threading.Lock()

    @classmethod
    @contextlib.contextmanager
    def from_url(
        cls,
        url: str,
        *,
        serde: SerializerProtocol | None = None,
        cached_runs: int = 1024,
        save_index_every: int = 1000,
        **store_options: Any,
    ) -> Iterator[PurposeAgentSaver]:
        """A saver on a new ``SQLCheckpointer(url, **store_options)``, closed on exit.

        Args:
            url: A SQLAlchemy URL (SQLite, Postgres through psycopg, MariaDB).
            serde: As for the class.
            cached_runs: As for the class.
            save_index_every: As for the class.
            **store_options: Passed to ``SQLCheckpointer``.

        Yields:
            The saver.
        """
        store = SQLCheckpointer(url, **store_options)
        try:
            yield cls(
                store, serde=serde, cached_runs=cached_runs, save_index_every=save_index_every
            )
        finally:
            store.close()

    # -- runs and their indexes ---------------------------------------------------------

    def _run(self, run_id: str) -> _Run:
        # A run dropped while another thread still uses it only costs that thread a lost race:
        # two indexes append through the store, which arbitrates, as between processes.
        with self._runs_lock:
            run = self._runs.get(run_id)
            if run is None:
                run = self._runs[run_id] = _Run()
                while len(self._runs) > self._cached_runs:
                    self._runs.popitem(last=False)
            else:
                self._runs.move_to_end(run_id)
            return run

    def _drop(self, run_id: str) -> None:
        with self._runs_lock:
            self._runs.pop(run_id, None)

    def _catch_up(self, run: _Run, run_id: str) -> None:
        """Apply the events other writers appended since the index last looked (lock held)."""
        if run.index.last_seq == 0 and run.use_saved and self._save_index_every:
            saved = self._saved_index(run_id)
            if saved is not None:
                run.index, run.saved_through = saved, saved.last_seq
        for event in self.store.iter_events(run_id, since_seq=run.index.last_seq):
            run.index.apply(event)
        self._save_index(run, run_id)

    def _saved_index(self, run_id: str) -> RunIndex | None:
        """The index saved as the run's snapshot, if it still describes this run."""
        state = self.store.load_latest(run_id)
        if state is None or state.seq != 0:
            return None
        index = RunIndex.from_data(state.data)
        if index is None or index.last_seq == 0:
            return None
        # The event the index ends with must still be there: a run deleted and written again
        # since (by another process) has other events, and its saved index is not this one.
        last = self.store.list_events(run_id, since_seq=index.last_seq - 1, limit=1)
        if not last or last[0].seq != index.last_seq or last[0].ts != index.last_ts:
            return None
        return index

    def _save_index(self, run: _Run, run_id: str) -> None:
        """Save the index when enough events arrived since it was last saved (lock held)."""
        every = self._save_index_every
        if every and run.index.last_seq - run.saved_through >= every:
            self.store.save_snapshot(
                run_id, RunState(run_id=run_id, seq=0, data=run.index.to_data())
            )
            run.saved_through = run.index.last_seq

    def _append(
        self,
        run_id: str,
        build: Callable[[RunIndex], builtins.list[dict[str, Any]]],
        *,
        optimistic: bool = False,
    ) -> None:
        """Append the events ``build`` returns for the run's index, at the next seqs.

        Optimistic appends skip reading the tail first: when this process is the run's only
        writer (the usual case) the append is one transaction, and when another writer got
        there first the conflict makes it read their events and try again. Only builders
        that stay correct on a stale index may be optimistic (a duplicate regular write is
        ignored on reading, as LangGraph's savers ignore it).
        """
        run = self._run(run_id)
        with run.lock:
            if not optimistic:
                self._catch_up(run, run_id)
            for _ in range(_MAX_ATTEMPTS):
                datas = build(run.index)
                if not datas:
                    return
                first = run.index.last_seq + 1
                events = [
                    PAEvent(
                        run_id=run_id,
                        seq=first + offset,
                        kind=payloads.KINDS[data[payloads.KEY]],
                        lane_id="lg",
                        data=data,
                    )
                    for offset, data in enumerate(datas)
                ]
                try:
                    self.store.save_events(events)
                except SequenceConflict:
                    # Another writer took the seq: read its events and go after them.
                    self._catch_up(run, run_id)
                    continue
                for event in events:
                    run.index.apply(event)
                self._save_index(run, run_id)
                return
        raise SequenceConflict(run_id, run.index.last_seq + 1)

    def _thread_runs(self, thread_id: str | None) -> builtins.list[str]:
        """The runs of one thread (every namespace), or of every thread."""
        found = []
        for run_id in self.store.list_runs():
            if thread_id is None:
                if runs.parse(run_id) is not None:
                    found.append(run_id)
            elif runs.belongs_to(run_id, thread_id):
                found.append(run_id)
        return sorted(found)

    def _fetch(self, run_id: str, seqs: Iterable[int]) -> dict[int, PAEvent]:
        """The events at the given positions, read in as few ranged reads as gaps allow."""
        wanted = sorted(set(seqs))
        found: dict[int, PAEvent] = {}
        start = 0
        while start < len(wanted):
            end = start
            while end + 1 < len(wanted) and wanted[end + 1] - wanted[end] <= _GAP:
                end += 1
            low, high = wanted[start], wanted[end]
            for event in self.store.list_events(run_id, since_seq=low - 1, limit=high - low + 1):
                found[event.seq] = event
            start = end + 1
        return {seq: found[seq] for seq in wanted if seq in found}

    def _tuples(
        self, run_id: str, chosen: builtins.list[_Chosen], known: dict[int, PAEvent]
    ) -> builtins.list[CheckpointTuple] | None:
        """Decode checkpoints with their writes; ``None`` if the index is stale.

        Args:
            run_id: The run.
            chosen: The checkpoints, with their index entries and writes.
            known: Events already read; the others are fetched.
        """
        thread_id, namespace = runs.parse(run_id) or ("", "")
        seqs = [entry.seq for _, entry, _ in chosen]
        seqs += [write.seq for _, _, writes in chosen for write in writes]
        events = known | self._fetch(run_id, [seq for seq in seqs if seq not in known])
        result = []
        for cid, entry, writes in chosen:
            event = events.get(entry.seq)
            if event is None or event.data.get("id") != cid:
                return None
            pending = []
            for write in writes:
                stored = events.get(write.seq)
                if stored is None or stored.data.get("checkpoint") != cid:
                    return None
                value = payloads.load(self.serde, stored.data["value"], run_id, write.seq)
                pending.append((write.task_id, stored.data["channel"], value))
            result.append(
                CheckpointTuple(
                    config=_config(thread_id, namespace, cid),
                    checkpoint=payloads.load(
                        self.serde, event.data["checkpoint"], run_id, entry.seq
                    ),
                    metadata=self._metadata(run_id, entry),
                    parent_config=(
                        _config(thread_id, namespace, entry.parent_id) if entry.parent_id else None
                    ),
                    pending_writes=pending,
                )
            )
        return result

    def _metadata(self, run_id: str, entry: CheckpointEntry) -> CheckpointMetadata:
        if entry.decoded is None:
            entry.decoded = payloads.load(self.serde, entry.metadata, run_id, entry.seq)
        return dict(entry.decoded)  # type: ignore[return-value]

    def _read(
        self,
        run_id: str,
        choose: Callable[[RunIndex], builtins.list[str]],
        *,
        caught_up: bool = False,
    ) -> builtins.list[CheckpointTuple]:
        """The checkpoints ``choose`` picks from the run's up-to-date index, read whole.

        A position that no longer holds what the index says (the run was deleted by another
        process, and maybe written again) makes the index start over, once.
        """
        for attempt in range(2):
            run = self._run(run_id)
            known: dict[int, PAEvent] = {}
            with run.lock:
                if attempt:
                    run.use_saved = False
                if attempt or not caught_up:
                    known = self._catch_up_reading(run, run_id, choose)
                chosen = [
                    (cid, run.index.checkpoints[cid], run.index.writes_of(cid))
                    for cid in choose(run.index)
                ]
            if not chosen:
                return []
            found = self._tuples(run_id, chosen, known)
            if found is not None:
                return found
            self._drop(run_id)
        return []

    def _catch_up_reading(
        self, run: _Run, run_id: str, choose: Callable[[RunIndex], builtins.list[str]]
    ) -> dict[int, PAEvent]:
        """Catch up (lock held); when what ``choose`` wants is near the tail, read it too.

        The latest checkpoint and its writes are usually among the last few events, so one
        read from the first of them to the end both brings the index up to date and returns
        them: ``get_tuple`` of the latest costs one query instead of two.
        """
        index = run.index
        wanted = _positions(index, choose(index))
        if not wanted or index.last_seq - min(wanted) >= _TAIL:
            self._catch_up(run, run_id)
            return {}
        since = min(wanted) - 1
        events = self.store.list_events(run_id, since_seq=since, limit=_TAIL * 2)
        for event in events:
            if event.seq > index.last_seq:
                index.apply(event)
        if len(events) == _TAIL * 2:
            self._catch_up(run, run_id)  # a long tail: read the rest page by page
        return {event.seq: event for event in events}

    # -- BaseCheckpointSaver ------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest, with its pending writes.

        Args:
            config: ``thread_id``, optional ``checkpoint_ns`` and ``checkpoint_id``.

        Returns:
            The checkpoint tuple (pending writes in ``writes_sort_key`` order), or ``None``.
        """
        configurable = config["configurable"]
        run_id = runs.run_id_for(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        wanted = get_checkpoint_id(config)

        def choose(index: RunIndex) -> builtins.list[str]:
            checkpoint_id = wanted or index.latest()
            return [checkpoint_id] if checkpoint_id in index.checkpoints else []

        found = self._read(run_id, choose)
        return found[0] if found else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, per thread and namespace.

        Args:
            config: A thread (every namespace unless ``checkpoint_ns`` is given, one
                checkpoint if ``checkpoint_id`` is), or ``None`` for every thread.
            filter: Metadata keys and the values they must equal.
            before: Only checkpoints older than this one.
            limit: At most this many.

        Yields:
            Checkpoint tuples.
        """
        if config is None:
            run_ids = self._thread_runs(None)
            only = None
        else:
            configurable = config["configurable"]
            namespace = configurable.get("checkpoint_ns")
            if namespace is None:
                run_ids = self._thread_runs(configurable["thread_id"])
            else:
                run_ids = [runs.run_id_for(configurable["thread_id"], namespace)]
            only = get_checkpoint_id(config)
        before_id = get_checkpoint_id(before) if before else None
        left = limit
        for run_id in run_ids:
            if left is not None and left <= 0:
                return
            matching = self._matching(run_id, only, before_id, filter or {}, left)
            for start in range(0, len(matching), _PAGE):
                # _matching has just read the tail; later pages look again.
                page = _present(matching[start : start + _PAGE])
                for found in self._read(run_id, page, caught_up=start == 0):
                    yield found
                    if left is not None:
                        left -= 1

    def _matching(
        self,
        run_id: str,
        only: str | None,
        before_id: str | None,
        wanted: dict[str, Any],
        limit: int | None,
    ) -> builtins.list[str]:
        run = self._run(run_id)
        chosen: builtins.list[str] = []
        with run.lock:
            self._catch_up(run, run_id)
            for cid in run.index.newest_first(before_id):
                if limit is not None and len(chosen) >= limit:
                    break
                if only is not None and cid != only:
                    continue
                if wanted:
                    metadata = self._metadata(run_id, run.index.checkpoints[cid])
                    if any(metadata.get(key) != value for key, value in wanted.items()):
                        continue
                chosen.append(cid)
        return chosen

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Append a checkpoint to its thread's run.

        Args:
            config: ``thread_id``, ``checkpoint_ns`` and the parent's ``checkpoint_id``.
            checkpoint: The checkpoint, stored whole through ``serde``.
            metadata: Its metadata, merged with the config's as LangGraph's savers do.
            new_versions: Unused: every checkpoint carries its channel values.

        Returns:
            The config naming the stored checkpoint.
        """
        configurable = config["configurable"]
        thread_id = configurable["thread_id"]
        namespace = configurable.get("checkpoint_ns", "")
        run_id = runs.run_id_for(thread_id, namespace)
        merged = get_checkpoint_metadata(config, metadata)
        data = payloads.checkpoint(
            checkpoint["id"],
            configurable.get("checkpoint_id"),
            payloads.dump(self.serde, checkpoint),
            payloads.dump(self.serde, merged),
            merged.get("step"),
        )
        self._append(run_id, _constant([data]), optimistic=True)
        return _config(thread_id, namespace, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Append a task's writes, keyed to the checkpoint id in ``config``.

        Args:
            config: ``thread_id``, ``checkpoint_ns`` and the ``checkpoint_id`` the writes
                belong to (which may not be stored yet).
            writes: ``(channel, value)`` pairs.
            task_id: The task that wrote them.
            task_path: The task's path, LangGraph's first ordering key.
        """
        configurable = config["configurable"]
        run_id = runs.run_id_for(configurable["thread_id"], configurable.get("checkpoint_ns", ""))
        checkpoint_id = configurable["checkpoint_id"]
        prepared = [
            (WRITES_IDX_MAP.get(channel, idx), channel, payloads.dump(self.serde, value))
            for idx, (channel, value) in enumerate(writes)
        ]

        def build(index: RunIndex) -> builtins.list[dict[str, Any]]:
            return [
                payloads.write(checkpoint_id, task_id, task_path, idx, channel, value)
                for idx, channel, value in prepared
                if idx < 0 or not index.has_write(checkpoint_id, task_id, idx)
            ]

        self._append(run_id, build, optimistic=True)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every run of the thread: all namespaces, checkpoints and writes.

        Args:
            thread_id: The thread.
        """
        for run_id in self._thread_runs(thread_id):
            self.store.delete_run(run_id)
            self._drop(run_id)

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Remove the checkpoints whose metadata names one of these LangGraph runs.

        Args:
            run_ids: LangGraph run ids (``metadata["run_id"]``), not store run ids.
        """
        doomed = {str(run_id) for run_id in run_ids}
        if not doomed:
            return
        for store_run in self._thread_runs(None):

            def chosen(entry: CheckpointEntry, store_run: str = store_run) -> bool:
                return self._metadata(store_run, entry).get("run_id") in doomed

            self._forget(store_run, chosen)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every live checkpoint and write of a thread to another thread.

        Args:
            source_thread_id: The thread to copy.
            target_thread_id: The thread that receives the copies.
        """
        for run_id in self._thread_runs(source_thread_id):
            parsed = runs.parse(run_id)
            if parsed is None:
                continue
            run = self._run(run_id)
            with run.lock:
                self._catch_up(run, run_id)
                seqs = [entry.seq for entry in run.index.checkpoints.values()]
                seqs += [w.seq for bucket in run.index.writes.values() for w in bucket.values()]
            datas = [event.data for event in self._fetch(run_id, seqs).values()]
            if datas:
                self._append(runs.run_id_for(target_thread_id, parsed[1]), _constant(datas))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep only each namespace's latest checkpoint, or delete the threads.

        Args:
            thread_ids: The threads.
            strategy: ``"keep_latest"`` or ``"delete"``.

        Raises:
            ValueError: Another strategy.
        """
        if strategy not in {"keep_latest", "delete"}:
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue
            for run_id in self._thread_runs(thread_id):
                self._forget(run_id, None)

    def _forget(self, run_id: str, doomed: Callable[[CheckpointEntry], bool] | None) -> None:
        """Append a removal of the checkpoints ``doomed`` picks (all but the latest if None)."""

        def build(index: RunIndex) -> builtins.list[dict[str, Any]]:
            if doomed is None:
                latest = index.latest()
                ids = [cid for cid in index.checkpoints if cid != latest]
            else:
                ids = [cid for cid, entry in index.checkpoints.items() if doomed(entry)]
            return [payloads.forget(sorted(ids))] if ids else []

        self._append(run_id, build)

    # -- async twins: the store's calls run in worker threads ----------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """See :meth:`get_tuple`."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """See :meth:`list`; each page is read in a worker thread."""
        found = self.list(config, filter=filter, before=before, limit=limit)
        done = object()
        while (item := await asyncio.to_thread(next, found, done)) is not done:
            yield item  # type: ignore[misc]

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """See :meth:`put`."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """See :meth:`put_writes`."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """See :meth:`delete_thread`."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """See :meth:`delete_for_runs`."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """See :meth:`copy_thread`."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """See :meth:`prune`."""
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)


def _config(thread_id: str, namespace: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": checkpoint_id,
        }
    }


def _present(checkpoint_ids: builtins.list[str]) -> Callable[[RunIndex], builtins.list[str]]:
    """A chooser for :meth:`PurposeAgentSaver._read`: the ids still in the index."""
    return lambda index: [cid for cid in checkpoint_ids if cid in index.checkpoints]


def _constant(
    datas: builtins.list[dict[str, Any]],
) -> Callable[[RunIndex], builtins.list[dict[str, Any]]]:
    """A builder for :meth:`PurposeAgentSaver._append` that appends the same events whatever."""
    return lambda _index: datas


def _positions(index: RunIndex, checkpoint_ids: builtins.list[str]) -> builtins.list[int]:
    """Where the index says the checkpoints and their writes are."""
    seqs = []
    for cid in checkpoint_ids:
        entry = index.checkpoints.get(cid)
        if entry is not None:
            seqs.append(entry.seq)
            seqs += [write.seq for write in index.writes.get(cid, {}).values()]
    return seqs
