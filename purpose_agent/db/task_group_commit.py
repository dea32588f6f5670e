"""Group commit for asyncio tasks: the same policy and batches as for threads, on one event loop.

See :mod:`purpose_agent.db.group_commit`. A task that finds no commit in flight commits its
own call at once, on the store's usual path; tasks that arrive meanwhile queue, and when that
commit ends the queue (up to ``max_batch``) goes into the next transaction, one savepoint per
call. Batches of queued calls run in a task of their own, never in a caller's: a caller that
is cancelled stops waiting, but it cannot cancel a transaction that carries others' work.

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
    """The queue of one async store's writers, and the task that commits them.

    Args:
        policy: Batch size and wait.
        commit_many: Runs a batch of two or more calls in one transaction, settling each
            call; it must not raise. Synchronous: it runs in a greenlet, like ``alone``.

    """

    def __init__(
        self, policy: GroupCommitPolicy, commit_many: Callable[[list[Pending]], None]
    ) -> None:
        super().__init__(policy, commit_many)
        self._waiting: list[tuple[Pending, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._full = asyncio.Event()
        self._inline = False

    def submit(self, call: Pending) -> Any:
        """Run a call from the store's synchronous code, suspending its greenlet meanwhile.

        A call that finds no commit in flight and none queued runs at once in its caller's
        greenlet, on the store's usual path: a lone writer pays nothing for grouping. Calls
        that arrive meanwhile queue, and are committed together when it ends.
        """
        if self._committer is None and not self._inline and not self._waiting:
            self._inline = True
            try:
                return call.alone()
            finally:
                self._inline = False
                self._start()
        return await_only(self.submit_async(call))

    def _start(self) -> None:
        """Start the committing task if calls are queued and nothing commits them."""
        if self._waiting and self._committer is None and not self._inline:
            self._committer = asyncio.get_running_loop().create_task(self._commit_all())

    async def submit_async(self, call: Pending) -> Any:
        """Queue a call and wait for the commit that carries it; its result or its error."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((call, done))
        if len(self._waiting) >= self.policy.max_batch:
            self._full.set()
        self._start()
        await done
        return call.outcome()

    async def _commit_all(self) -> None:
        """Commit batches while calls are queued; the first batch is whatever is there now."""
        try:
            first = True
            while self._waiting:
                batch = await self._next_batch(wait=not first)
                first = False
                try:
                    await self._run_async([call for call, _ in batch])
                finally:
                    for call, done in batch:
                        if not call.done:  # the loop is shutting down, or a bug
                            call.settle(error=StoreUnavailable("the grouped commit was cut short"))
                        if not done.done():
                            done.set_result(None)
        finally:
            self._committer = None

    async def _next_batch(self, *, wait: bool) -> list[tuple[Pending, asyncio.Future[None]]]:
        """The next batch from the head of the queue, after waiting up to ``max_wait``.

        The first batch never waits: a lone writer commits at once.
        """
        policy = self.policy
        if wait and policy.max_wait and len(self._waiting) < policy.max_batch:
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), policy.max_wait)
        batch = self._waiting[: policy.max_batch]
        del self._waiting[: policy.max_batch]
        if len(self._waiting) < policy.max_batch:
            self._full.clear()
        return batch

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
