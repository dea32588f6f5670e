"""Group commit: saves that arrive while a commit is in flight share the next one.

Every durable commit costs a disk flush (SQLite's fsync, Postgres's WAL flush), which dwarfs
the work of a step. When many threads write at once, each would wait for its own flush in
turn. Here the first writer to find no commit in flight commits at once, alone, on the store's
usual path (no added wait). Writers that arrive meanwhile queue; when the commit ends, the
first of them becomes the leader and commits everything queued so far (up to
``max_batch``) in one transaction, one call per savepoint, while the others wait for it.

A call that fails on its own (a ``SequenceConflict``, a value refused) is rolled back to its
savepoint and fails alone: the rest of the batch commits. Calls of one run keep the order in
which they arrived. If the batch itself fails (a deadlock, a lost connection), every call is
run again alone, in order, unless the failure came as the batch committed: then a call that is
not safe to repeat (an append without keys) reports that it may be stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection


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

    """

    alone: Callable[[], Any]
    inside: Callable[[Connection], Any]
    on_conflict: Callable[[Connection], Any] | None
    run_key: str
    repeatable: bool
    done: bool = False
    result: Any = None
    error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome of the call."""
        self.result, self.error, self.done = result, error, True

    def outcome(self) -> Any:
        """The call's result, or its error raised."""
        if self.error is not None:
            raise self.error
        return self.result


class GroupCommit:
    """The queue of one store's writers, and who commits next.

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
        self._cond = threading.Condition()
        self._queue: list[Pending] = []
        self._busy = False

    def submit(self, call: Pending) -> Any:
        """Run a call, alone or with others; returns its result or raises its error."""
        with self._cond:
            self._queue.append(call)
        while True:
            with self._cond:
                while not call.done and self._busy:
                    self._cond.wait()
                if call.done:
                    return call.outcome()
                self._busy = True
                batch = self._take()
            try:
                self._run(batch)
            finally:
                with self._cond:
                    for pending in batch:
                        pending.done = True
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[Pending]:
        """The next batch, from the head of the queue (called holding the lock)."""
        policy = self.policy
        if policy.max_wait and len(self._queue) < policy.max_batch:
            deadline = time.monotonic() + policy.max_wait
            while len(self._queue) < policy.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        batch = self._queue[: policy.max_batch]
        del self._queue[: policy.max_batch]
        return batch

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
