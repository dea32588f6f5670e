"""Removing what a store no longer needs, through the store's own retention methods.

Recovery reads a run's snapshot and the events after it, so the events at or below the
snapshot's ``seq`` are history, not state: the store's ``compact(run_id)`` removes them and
keeps ``recover()`` exact. Whole runs go through its ``delete_runs``: those not written for
longer than an age, and those beyond the newest N (of a group, or of the runs whose ids start
with a prefix). Nothing here writes to a store any other way, so pruning works on every store
that has these methods (see :class:`Prunable`) and behaves as the library does.

The work is many small transactions: one ``compact`` per run, one ``delete_runs`` per page of
runs. Pruning a large store holds no long lock and can be interrupted and run again at any
point. Each ``delete_runs`` call carries an age, checked inside its transaction: the age asked
for, or else the moment the page was listed. A run written again after it was listed is
therefore kept.

Store-wide (no group, no prefix), a run of a group goes only with its group: it is deleted
whole only when the group's most recently written run is (old enough, beyond the newest N).
A group's runs are deleted together, in one ``delete_runs(whole_groups=True)`` that spares
the group if any run of it was written since it was listed: a thread that goes on while the
prune runs keeps every run.
A group is one thing its owner keeps many runs for (a LangGraph thread: its checkpoints, and
each checkpoint's writes), and a run of it that has not been written for long may still be
part of what the group holds now: a ``DeltaChannel``'s value is rebuilt from the writes of
old checkpoints. Within a group or a prefix, runs are aged one by one, as the store's own
``delete_runs`` ages them: that is what asking for a group's or a prefix's runs means. This
module is what ``purpose-agent prune`` and ``runs delete`` with filters run.

A dry run walks the same runs and counts. On a SQL store its counts are those a prune run
right after it deletes: the run rows carry their write times. Other stores do not say when a
run was written, so there a dry run of ``older_than`` takes the time of a run's last event or
snapshot instead (what ``runs list`` shows).

After ``compact``, ``list_events(run_id)`` starts after the snapshot, and an event re-sent
for a removed position is stored again instead of being recognised as a retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, cast

from purpose_agent.appends import check_label, check_prefix, cutoff_ns
from purpose_agent.db.queries import RunLine
from purpose_agent.errors import InvalidInput
from purpose_agent.ops.summaries import grouped
from purpose_agent.protocol import Checkpointer, Retention
from purpose_agent.records import check_limit
from purpose_agent.stores.open import describe
from purpose_agent.stores.sql import SQLCheckpointer

# Runs listed, and deleted, per transaction.
_PAGE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Prunable(Checkpointer, Retention, Protocol):
    """A store pruning works on: the checkpointer protocol and the retention methods."""


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed, or would remove on a dry run.

    Attributes:
        covered_events: Events at or below their run's snapshot seq.
        covered_runs: Runs those events belong to.
        old_runs: Runs deleted whole (older than the age, or beyond the newest N).
        old_run_events: The events of those runs.
        dry_run: Whether nothing was deleted.

    """

    covered_events: int = 0
    covered_runs: int = 0
    old_runs: int = 0
    old_run_events: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON values."""
        return {
            "dry_run": self.dry_run,
            "covered_events": self.covered_events,
            "covered_runs": self.covered_runs,
            "old_runs": self.old_runs,
            "old_run_events": self.old_run_events,
        }


@dataclass(frozen=True)
class PruneProgress:
    """How far a prune has got, reported after each page of deleted runs and each compaction.

    Attributes:
        stage: ``"deleting runs"`` or ``"compacting"``.
        run_id: The run just handled.
        runs_done: Runs deleted, or compacted, so far in this stage.
        events_done: Their events deleted so far.

    """

    stage: str
    run_id: str
    runs_done: int
    events_done: int


Progress = Callable[[PruneProgress], None]


@dataclass(frozen=True)
class Selection:
    """Which runs a prune deletes whole, and where it works at all.

    Attributes:
        group: Only runs of this group (for every part of the prune).
        prefix: Only runs whose id starts with this (for every part of the prune).
        older_than: Delete runs last written before this moment.
        keep_newest: Delete runs beyond the newest this many (of those in scope).

    """

    group: str | None = None
    prefix: str | None = None
    older_than: datetime | None = None
    keep_newest: int | None = None

    @property
    def deletes(self) -> bool:
        """Whether whole runs are deleted at all."""
        return self.older_than is not None or self.keep_newest is not None

    @property
    def scoped(self) -> bool:
        """Whether only some runs are in scope."""
        return self.group is not None or self.prefix is not None

    @property
    def cutoff(self) -> int | None:
        """``older_than`` as the store compares it: a write stamp in nanoseconds."""
        return cutoff_ns(self.older_than) if self.older_than is not None else None

    def doomed(self, position: int, written_ns: int | None) -> bool:
        """Whether the run at ``position`` (newest first, in scope) is deleted whole."""
        if not self.deletes or (self.keep_newest is not None and position < self.keep_newest):
            return False
        cutoff = self.cutoff
        return cutoff is None or (written_ns is not None and written_ns < cutoff)


def selection(
    *,
    group: str | None = None,
    prefix: str | None = None,
    older_than: timedelta | None = None,
    keep_newest: int | None = None,
    now_ns: int | None = None,
) -> Selection:
    """Check a prune's filters and fix its age as a moment.

    Args:
        group: Only runs of this group.
        prefix: Only runs whose id starts with this.
        older_than: Runs not written for this long are deleted.
        keep_newest: Runs beyond the newest this many are deleted.
        now_ns: The present, in nanoseconds: the store's :func:`clock_of`, or pinned by a
            test; defaults to this host's clock.

    Raises:
        InvalidInput: A negative age or count, or a malformed group or prefix.

    """
    moment = None
    if older_than is not None:
        if older_than < timedelta(0):
            raise InvalidInput(f"the age must not be negative, got {older_than}")
        now = time.time_ns() if now_ns is None else now_ns
        # Nothing was written before the epoch: an older moment selects the same runs.
        moment = _moment(max(now - older_than // timedelta(microseconds=1) * 1000, 0))
    if keep_newest is not None:
        keep_newest = check_limit(keep_newest, "keep_newest")  # capped where no count reaches
    return Selection(
        group=check_label(group, "group") if group is not None else None,
        prefix=check_prefix(prefix) if prefix is not None else None,
        older_than=moment,
        keep_newest=keep_newest,
    )


def clock_of(store: Checkpointer) -> int:
    """The present as a store stamps its writes, in nanoseconds: what an age counts back from.

    A database server stamps writes with its own clock, whichever host they come from, so a
    pruning host whose clock is ahead (or a writer's behind) must not decide which runs are
    old: a prune by age deleted live runs. Other stores are written from one host.

    Raises:
        StoreUnavailable: The store cannot be reached.

    """
    return store.clock_ns() if isinstance(store, SQLCheckpointer) else time.time_ns()


def _moment(ns: int) -> datetime:
    """A write stamp as an aware datetime, to the microsecond (what ``delete_runs`` takes)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def prunable(store: Checkpointer) -> Prunable:
    """Return the store if it has the retention methods, else say what can be done instead.

    Raises:
        InvalidInput: For a store without ``compact`` and ``delete_runs`` (the seed-era
            readers, or a store written against the base protocol alone).

    """
    if all(callable(getattr(store, name, None)) for name in ("compact", "delete_runs")):
        return cast("Prunable", store)
    raise InvalidInput(
        f"{describe(store)} cannot be pruned: it has no retention methods (compact and "
        "delete_runs); copy it into a SQL store with `purpose-agent copy` and prune that"
    )


def prune(
    store: Checkpointer,
    *,
    covered: bool = False,
    older_than: timedelta | None = None,
    keep_newest: int | None = None,
    group: str | None = None,
    prefix: str | None = None,
    dry_run: bool = False,
    now_ns: int | None = None,
    progress: Progress | None = None,
) -> PruneResult:
    """Delete whole runs (old ones, or all but the newest), then compact the rest.

    Runs are deleted first, so that nothing is counted twice: a dry run counts the covered
    events of the runs that would stay.

    Args:
        store: A store with the retention methods (SQL, in-memory, ...).
        covered: Compact every run: delete the events its snapshot covers.
        older_than: Delete runs whose last write is older than this.
        keep_newest: Delete runs beyond the newest this many; with ``older_than``, only
            those that are also older.
        group: Only runs of this group, for every part of the prune.
        prefix: Only runs whose id starts with this, for every part of the prune.
        dry_run: Count only.
        now_ns: The present, in nanoseconds (tests pin it); defaults to the store's clock
            (:func:`clock_of`).
        progress: Called as the prune goes (not on a dry run).

    Returns:
        The counts.

    Raises:
        InvalidInput: Nothing to prune, a negative age or count, a store without the
            retention methods, or a group or prefix on a store that keeps no groups.
        StoreUnavailable: The store cannot be reached.

    """
    if not covered and older_than is None and keep_newest is None:
        raise InvalidInput("nothing to prune: ask for covered events, old runs, or both")
    target = prunable(store)
    chosen = selection(
        group=group,
        prefix=prefix,
        older_than=older_than,
        keep_newest=keep_newest,
        now_ns=clock_of(target) if now_ns is None and older_than is not None else now_ns,
    )
    _check_scope(target, chosen)
    if dry_run:
        return _plan(target, chosen, covered=covered)
    old_runs, old_events = _delete_runs(target, chosen, progress) if chosen.deletes else (0, 0)
    covered_runs = covered_events = 0
    if covered:
        covered_runs, covered_events = _compact(target, chosen, progress)
    return PruneResult(covered_events, covered_runs, old_runs, old_events, dry_run=False)


def selected(store: Checkpointer, chosen: Selection) -> dict[str, int]:
    """The runs a selection deletes whole, with their event counts, newest first.

    A selection with only a group or a prefix selects every run in it.

    Raises:
        InvalidInput: A selection that selects nothing at all, a store without the retention
            methods, or a group or prefix on a store that keeps no groups.
        StoreUnavailable: The store cannot be reached.

    """
    if not chosen.deletes and not chosen.scoped:
        raise InvalidInput("say which runs to delete: a group, a prefix, an age or a count")
    target = prunable(store)
    _check_scope(target, chosen)
    counted = chosen if chosen.deletes else replace(chosen, keep_newest=0)
    return {run.run_id: run.events for run in _walk(target, counted) if run.doomed}


def delete_selected(store: Checkpointer, chosen: Selection) -> tuple[list[str], int]:
    """Delete every run a selection selects in ONE ``delete_runs`` call (one transaction).

    What ``runs delete`` with filters does: all or nothing, where :func:`prune` goes page by
    page. The runs' events are counted first (see :func:`selected`), for the report.

    Args:
        store: A store with the retention methods.
        chosen: The selection (see :func:`selection`).

    Returns:
        The deleted run ids, sorted, and how many events they held.

    Raises:
        InvalidInput: As for :func:`selected`.
        StoreUnavailable: The store cannot be reached.

    """
    listed_ns = clock_of(store)
    events = selected(store, chosen)
    if chosen.deletes:
        # The runs chosen, groups kept whole; one written since it was listed stays.
        deleted = _delete(prunable(store), list(events), chosen, listed_ns) if events else []
    else:
        deleted = prunable(store).delete_runs(group=chosen.group, prefix=chosen.prefix)
    return deleted, sum(events.get(run_id, 0) for run_id in deleted)


def _delete(store: Prunable, run_ids: list[str], chosen: Selection, listed_ns: int) -> list[str]:
    """Delete chosen runs; store-wide, a group only whole and only if none was written since."""
    guard = _guard(chosen, listed_ns)
    if not chosen.scoped and grouped(store) is not None:
        return store.delete_runs(run_ids, older_than=guard, whole_groups=True)
    return store.delete_runs(run_ids, older_than=guard)


def _check_scope(store: Prunable, chosen: Selection) -> None:
    if chosen.scoped and grouped(store) is None:
        raise InvalidInput(
            f"{describe(store)} keeps no run groups, so it cannot be pruned by group or id prefix"
        )


# -- walking the runs in scope --------------------------------------------------------------


class _Run(NamedTuple):
    """What a dry run needs to know about one run."""

    run_id: str
    doomed: bool
    events: int
    covered: int


def _ids(store: Prunable, chosen: Selection, offset: int) -> list[str]:
    """A page of run ids in scope, newest first."""
    if not chosen.scoped:
        return store.list_runs(_PAGE, offset=offset)
    groups = grouped(store)
    assert groups is not None  # checked by _check_scope
    return groups.list_runs(_PAGE, offset=offset, group=chosen.group, prefix=chosen.prefix)


def _sql_pages(
    store: SQLCheckpointer,
    chosen: Selection,
    *,
    start: int = 0,
    written_before: int | None = None,
    covering: bool = False,
    counts: bool = False,
) -> Iterator[tuple[int, list[RunLine]]]:
    """Pages of the runs in scope, newest first, each with the moment before it was listed.

    Pages follow each other by key, not by offset: the runs a caller deletes from one page
    move nothing under the next, and a run written meanwhile moves to the front, already
    passed.
    """
    offset, after = start, None
    while True:
        listed_ns = store.clock_ns()
        with store.reading("listing runs") as conn:
            page = store.queries.run_lines(
                conn,
                _PAGE,
                offset,
                after=after,
                group=chosen.group,
                prefix=chosen.prefix,
                written_before=written_before,
                covering=covering,
                states=False,
                counts=counts,
            )
        if page:
            yield listed_ns, page
        if len(page) < _PAGE:
            return
        offset, after = 0, (page[-1].updated_ns, page[-1].run_id)


class _Groups:
    """Which groups are still live: their most recently written run is not to be deleted.

    Looked up once per group a prune meets, on the group's newest run whatever the prune's
    scope (a prefix may leave that run out of it). With ``keep_newest``, the boundary is the
    last run kept of the scope: a group whose newest run is at least as new is live.
    """

    def __init__(self, store: Prunable, chosen: Selection) -> None:
        self._store = store
        self._chosen = chosen
        self._live: dict[str, bool] = {}
        self._boundary: tuple[int, str] | None = None  # (updated_ns, run_id) on SQL
        self._kept: set[str] | None = None  # the newest N ids elsewhere
        keep = chosen.keep_newest
        if keep:
            if isinstance(store, SQLCheckpointer):
                with store.reading("listing runs") as conn:
                    last = store.queries.run_lines(
                        conn, 1, keep - 1, group=chosen.group, prefix=chosen.prefix, states=False
                    )
                if last:
                    self._boundary = (last[0].updated_ns, last[0].run_id)
            else:
                self._kept = set()
                while len(self._kept) < keep:
                    ids = _ids(store, chosen, len(self._kept))[: keep - len(self._kept)]
                    self._kept.update(ids)
                    if not ids:
                        break

    def live(self, group: str | None) -> bool:
        """Whether runs of ``group`` must stay (never for runs without a group)."""
        if group is None:
            return False
        found = self._live.get(group)
        if found is None:
            found = self._live[group] = self._newest_stays(group)
        return found

    def members(self, group: str) -> dict[str, int]:
        """Every run of a group, with its event count: what goes when the group goes."""
        store = self._store
        if isinstance(store, SQLCheckpointer):
            return {
                line.run_id: line.events or 0
                for _, page in _sql_pages(store, Selection(group=group), counts=True)
                for line in page
            }
        found: dict[str, int] = {}
        while True:
            ids = _ids(store, Selection(group=group), len(found))
            found.update((run_id, _read_run(store, run_id)[0]) for run_id in ids)
            if len(ids) < _PAGE:
                return found

    def group_of(self, run_id: str) -> str | None:
        """A run's group, on a store without run rows to list it with."""
        groups = grouped(self._store)
        return groups.run_group(run_id) if groups is not None else None

    def _newest_stays(self, group: str) -> bool:
        chosen, store = self._chosen, self._store
        cutoff = chosen.cutoff
        if isinstance(store, SQLCheckpointer):
            with store.reading("listing runs") as conn:
                lines = store.queries.run_lines(conn, 1, 0, group=group, states=False)
            if not lines:
                return False
            newest = lines[0]
            if cutoff is not None and newest.updated_ns >= cutoff:
                return True
            boundary = self._boundary
            return boundary is not None and (
                newest.updated_ns > boundary[0]
                or (newest.updated_ns == boundary[0] and newest.run_id <= boundary[1])
            )
        groups = grouped(store)
        ids = groups.list_runs(1, group=group) if groups is not None else []
        if not ids:
            return False
        written = _read_run(store, ids[0])[2]
        if cutoff is not None and (written is None or written >= cutoff):
            return True
        return self._kept is not None and ids[0] in self._kept


def _walk(store: Prunable, chosen: Selection, *, covered: bool = False) -> Iterator[_Run]:
    """Every run a prune would look at, newest first: which it deletes, and its counts.

    Without ``covered``, only the runs that may be deleted are walked: those after the
    newest N, and on SQL only those older than the age.
    """
    start = 0 if covered else chosen.keep_newest or 0
    groups = _Groups(store, chosen) if chosen.deletes and not chosen.scoped else None
    if isinstance(store, SQLCheckpointer):
        position = start
        # The cutoff bounds the listing only where positions do not matter.
        bounded = chosen.cutoff if not covered and chosen.keep_newest is None else None
        for _, page in _sql_pages(store, chosen, start=start, written_before=bounded, counts=True):
            for line in page:
                doomed = chosen.doomed(position, line.updated_ns)
                yield _Run(
                    line.run_id,
                    doomed and not (groups is not None and groups.live(line.group)),
                    line.events or 0,
                    line.covered or 0,
                )
                position += 1
        return
    position = start
    while True:
        ids = _ids(store, chosen, position)
        for run_id in ids:
            events, covered_events, written = _read_run(store, run_id)
            doomed = chosen.doomed(position, written)
            if doomed and groups is not None and groups.live(groups.group_of(run_id)):
                doomed = False
            yield _Run(run_id, doomed, events, covered_events)
            position += 1
        if len(ids) < _PAGE:
            return


def _read_run(store: Checkpointer, run_id: str) -> tuple[int, int, int | None]:
    """A run's events, those its snapshot covers, and when it was written as far as it says."""
    state = store.load_latest(run_id)
    snapshot_seq = state.seq if state is not None else 0
    written = state.updated_at if state is not None else None
    events = covered = 0
    for event in store.iter_events(run_id):
        events += 1
        covered += event.seq <= snapshot_seq
        written = event.ts if written is None else max(written, event.ts)
    return events, covered, int(written * 1e9) if written is not None else None


def _plan(store: Prunable, chosen: Selection, *, covered: bool) -> PruneResult:
    old_runs = old_events = covered_runs = covered_events = 0
    for run in _walk(store, chosen, covered=covered):
        if run.doomed:
            old_runs += 1
            old_events += run.events
        elif covered and run.covered:
            covered_runs += 1
            covered_events += run.covered
    return PruneResult(covered_events, covered_runs, old_runs, old_events, dry_run=True)


# -- deleting -------------------------------------------------------------------------------


def _guard(chosen: Selection, listed_ns: int) -> datetime:
    """The age a page's ``delete_runs`` checks: the one asked for, at most the listing's time."""
    listed = _moment(listed_ns)
    if chosen.older_than is None:
        return listed
    return min(chosen.older_than, listed)


def _delete_runs(store: Prunable, chosen: Selection, progress: Progress | None) -> tuple[int, int]:
    runs = events = 0

    def done(page: list[str], deleted: list[str], counts: dict[str, int]) -> None:
        nonlocal runs, events
        runs += len(deleted)
        events += sum(counts[run_id] for run_id in deleted)
        if progress is not None and page:
            progress(PruneProgress("deleting runs", page[-1], runs, events))

    cutoff = chosen.cutoff
    groups = None if chosen.scoped else _Groups(store, chosen)
    if isinstance(store, SQLCheckpointer):
        bounded = cutoff if chosen.keep_newest is None else None
        pages = _sql_pages(
            store, chosen, start=chosen.keep_newest or 0, written_before=bounded, counts=True
        )
        met: set[str] = set()  # groups deleted, or spared, with a page before
        for listed_ns, page in pages:
            old = [
                line
                for line in page
                if (cutoff is None or line.updated_ns < cutoff)
                and not (groups is not None and (line.group in met or groups.live(line.group)))
            ]
            if not old:
                continue
            counts = {line.run_id: line.events or 0 for line in old}
            if groups is not None:
                # A group goes whole, in this page's transaction: its runs in later pages too.
                for group in sorted({line.group for line in old if line.group is not None}):
                    met.add(group)
                    counts.update(groups.members(group))
            ids = list(counts)
            deleted = _delete(store, ids, chosen, listed_ns)
            done(ids, deleted, counts)
        return runs, events
    # Elsewhere pages are found by offset: past the newest N, and past what was kept.
    offset = chosen.keep_newest or 0
    gone: set[str] = set()
    while True:
        listed_ns = time.time_ns()
        listed = _ids(store, chosen, offset)
        if not listed:
            return runs, events
        sizes: dict[str, int] = {}
        for run_id in listed:
            owner = groups.group_of(run_id) if groups is not None else None
            if groups is None or owner is None:
                sizes[run_id] = _read_run(store, run_id)[0]
            elif not groups.live(owner) and owner not in gone:
                # A group goes whole: its runs after this page too (none is before it).
                gone.add(owner)
                sizes.update(groups.members(owner))
        chosen_ids = list(sizes)
        deleted = _delete(store, chosen_ids, chosen, listed_ns) if chosen_ids else []
        done(chosen_ids, deleted, sizes)
        offset += len(listed) - len(set(deleted).intersection(listed))
        if len(listed) < _PAGE:
            return runs, events


def _compact(store: Prunable, chosen: Selection, progress: Progress | None) -> tuple[int, int]:
    runs = events = 0

    def compact(run_id: str) -> None:
        nonlocal runs, events
        deleted = store.compact(run_id)
        if deleted:
            runs += 1
            events += deleted
            if progress is not None:
                progress(PruneProgress("compacting", run_id, runs, events))

    if isinstance(store, SQLCheckpointer):
        # Only runs whose snapshot covers a stored event: a store pruned before costs a
        # listing, not a transaction per run.
        for _, page in _sql_pages(store, chosen, covering=True):
            for line in page:
                compact(line.run_id)
        return runs, events
    offset = 0
    while True:
        ids = _ids(store, chosen, offset)
        for run_id in ids:
            compact(run_id)
        if len(ids) < _PAGE:
            return runs, events
        offset += len(ids)
