"""Group commit: saves that arrive while a commit is in flight share the next one.

Every durable commit costs a disk flush (SQLite's fsync, Postgres's WAL flush), which dwarfs
the work of a step. When many threads write at once, each would wait for its own flush in
turn. Here the first writer to find no commit in flight commits at once, alone, on the store's
usual path (no added wait). Writers that arrive meanwhile queue; when the commit ends, the
first of them becomes the leader and commits everything queued so far (up to
``max_batch``, oldest first) in one transaction, while the others wait for it. A call waits
for at most the commit in flight and the batches queued ahead of it.

A batch made only of saves is stored in shared statements (on Postgres one statement, one
round trip). Otherwise, or when a position of that batch is taken, each call runs in a
savepoint of its own: a call that fails on its own (a ``SequenceConflict``, a value refused)
is rolled back to its savepoint and fails alone, and the rest of the batch commits. Calls of
one run keep the order in which they arrived. If the batch itself fails (a deadlock, a lost
connection), every call is run again alone, in order, unless the failure came as the batch
committed: then a call that is not safe to repeat (an append without keys) reports that it
may be stored.
"""

from __future__ import annotations

import collections
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from purpose_agent.errors import StoreUnavailable
from purpose_agent.records import EventRow, StateRow


@dataclass(frozen=True)
class GroupCommitPolicy:
    """How far saves are grouped.

    Attributes:
        max_batch: At most this many calls share one commit.
        max_wait: Seconds a leader waits for more calls before committing a batch smaller
            than ``max_batch``. 0 (the default) never waits: a batch is whatever queued
            while the previous commit ran, and a lone writer commits at once.

    """

    max_batch: int = 64
    max_wait: float = 0.0

    def __post_init__(self) -> None:
        if type(self.max_batch) is not int or self.max_batch < 1:
            raise ValueError(f"max_batch must be an int from 1, not {self.max_batch!r}")
        if not 0 <= self.max_wait <= 1:
            raise ValueError(f"max_wait must be 0 to 1 second, not {self.max_wait!r}")


@dataclass(eq=False)
class Pending:
    """One caller's unit of work, as it can run alone or inside a shared transaction.

    Attributes:
        alone: Runs the work on the store's usual path (its own transaction and retries).
        inside: Runs the work on a connection inside the batch's transaction.
        on_conflict: Runs again after ``inside`` hit a taken key, rolled back to the call's
            savepoint (a retry of stored events is told from a conflict here); ``None`` when
            a taken key is an error of the batch.
        run_key: The run the work writes first: a batch is ordered by it, so that
            transactions lock runs in one order, and calls of one run keep theirs.
        repeatable: Whether running the work twice stores it once (saves are; appends
            without keys are not).
        saves: A save's event rows and snapshot, which a batch of saves stores together
            with the other calls' in shared statements; ``None`` for other work.
        appends: An append that is one statement (run id, drafts, expected last seq,
            group), which a batch of such appends sends in one round trip where the driver
            can; ``None`` for other work.

    """

    alone: Callable[[], Any]
    inside: Callable[[Connection], Any]
    on_conflict: Callable[[Connection], Any] | None
    run_key: str
    repeatable: bool
    saves: tuple[Sequence[EventRow], StateRow | None] | None = None
    appends: tuple[str, Sequence[Any], int | None, str | None] | None = None
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    wake: Any = field(default=None, repr=False)  # a queued caller's own lock (threads)
    leading: bool = False  # chosen to lead the next batch (threads)

    @functools.cached_property
    def runs(self) -> frozenset[str]:
        """Every run the call writes (batches in flight at once never share one)."""
        if self.saves is None:
            return frozenset((self.run_key,))
        rows, snap = self.saves
        touched = {row.run_id for row in rows}
        if snap is not None:
            touched.add(snap.run_id)
        return frozenset(touched)

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome of the call."""
        self.result, self.error, self.done = result, error, True

    def outcome(self) -> Any:
        """The call's result, or its error raised."""
        if self.error is not None:
            raise self.error
        return self.result


# While this holds a list, a save appends its call to it instead of committing: the async
# store's on_loop mode gathers the saves its tasks make in one pass of the loop, then commits
# them together (:meth:`GroupCommit.run_batch`) on the loop's thread.
handed_over: ContextVar[list[Pending] | None] = ContextVar(
    "purpose_agent_handed_over", default=None
)


# The queues of this process, emptied in a forked child: the calls queued there, and the
# commit in flight, belong to the parent's threads, which the child does not have; a call of
# the child would otherwise queue behind a leader that never comes, and wait for ever.
_QUEUES: weakref.WeakSet[GroupCommit] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_QUEUES):
        queue._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)


class GroupCommit:
    """The queue of one store's writers, and who commits next.

    Each waiting caller sleeps on a lock of its own, released once: when its call is done,
    or when it is its turn to commit the next batch. A commit therefore wakes the callers it
    carried and the next leader, not every waiting thread; with dozens of writers in one
    process, waking them all on every commit cost more than the commit.

    Args:
        policy: Batch size and wait.
        commit_many: Runs a batch of two or more calls in one transaction, settling each
            call; it must not raise.

    """

    def __init__(
        self, policy: GroupCommitPolicy, commit_many: Callable[[list[Pending]], None]
    ) -> None:
        self.policy = policy
        self._commit_many = commit_many
        self._reset()
        _QUEUES.add(self)

    def _reset(self) -> None:
        """An empty queue, no commit in flight (a new one, or in a forked child)."""
        self._lock = threading.Lock()
        self._more = threading.Condition(self._lock)  # a leader waiting for a fuller batch
        self._queue: collections.deque[Pending] = collections.deque()
        self._busy = False

    def submit(self, call: Pending) -> Any:
        """Run a call, alone or with others; returns its result or raises its error."""
        with self._lock:
            leading = not self._busy
            if leading:
                self._busy = True  # nothing in flight: commit at once, alone
            else:
                call.wake = threading.Lock()
                call.wake.acquire()
                self._queue.append(call)
                if self.policy.max_wait:
                    self._more.notify()
        if leading:
            self._lead([call])
            return call.outcome()
        try:
            call.wake.acquire()  # released when the call is done, or when it leads the next batch
        except BaseException:
            self._abandon(call)
            raise
        if not call.done:
            self._lead(self._take())
        return call.outcome()

    def _take(self) -> list[Pending]:
        """The next batch from the head of the queue, where the new leader's call is."""
        policy = self.policy
        with self._lock:
            if policy.max_wait and len(self._queue) < policy.max_batch:
                deadline = time.monotonic() + policy.max_wait
                while len(self._queue) < policy.max_batch:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._more.wait(left)
            queue = self._queue
            return [queue.popleft() for _ in range(min(policy.max_batch, len(queue)))]

    def _lead(self, batch: list[Pending]) -> None:
        """Commit a batch, then wake its other callers and hand the queue to its head."""
        again: list[Pending] = []
        try:
            self._run(batch)
        finally:
            # Unsettled calls mean this thread was interrupted (KeyboardInterrupt) while it
            # committed them: its own call fails with the interrupt, but the others' threads
            # are still waiting for theirs. A call that may run twice goes back to the head
            # of the queue, for the next leader; one that may not (an append without keys,
            # which the interrupted COMMIT may have stored) is reported as maybe stored.
            for pending in batch[1:]:
                if pending.done:
                    continue
                if pending.repeatable:
                    again.append(pending)
                else:
                    pending.settle(error=_maybe_stored())
            if not batch[0].done:
                batch[0].settle(error=RuntimeError("the grouped commit was interrupted"))
            with self._lock:
                self._queue.extendleft(reversed(again))
                following = self._hand_on()
            # The next leader first: it waits for the interpreter's lock behind fewer threads.
            if following is not None:
                following.wake.release()
            for pending in batch[1:]:
                if pending.done:
                    pending.wake.release()

    def _abandon(self, call: Pending) -> None:
        """Take back a queued call whose thread stopped waiting (an interrupt).

        If it was chosen to lead the next batch, the call after it leads instead, so that
        the queue never waits for a thread that has gone.
        """
        following = None
        with self._lock:
            if call.done or call not in self._queue:
                return  # a batch carries it already
            self._queue.remove(call)
            if call.leading:
                following = self._hand_on()
        if following is not None:
            following.wake.release()

    def _hand_on(self) -> Pending | None:
        """Make the oldest queued call the next leader, or mark the queue idle (lock held)."""
        following = self._queue[0] if self._queue else None
        if following is None:
            self._busy = False
        else:
            following.leading = True
        return following

    def run_batch(self, batch: list[Pending]) -> None:
        """Commit calls gathered elsewhere (not queued here), settling each; never raises."""
        self._run(batch)

    def _run(self, batch: list[Pending]) -> None:
        if len(batch) == 1:
            call = batch[0]
            try:
                call.settle(call.alone())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                call.settle(error=exc)
            return
        self._commit_many(batch)
        for call in batch:
            if not call.done:  # pragma: no cover - commit_many settles every call
                call.settle(error=RuntimeError("a grouped commit left a call unsettled"))


def _maybe_stored() -> StoreUnavailable:
    return StoreUnavailable(
        "the grouped commit that carried this append was interrupted in the thread leading "
        "it, so it may or may not be stored; read the run (or append with keys, which makes a "
        "retry safe) before appending again"
    )
