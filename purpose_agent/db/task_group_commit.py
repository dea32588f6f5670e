"""Group commit for asyncio tasks: the same policy and batches as for threads, on one event loop.

See :mod:`purpose_agent.db.group_commit`. A task that finds no commit in flight commits its
own call at once, on the store's usual path; tasks that arrive meanwhile queue, and when that
commit ends the queue (up to ``max_batch``) goes into the next transaction. On a server a
second batch may be in flight while the first waits for its flush, never on the same runs.
Batches of queued calls run in tasks of their own, never in a caller's: a caller that is
cancelled stops waiting, but it cannot cancel a transaction that carries others' work.

The store's write logic is synchronous code running in greenlets on an asyncio driver (see
:mod:`purpose_agent.stores.sql_async`); :class:`TaskGroupCommit` is what that code sees as its
group commit, and suspends the calling greenlet until the call's batch has committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from sqlalchemy.util import await_only, greenlet_spawn

from purpose_agent.db.group_commit import GroupCommit, GroupCommitPolicy, Pending
from purpose_agent.errors import StoreUnavailable


class TaskGroupCommit(GroupCommit):
    """The queue of one async store's writers, and the tasks that commit them.

    Args:
        policy: Batch size and wait.
        commit_many: Runs a batch of two or more calls in one transaction, settling each
            call; it must not raise. Synchronous: it runs in a greenlet, like ``alone``.
        in_flight: How many commits may be in flight at once. On a server, a second batch
            is sent while the first waits for its flush, so that the event loop does not
            sit idle; batches in flight at once never share a run, so calls of one run
            still commit in the order they arrived. SQLite has one writer at a time: 1.

    """

    def __init__(
        self,
        policy: GroupCommitPolicy,
        commit_many: Callable[[list[Pending]], None],
        in_flight: int = 1,
    ) -> None:
        super().__init__(policy, commit_many)
        self._waiting: list[tuple[Pending, asyncio.Future[None]]] = []
        self._committers: set[asyncio.Task[None]] = set()
        self._busy_runs: set[str] = set()  # runs of the batches (and the call) in flight
        self._full = asyncio.Event()
        self._inline = False
        self._in_flight = max(in_flight, 1)

    def submit(self, call: Pending) -> Any:
        """Run a call from the store's synchronous code, suspending its greenlet meanwhile.

        A call that finds no commit in flight and none queued runs at once in its caller's
        greenlet, on the store's usual path: a lone writer pays nothing for grouping. Calls
        that arrive meanwhile queue, and are committed together when it ends.
        """
        if not self._committers and not self._inline and not self._waiting:
            runs = call.runs
            self._inline = True
            self._busy_runs |= runs
            try:
                return call.alone()
            finally:
                self._inline = False
                self._busy_runs -= runs
                self._start()
        return await_only(self.submit_async(call))

    def _start(self) -> None:
        """Start committing tasks while calls are ready and fewer commits than allowed run."""
        while len(self._committers) + self._inline < self._in_flight:
            batch = self._take_ready()
            if not batch:
                return
            task = asyncio.get_running_loop().create_task(self._commit_all(batch))
            self._committers.add(task)

    async def submit_async(self, call: Pending) -> Any:
        """Queue a call and wait for the commit that carries it; its result or its error."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((call, done))
        if len(self._waiting) >= self.policy.max_batch:
            self._full.set()
        self._start()
        await done
        return call.outcome()

    def _take_ready(self) -> list[tuple[Pending, asyncio.Future[None]]]:
        """The oldest queued calls (up to ``max_batch``) whose runs no commit in flight writes.

        A call held back holds back every later call of its runs, so that calls of one run
        commit in the order they arrived.
        """
        taken: list[tuple[Pending, asyncio.Future[None]]] = []
        kept: list[tuple[Pending, asyncio.Future[None]]] = []
        blocked = set(self._busy_runs)
        for entry in self._waiting:
            runs = entry[0].runs
            if len(taken) < self.policy.max_batch and blocked.isdisjoint(runs):
                taken.append(entry)
            else:
                kept.append(entry)
                blocked |= runs
        self._waiting = kept
        if len(kept) < self.policy.max_batch:
            self._full.clear()
        return taken

    async def _commit_all(self, batch: list[tuple[Pending, asyncio.Future[None]]]) -> None:
        """Commit a batch, then the next ready ones while there are; the first never waits."""
        try:
            while batch:
                runs = frozenset().union(*(call.runs for call, _ in batch))
                self._busy_runs |= runs
                try:
                    await self._run_async([call for call, _ in batch])
                finally:
                    self._busy_runs -= runs
                    for call, done in batch:
                        if not call.done:  # the loop is shutting down, or a bug
                            call.settle(error=StoreUnavailable("the grouped commit was cut short"))
                        if not done.done():
                            done.set_result(None)
                batch = await self._next_batch()
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._committers.discard(task)
            if self._waiting and not asyncio.get_running_loop().is_closed():
                self._start()

    async def _next_batch(self) -> list[tuple[Pending, asyncio.Future[None]]]:
        """The next ready batch, after waiting up to ``max_wait`` for a full one."""
        policy = self.policy
        if self._waiting and policy.max_wait and len(self._waiting) < policy.max_batch:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), policy.max_wait)
        return self._take_ready()

    async def _run_async(self, batch: list[Pending]) -> None:
        if len(batch) == 1:
            call = batch[0]
            try:
                call.settle(await greenlet_spawn(call.alone))
            except Exception as exc:  # noqa: BLE001 - handed to the caller's task
                call.settle(error=exc)
            return
        await greenlet_spawn(self._commit_many, batch)
        for call in batch:
            if not call.done:  # pragma: no cover - commit_many settles every call
                call.settle(error=RuntimeError("a grouped commit left a call unsettled"))
