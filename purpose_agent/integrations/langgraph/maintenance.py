"""Deleting, copying and pruning threads with the store's run groups and retention.

A thread is a group of runs, so deleting it is one ``delete_runs(group=...)``: one
transaction, every namespace and every pending write. Pruning to the latest checkpoint saves a
snapshot just below it in each namespace's checkpoint run and compacts the run (the store
deletes what the snapshot covers), then deletes the other checkpoints' writes runs, and the
namespaces of finished subgraph calls, in one transaction: the space comes back.
``delete_for_runs`` removes single checkpoints from the middle of a run, which a store cannot
delete, so it appends a deletion marker to each one's writes run (which every read of the
checkpoint reads anyway); their space comes back when the thread is pruned or deleted. The
writes a rolled-back run left on the checkpoint it started from are withdrawn the same way,
by a marker in that checkpoint's writes run.

Pruning refuses a thread whose graph uses a ``DeltaChannel``, as LangGraph's own
``PostgresSaver`` does: such a channel keeps only its changes in most checkpoints and is
rebuilt from the writes of the checkpoints before, so keeping the latest checkpoint alone would
bring it back empty, without an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection

from purpose_agent import NewEvent, PAEvent, RunState, SequenceConflict
from purpose_agent.integrations.langgraph import calls, payloads, runs
from purpose_agent.integrations.langgraph.calls import Op
from purpose_agent.integrations.langgraph.reads import (
    PAGE,
    Reader,
    could_be_key,
    is_checkpoint,
    pending_writes,
    where_of,
)

Names = tuple[str, ...] | None
"""A hashed writes run's thread, namespace and checkpoint id, or ``None``."""

# Events read, and appended, per call while copying or scanning a thread.
BATCH = 500
PRUNED = "pruned"
# The metadata LangGraph gives every checkpoint of a graph with a DeltaChannel (the second,
# in the releases that introduced the channel).
_DELTA_METADATA = ("counters_since_delta_snapshot", "delta_writes_versioned")


def delete_thread(thread_id: str) -> Op[None]:
    """Every run of the thread, in one transaction."""
    yield from calls.delete_runs(group=runs.group_for(thread_id))


def _page(run_id: str, since: int) -> Op[list[PAEvent]]:
    """The run's next :data:`BATCH` events after ``since``, ascending."""
    page = yield from calls.list_events(run_id, since, BATCH)
    return page


def delete_for_runs(run_ids: Collection[str]) -> Op[None]:
    """Roll these LangGraph runs back: their checkpoints, and their writes to older ones.

    Every checkpoint whose metadata names one of the runs gets a deletion marker. Each
    namespace's run is read through a lane filter the database applies: the runs' own lanes,
    and the plain lane of checkpoints stored before runs had lanes, so a store's other
    checkpoints are not read.

    A run also leaves writes on the checkpoint it started from (a resume value, the writes of
    tasks it finished before it stopped), which would otherwise count on the next run from
    there: it would skip those tasks and reuse the rolled-back run's results. So the
    checkpoints a run can have started from, the parent of each deleted checkpoint and the
    newest one of each namespace, have their writes read, and each run found among their
    writers gets a retraction marker there.
    """
    doomed = {str(run_id) for run_id in run_ids}
    if not doomed:
        return
    lanes = sorted({payloads.lane_of_run(run_id) for run_id in doomed} | {payloads.LANE})
    for run_id in (yield from calls.list_runs(prefix=runs.PREFIX)):
        started_from: dict[str, runs.Checkpoints] = {}
        since = 0
        while True:
            page = yield from calls.list_events(run_id, since, BATCH, lanes=lanes)
            for event in page:
                if is_checkpoint(event) and event.data.get("run") in doomed:
                    yield from _mark(run_id, event, payloads.deleted)
                    _, parent, _, _ = payloads.checkpoint_parts(event)
                    if parent:
                        started_from[parent] = where_of(run_id, event)
            if len(page) < BATCH:
                break
            since = page[-1].seq
        newest = yield from calls.list_events(run_id, 0, 1, newest_first=True)
        if newest and is_checkpoint(newest[0]):
            started_from[payloads.checkpoint_id(newest[0])] = where_of(run_id, newest[0])
        for checkpoint_id, where in sorted(started_from.items()):
            yield from _retract(where, checkpoint_id, doomed)


def _mark(run_id: str, event: PAEvent, marker: Callable[[Names], NewEvent]) -> Op[None]:
    """Append a marker to the writes run of the checkpoint ``event`` of run ``run_id``."""
    yield from _to_writes(where_of(run_id, event), payloads.checkpoint_id(event), marker)


def _to_writes(
    where: runs.Checkpoints, checkpoint_id: str, marker: Callable[[Names], NewEvent]
) -> Op[None]:
    """Append a marker to a checkpoint's writes run, naming it there if its id is hashed."""
    writes_run = runs.writes_run_for(*where, checkpoint_id)
    names = (*where, checkpoint_id) if runs.hashed(writes_run) else None
    yield from calls.append(writes_run, [marker(names)], group=runs.group_for(where.thread_id))


def _retract(where: runs.Checkpoints, checkpoint_id: str, doomed: set[str]) -> Op[None]:
    """Withdraw the writes the doomed runs made to one checkpoint."""
    found = yield from calls.list_events(runs.writes_run_for(*where, checkpoint_id))
    writers = {payloads.writer_of(write) for write in found if payloads.is_writes(write)}
    withdrawn = {payloads.writer_of(write) for write in found if payloads.is_retraction(write)}
    for writer in sorted(run for run in doomed & writers.difference(withdrawn) if run):
        yield from _to_writes(where, checkpoint_id, functools.partial(payloads.retracted, writer))


def copy_thread(source: str, target: str) -> Op[None]:
    """Append every event of the source thread's runs to the target thread's runs.

    Writes runs are copied before checkpoint runs, so that a copy cut short never shows a
    checkpoint without its writes. Running the copy again completes it without duplicating
    anything: the events a target run already starts with, in the source's order (an
    earlier copy's, whole or cut short), are not appended again, and every other event
    keeps its key. Keys alone would not do: a special write (an interrupt, an error) and a
    task's second writes are stored without one, and appended again they would be stored
    twice, after whatever the target thread wrote since.

    Two copies at once end as one does: what a copy appends after the events a target run
    holds of the source's is appended only if the run's last seq is still the one read
    before them; when another copy (or any writer) appended first, the run is read again
    from there and compared anew.
    """
    run_ids = sorted((yield from calls.list_runs(group=runs.group_for(source))))
    group = runs.group_for(target)
    copies = [run_id for run_id in run_ids if runs.is_writes(run_id)]
    copies += [run_id for run_id in run_ids if runs.is_checkpoints(run_id)]
    for run_id in copies:
        since = held = 0
        matching = True  # the target run holds the source's events read so far, in order
        exact = False
        while True:
            page = yield from _page(run_id, since)
            if page:
                copy_id, names = _copy_of(run_id, page[0], target)
                copied = [payloads.copied(event, names) for event in page]
                if matching:
                    found = yield from _after_held(copy_id, held, copied, group, exact)
                    exact = found is None
                    if found is None:
                        continue  # another writer appended first: this page again
                    held, matching = found
                    copied = []
                if copied:
                    yield from calls.append(copy_id, copied, group=group)
            if len(page) < BATCH:
                break
            since = page[-1].seq


def _after_held(
    copy_id: str, held: int, copied: list[NewEvent], group: str, exact: bool
) -> Op[tuple[int, bool] | None]:
    """Append what the target run lacks of a page, the run holding the source's up to ``held``.

    The events the run holds after ``held`` are compared with the page: those equal, in
    order, are not appended again. If the run holds nothing more, the rest is appended after
    them, but only if the run's last seq is still the last one read. If it holds other
    events (the target thread went on), the rest is appended after those, as keyed events
    it holds already are not stored twice.

    Args:
        copy_id: The target run.
        held: The seq of the last event it holds of the source's so far.
        copied: The page, as the events to append.
        group: The target thread's group.
        exact: Read the run's last seq first, rather than take the seq of its last event
            read: after a conflict, which a snapshot ahead of the run's events (a pruned
            run) would also raise.

    Returns:
        The seq of the last event the run now holds of the source's, and whether it holds
        them all so far; ``None`` if another writer appended between the read and the append.

    Raises:
        SequenceConflict: A keyed event is stored with other content.
    """
    last = (yield from calls.last_seq(copy_id)) if exact else None
    there = yield from _page(copy_id, held)
    same = _held(copied, there)
    held = there[same - 1].seq if same else held
    rest = copied[same:]
    if not rest:
        return held, True
    if same < len(there):
        yield from calls.append(copy_id, rest, group=group)
        return held, False
    expected = held if last is None else last
    try:
        stored = yield from calls.append(copy_id, rest, group=group, expected_last_seq=expected)
    except SequenceConflict:
        if last is not None and (yield from calls.last_seq(copy_id)) == last:
            raise  # a key stored with other content, not a writer that came first
        return None
    return max(event.seq for event in stored), True


def _held(copies: list[NewEvent], stored: list[PAEvent]) -> int:
    """How many of ``copies``, from the first, ``stored`` holds in the same order."""
    same = 0
    for copy, event in zip(copies, stored, strict=False):
        if (copy.kind, copy.lane_id, copy.data) != (event.kind, event.lane_id, event.data):
            break
        same += 1
    return same


def _copy_of(run_id: str, event: PAEvent, target: str) -> tuple[str, tuple[str, ...] | None]:
    """The target thread's run for a run of the source's, and the names its events need."""
    names: tuple[str, ...]
    if runs.is_writes(run_id):
        source = runs.parse_writes(run_id)
        _, namespace, checkpoint_id = source or payloads.names_of(event, 3)
        copy_id = runs.writes_run_for(target, namespace, checkpoint_id)
        names = (str(target), namespace, checkpoint_id)
    else:
        namespace = where_of(run_id, event).checkpoint_ns
        copy_id = runs.run_id_for(target, namespace)
        names = (str(target), namespace)
    return copy_id, names if runs.hashed(copy_id) else None


def refuse_delta_threads(thread_ids: Collection[str], reader: Reader) -> Op[None]:
    """Refuse to prune, before anything is deleted, if any thread uses a ``DeltaChannel``.

    Raises:
        NotImplementedError: Naming those threads.
    """
    refused = []
    for thread_id in thread_ids:
        if (yield from _uses_delta_channel(thread_id, reader)):
            refused.append(str(thread_id))
    if refused:
        raise NotImplementedError(
            "keep_latest can't prune threads that use a DeltaChannel (their state is rebuilt "
            f"from older checkpoints' writes): {', '.join(sorted(refused))}"
        )


def _uses_delta_channel(thread_id: str, reader: Reader) -> Op[bool]:
    """Whether any checkpoint of any namespace of the thread has delta metadata.

    Every checkpoint, not only the latest, as LangGraph's ``PostgresSaver`` checks: a
    checkpoint that took a ``DeltaChannel``'s snapshot carries no counters, and the live
    checkpoint under it, once a rollback (``delete_for_runs``) removed the newer ones, is
    rebuilt from the writes before it. The newest checkpoints are read first: a thread using
    one marks nearly every checkpoint, so the answer usually comes from the first page.
    """
    for run_id in (yield from calls.list_runs(group=runs.group_for(thread_id))):
        if not runs.is_checkpoints(run_id):
            continue
        before: int | None = None
        while True:
            events = yield from calls.list_events(
                run_id, limit=PAGE, before=before, newest_first=True
            )
            for event in events:
                if is_checkpoint(event):
                    metadata = reader.metadata(run_id, event)
                    if any(key in metadata for key in _DELTA_METADATA):
                        return True
            if len(events) < PAGE:
                break
            before = events[-1].seq
    return False


def prune(thread_id: str, reader: Reader) -> Op[None]:
    """Keep only the latest live checkpoint of each namespace of the thread, and its writes.

    A finished subgraph call goes whole, as in LangGraph's ``PostgresSaver``: its namespace
    (``node:<task id>``, one per call) holds the call's own checkpoints, which no read of
    the thread's latest state needs once the root has moved past the checkpoint the call
    started from. Without this a thread kept one checkpoint per call it ever made. A call
    from the root's latest checkpoint (interrupted, or running) is kept, and so is one whose
    root checkpoint is not saved yet (a run saves in the background: a call can commit
    first), and a ``checkpointer=True`` subgraph's namespace, which has no task id and whose
    state outlives each call.

    Raises:
        NotImplementedError: The thread uses a ``DeltaChannel`` (nothing is deleted).
    """
    # Checked again per thread: a thread may start using one after the callers' check.
    yield from refuse_delta_threads([thread_id], reader)
    run_ids = yield from calls.list_runs(group=runs.group_for(thread_id))
    heads: dict[str, tuple[PAEvent, list[str]]] = {}
    newest: dict[str, PAEvent] = {}  # each namespace's newest checkpoint, live or deleted
    dead: list[str] = []  # namespaces with no live checkpoint
    for run_id in sorted(run_ids):
        if not runs.is_checkpoints(run_id):
            continue
        head, left, newest_event = yield from _latest_live(run_id)
        if newest_event is not None:
            newest[run_id] = newest_event
        if head is None:
            dead.append(run_id)
        else:
            heads[run_id] = head, left
    finished = yield from _finished_calls(thread_id, heads, reader)
    kept = {run_id: head for run_id, (head, _) in heads.items() if run_id not in finished}
    kept_writes = {writes for run_id in kept for writes in heads[run_id][1]}
    doomed = sorted(finished)
    doomed += yield from _doomed_writes(
        [run_id for run_id in run_ids if runs.is_writes(run_id) and run_id not in kept_writes],
        kept,
        {run_id: payloads.checkpoint_id(event) for run_id, event in newest.items()},
        finished | set(dead),
    )
    for run_id, head in kept.items():
        yield from _compact_below(run_id, head)
        yield from _unparent(thread_id, run_id, head)
    for run_id in dead:
        # Compacted up to what was read, not deleted: a checkpoint the thread saves there
        # meanwhile (it goes on after a rollback by delete_for_runs) stays.
        if run_id in newest:
            yield from _compact_through(run_id, newest[run_id])
    if doomed:
        yield from calls.delete_runs(sorted(doomed))


def _doomed_writes(
    candidates: list[str], kept: dict[str, PAEvent], newest: dict[str, str], gone: set[str]
) -> Op[list[str]]:
    """The writes runs of checkpoints the prune deletes; the others stay.

    LangGraph saves in the background, so a task's writes can commit before their checkpoint
    does: the writes of a checkpoint not saved yet (newer than anything in its namespace, or
    a namespace with no checkpoint yet) are kept, as ``PostgresSaver`` deletes only the
    writes of the checkpoints it deletes. A checkpoint id older than the namespace's kept one
    is one that was saved before it (LangGraph's ids grow with time, and a thread saves one
    checkpoint after another) or never will be (its run died first): its writes go. A newer
    id is looked up, and its writes go only if the checkpoint is stored below the kept one.
    """
    owners = yield from _owners(candidates)
    doomed: list[str] = []
    for writes_run in candidates:
        owner = owners.get(writes_run)
        if owner is None:
            continue  # no events: nothing to delete
        namespace_run = runs.run_id_for(owner.thread_id, owner.checkpoint_ns)
        checkpoint_id = owner.checkpoint_id
        if namespace_run in gone:
            if checkpoint_id <= newest.get(namespace_run, checkpoint_id):
                doomed.append(writes_run)
            continue
        head = kept.get(namespace_run)
        if head is None:
            continue  # no checkpoint of the namespace saved yet
        if checkpoint_id < payloads.checkpoint_id(head):
            doomed.append(writes_run)
        elif could_be_key(checkpoint_id):
            stored = yield from calls.event_by_key(namespace_run, checkpoint_id)
            if stored is not None and is_checkpoint(stored) and stored.seq < head.seq:
                doomed.append(writes_run)
    return doomed


def _owners(writes_runs: list[str]) -> Op[dict[str, runs.WritesOf]]:
    """The checkpoint each writes run belongs to: from its id, or its events if hashed.

    Raises:
        CorruptRecord: A hashed run's events do not name it.
    """
    found: dict[str, runs.WritesOf] = {}
    for writes_run in writes_runs:
        owner = runs.parse_writes(writes_run)
        if owner is None:
            events: list[PAEvent] = yield calls.whole_run(writes_run)
            if not events:
                continue
            owner = runs.WritesOf(*payloads.names_of(events[0], 3))
        found[writes_run] = owner
    return found


def _latest_live(run_id: str) -> Op[tuple[PAEvent | None, list[str], PAEvent | None]]:
    """A checkpoint run's latest live checkpoint, and the writes runs that must stay with it.

    Returns:
        The checkpoint (``None`` if none is live), the writes runs of the checkpoints from
        it up (the latest live one, and the deleted ones saved after it, whose markers must
        stay), and the run's newest checkpoint, live or not (``None`` if none).
    """
    left: list[str] = []
    newest: PAEvent | None = None
    before: int | None = None
    while True:
        events = yield from calls.list_events(run_id, limit=PAGE, before=before, newest_first=True)
        for event in events:
            if not is_checkpoint(event):
                continue
            checkpoint_id = payloads.checkpoint_id(event)
            newest = event if newest is None else newest
            left.append(runs.writes_run_for(*where_of(run_id, event), checkpoint_id))
            writes = yield from pending_writes(left[-1])
            if not writes.deleted:
                return event, left, newest
        if len(events) < PAGE:
            return None, [], newest
        before = events[-1].seq


def _finished_calls(
    thread_id: str, heads: dict[str, tuple[PAEvent, list[str]]], reader: Reader
) -> Op[set[str]]:
    """The checkpoint runs of subgraph calls that started from an older root checkpoint."""
    root_run = runs.run_id_for(thread_id, "")
    root = heads.get(root_run)
    if root is None:
        return set()
    root_head = payloads.checkpoint_id(root[0])
    finished: set[str] = set()
    for run_id, (head, _) in heads.items():
        if ":" not in where_of(run_id, head).checkpoint_ns:
            continue  # the root, or a checkpointer=True subgraph's lasting state
        parents = reader.metadata(run_id, head).get("parents")
        started = parents.get("") if isinstance(parents, dict) else None
        if not isinstance(started, str) or started == root_head or not could_be_key(started):
            continue
        saved = yield from calls.event_by_key(root_run, started)
        # Below the root's head as this prune read it: a root checkpoint saved since (the
        # run's background save committing now) may be the one a running call started from.
        if saved is not None and is_checkpoint(saved) and saved.seq < root[0].seq:
            finished.add(run_id)
    return finished


def _unparent(thread_id: str, run_id: str, head: PAEvent) -> Op[None]:
    """Mark the kept checkpoint as having no parent, its parent being pruned (if it had one).

    Its parent lay below it in the run, where nothing is left: as in ``PostgresSaver``, a
    kept checkpoint whose parent is deleted is left with no parent, rather than naming one
    no read finds. A second prune finds the marker stored (it has a key) and adds nothing.
    """
    if payloads.checkpoint_parts(head)[1] is None:
        return
    thread, namespace = where_of(run_id, head)
    checkpoint_id = payloads.checkpoint_id(head)
    writes_run = runs.writes_run_for(thread, namespace, checkpoint_id)
    names = (thread, namespace, checkpoint_id) if runs.hashed(writes_run) else None
    yield from calls.append(
        writes_run, [payloads.unparented(names)], group=runs.group_for(thread_id)
    )


def _compact_through(run_id: str, newest: PAEvent) -> Op[None]:
    """Delete a run's events up to ``newest``, keeping any saved after it was read."""
    marker = {payloads.KEY: PRUNED, "kept": None}
    yield from calls.save_snapshot(run_id, RunState(run_id=run_id, seq=newest.seq, data=marker))
    yield from calls.compact(run_id)


def _compact_below(run_id: str, latest: PAEvent) -> Op[None]:
    """Delete the run's events before ``latest``: a snapshot covering them, then compaction."""
    oldest = yield from calls.list_events(run_id, limit=1)
    if not oldest or oldest[0].seq >= latest.seq:
        return
    marker = {payloads.KEY: PRUNED, "kept": payloads.checkpoint_id(latest)}
    yield from calls.save_snapshot(run_id, RunState(run_id=run_id, seq=latest.seq - 1, data=marker))
    yield from calls.compact(run_id)
