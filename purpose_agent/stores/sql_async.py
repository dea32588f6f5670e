"""The asyncio twin of :class:`~purpose_agent.stores.sql.SQLCheckpointer`, on asyncio drivers.

The database is reached through SQLAlchemy's asyncio extension: aiosqlite on SQLite, psycopg's
async connection on Postgres, aiomysql on MariaDB, chosen from the same URLs the synchronous
store takes (:mod:`purpose_agent.db.async_engine`). No thread pool stands between a task and
the database, so a thousand concurrent runs are a thousand tasks, not a queue behind a few
threads.

The store's logic is the synchronous store's own: the same statements, transactions, error
translation, retries and migrations, run on the async engine's synchronous face in greenlets
(the mechanism of SQLAlchemy's ``AsyncSession``): each statement suspends the calling task
while the async driver talks to the database. One implementation, one behaviour suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar

from sqlalchemy import Engine, Pool
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from purpose_agent.db.async_engine import LoopConnections, async_url, make_async_engine
from purpose_agent.db.dialects import flavor_for
from purpose_agent.db.engine import (
    Durability,
    UrlLike,
    default_url,
    parse_url,
    pool_sizing,
    shown_url,
)
from purpose_agent.db.forks import park_across_forks
from purpose_agent.db.group_commit import GroupCommit, GroupCommitPolicy, Pending, handed_over
from purpose_agent.db.task_group_commit import TaskGroupCommit
from purpose_agent.db.transactions import Transactions
from purpose_agent.db.turns import TaskTurns
from purpose_agent.errors import CheckpointError, InvalidInput, StoreUnavailable
from purpose_agent.protocol import KeyedEvent, Recovery
from purpose_agent.records import check_limit, check_run_id, check_since
from purpose_agent.runtime.events import EventKind, NewEvent, PAEvent
from purpose_agent.runtime.state import RunState
from purpose_agent.stores.sql import SQLCheckpointer, commits_of

T = TypeVar("T")


class _OnAsyncEngine(SQLCheckpointer):
    """The synchronous store's logic on an async engine's synchronous face; runs in greenlets."""

    def __init__(self, engine: AsyncEngine, url: str, *, owns_engine: bool, **options: Any) -> None:
        # Set first: opening errors name the URL the caller gave, not the asyncio driver's.
        self._given_url = url
        super().__init__(engine.sync_engine, **options)
        # An engine make_async_engine built is in autocommit already: no per-connection switch
        # (a round trip on aiomysql), and close() disposes it. One passed in is kept.
        self._owns_engine = owns_engine
        self._units = Transactions(
            self._engine,
            self._flavor,
            owns_engine=owns_engine,
            turns=TaskTurns() if engine.dialect.name == "sqlite" else None,
            wait=options.get("busy_timeout", 60.0),
        )
        self._one_trip = engine.dialect.driver == "aiosqlite"

    def _shown_url(self, url: URL) -> str:
        return self._given_url


def _task_commits(policy: GroupCommitPolicy, store: _OnAsyncEngine) -> TaskGroupCommit:
    """The store's group commit: two batches in flight on a server, one on SQLite."""
    in_flight = 1 if store.engine.dialect.name == "sqlite" else 2
    return TaskGroupCommit(policy, commits_of(store), in_flight=in_flight)


async def _until_loop_ends(store: weakref.ref[AsyncSQLCheckpointer]) -> AsyncGenerator[None, None]:
    """Suspended for the life of a loop; closed by ``asyncio.run`` as the loop ends."""
    try:
        yield
    finally:
        alive = store()
        if alive is not None:
            await alive._release_loop()


# The loop-end watches of stores a forked child inherited (see AsyncSQLCheckpointer._move_to).
_INHERITED_WATCHES: list[AsyncGenerator[None, None] | None] = []


def _check_on_loop(on_loop: bool, url: URL) -> None:
    if on_loop and url.get_backend_name() != "sqlite":
        raise InvalidInput(
            f"on_loop is for SQLite, not {url.get_backend_name()}: the asyncio drivers of "
            "Postgres and MariaDB run on the loop already"
        )


class AsyncSQLCheckpointer:
    """``SQLCheckpointer`` with ``async`` methods; same arguments, same behaviour.

    Build it with :meth:`open`, which connects and migrates, or directly (it then opens on
    the first call)::

        async with await AsyncSQLCheckpointer.open("postgresql+psycopg://...") as store:
            await store.save_events(events, snapshot=state)
            recovery = await store.recover(run_id)

    Args:
        url_or_engine: A URL as for ``SQLCheckpointer`` (``sqlite:///runs.db``,
            ``postgresql+psycopg://...``, ``mariadb+pymysql://...``; the asyncio driver is
            chosen here), the path of a SQLite file, or an ``AsyncEngine``, used as is and not
            disposed by :meth:`close`.
        migrate: As for ``SQLCheckpointer``.
        durability: As for ``SQLCheckpointer``.
        busy_timeout: As for ``SQLCheckpointer``.
        page_size: As for ``SQLCheckpointer``.
        allow_seed_tables: As for ``SQLCheckpointer``.
        group_commit: Let saves of concurrent tasks that arrive while a commit is in flight
            share the next commit (:mod:`purpose_agent.db.task_group_commit`): ``True`` for
            the default policy, or a :class:`GroupCommitPolicy`.
        on_loop: SQLite only: run each call's statements on the event loop's own thread, on
            the synchronous driver (:attr:`sync`), instead of on aiosqlite's thread. A call
            then blocks the loop for its statements and its commit (about 0.6 ms for a step
            at full durability here). With ``group_commit`` too, the saves that the loop's
            tasks make in one pass of the loop are committed together at the end of the
            pass. aiosqlite's thread needs the interpreter's lock for every statement, and a
            loop that is never idle (tasks always ready, each running less than the 5 ms
            switch interval) can keep it from the thread for seconds:
            ``python -m benchmarks.busy_loop`` measured 0 to 2 of 40 steps in 15 s that way,
            and 40 of 40 on the loop, at 3.6-4.3 ms each.
        pool_size: As for ``SQLCheckpointer``; :attr:`sync`'s engine gets the same.
        max_overflow: As for ``SQLCheckpointer``; :attr:`sync`'s engine gets the same.

    Raises:
        InvalidInput: A malformed URL, one without an asyncio driver here, a driver that is
            not installed, a synchronous ``Engine`` (pass its URL instead), ``on_loop``
            with a database other than SQLite, or pool sizes as ``SQLCheckpointer`` refuses
            them.

    """

    def __init__(
        self,
        url_or_engine: UrlLike | AsyncEngine | None = None,
        *,
        migrate: bool = True,
        durability: Durability = "full",
        busy_timeout: float = 60.0,
        page_size: int = 1000,
        allow_seed_tables: bool = False,
        group_commit: GroupCommitPolicy | bool = False,
        on_loop: bool = False,
        pool_size: int | None = None,
        max_overflow: int | None = None,
    ) -> None:
        check_limit(page_size, "page_size")
        self._page_size = max(page_size, 1)
        self._policy = GroupCommitPolicy() if group_commit is True else group_commit or None
        self._twin_sizing: dict[str, int] = {}
        self._options: dict[str, Any] = {
            "migrate": migrate,
            "durability": durability,
            "busy_timeout": busy_timeout,
            "page_size": page_size,
            "allow_seed_tables": allow_seed_tables,
        }
        if isinstance(url_or_engine, Engine):
            raise InvalidInput(
                "AsyncSQLCheckpointer takes a URL or an AsyncEngine, not a synchronous Engine; "
                f"pass its URL ({shown_url(url_or_engine.url)})"
            )
        if isinstance(url_or_engine, AsyncEngine):
            synchronous, _ = async_url(url_or_engine.url)
            _check_on_loop(on_loop, synchronous)
            pool_sizing(None, pool_size, max_overflow)
            self._engine = url_or_engine
            self._owns_engine = False
        else:
            url = url_or_engine if url_or_engine is not None else default_url()
            synchronous, _ = async_url(url)
            _check_on_loop(on_loop, synchronous)
            sizing = pool_sizing(synchronous, pool_size, max_overflow)
            self._engine = make_async_engine(url, durability=durability, **sizing)
            self._owns_engine = True
            # The synchronous twin (sync) builds its own engine from the URL: sized alike.
            self._twin_sizing = sizing
        self._sync_url = synchronous
        self._on_loop = on_loop
        # on_loop with group commit: the saves of this pass of the loop, and their answers.
        self._gathered: list[tuple[Pending, asyncio.Future[None]]] = []
        self._loop_commits: GroupCommit | None = None
        self._connections = LoopConnections(self._engine)
        if self._engine.dialect.driver == "aiosqlite":
            park_across_forks(self._engine.sync_engine, busy_timeout)
        # The URL as the caller gave it (``mariadb+aiomysql://`` stays so), password hidden.
        given = url_or_engine.url if isinstance(url_or_engine, AsyncEngine) else parse_url(url)
        self.url = shown_url(given)
        self._store: _OnAsyncEngine | None = None
        self._closed_store: _OnAsyncEngine | None = None  # the store close() closed
        self._opening: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process = os.getpid()  # the process self._loop runs in
        self._twin: SQLCheckpointer | None = None
        # Threads asking for the twin at once (a LangGraph saver's synchronous methods, run
        # from threads) must share one: each built its own, and all but one stayed open.
        self._twin_lock = threading.Lock()
        self._closed = False
        # Calls under way, and the pool close() left to them (see _run).
        self._in_flight = 0
        self._left_pool: Pool | None = None
        self._watch: AsyncGenerator[None, None] | None = None

    @classmethod
    async def open(cls, url_or_engine: UrlLike | AsyncEngine | None = None, **options: Any) -> Self:
        """Create the store, connect and migrate, without blocking the loop.

        Args:
            url_or_engine: As for the class.
            **options: As for the class.

        Returns:
            The open store.

        Raises:
            SchemaNotCurrent: As for ``SQLCheckpointer``.
            StoreUnavailable: The database cannot be reached.

        """
        store = cls(url_or_engine, **options)
        if store._on_loop:
            store._on_loop_store("opening the store")
        else:
            await store._opened()
        return store

    async def _opened(self) -> _OnAsyncEngine:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            old = self._loop
            if old is not None and old.is_running() and self._process == os.getpid():
                # Moved here, the pool and the group commit's queue would be taken from
                # under that loop's calls, which then never end.
                raise CheckpointError(
                    f"{self!r} is in use by another event loop, running in another thread; "
                    "an AsyncSQLCheckpointer serves one loop at a time: open one per loop "
                    "(or per thread)"
                )
            await self._move_to(loop)
            await self._watch_loop_end()
        if self._store is not None:
            return self._store
        if self._closed:
            if self._closed_store is not None:
                # It checks a call's arguments as an open store does, then refuses the call.
                return self._closed_store
            raise StoreUnavailable(f"opening the store failed on {self.url}: it is closed")
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._store is None:
                try:
                    store = await greenlet_spawn(
                        _OnAsyncEngine,
                        self._engine,
                        self.url,
                        owns_engine=self._owns_engine,
                        **self._options,
                    )
                except BaseException:
                    if self._owns_engine:
                        await self._engine.dispose()
                    raise
                if self._policy is not None:
                    store._commits = _task_commits(self._policy, store)
                self._store = store
        return self._store

    async def _watch_loop_end(self) -> None:
        """Close this loop's pooled connections as the loop ends, should ``close()`` not come.

        ``asyncio.run`` closes the async generators left open (``shutdown_asyncgens``) before
        it closes its loop: one left suspended here is how the store learns that its loop is
        ending while that loop can still close its connections. Without it, a store used
        without ``close()`` left them to be collected after the loop had closed: aiomysql
        printed ``Event loop is closed`` for each, psycopg and aiosqlite a ``ResourceWarning``.
        The store still serves a later loop, on new connections.
        """
        if not self._owns_engine:
            return  # an engine passed in is its owner's to dispose
        watch = _until_loop_ends(weakref.ref(self))
        await anext(watch)
        self._watch = watch

    async def _release_loop(self) -> None:
        """Close the pooled connections of the loop that is ending (see :meth:`_watch_loop_end`)."""
        if self._closed or self._loop is not asyncio.get_running_loop():
            return
        with contextlib.suppress(Exception):  # the loop is ending: nothing is left to tell
            await self._engine.dispose()

    async def _move_to(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve a new event loop (a second ``asyncio.run``, say): one loop at a time.

        The pool's connections, the queue that hands them out and the group commit's task
        belong to the loop they were made on: they are dropped (closed directly if that loop
        has ended) and made again on this one. Two loops running at once cannot share a store.
        """
        old, self._loop = self._loop, loop
        forked = self._process != os.getpid()
        self._process = os.getpid()
        if old is None:
            return
        self._opening = None
        if self._store is not None and self._policy is not None:
            self._store._commits = _task_commits(self._policy, self._store)
        if forked:
            # A child forked while its parent's loop ran (multiprocessing started from a
            # task): that loop runs on in the parent only, and its connections are the
            # parent's sessions, which the child must neither use nor close. Its watch is
            # kept, never finalized: finalized, it would wake the parent's loop through
            # the self-pipe the child shares with it.
            _INHERITED_WATCHES.append(self._watch)
            self._watch = None
        await self._connections.abandon(loop_closed=old.is_closed() and not forked)

    async def _run(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._on_loop:
            # The call runs on the loop without suspending: a task calling in a loop (appending
            # step after step, paging through a run) would otherwise keep every other task
            # of the loop, and its timers, from running until it stops. The loop gets its
            # turn before the call, not after: a cancellation (a timeout that expired while
            # the call ran) then lands while nothing is done yet, never between a committed
            # write and its caller, who would take the write for lost and repeat it.
            await asyncio.sleep(0)
            return method(self._on_loop_store(method.__name__), *args, **kwargs)
        store = await self._opened()
        self._in_flight += 1
        try:
            return await greenlet_spawn(method, store, *args, **kwargs)
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._left_pool is not None:
                # The store was closed while calls were under way: their connections came
                # back to the pool close() disposed, which keeps them open until it is
                # collected (aiomysql then complains that the loop is closed).
                pool, self._left_pool = self._left_pool, None
                await greenlet_spawn(pool.dispose)

    async def _save(self, method: Callable[..., None], *args: Any) -> None:
        """A save: with ``on_loop`` and group commit, committed with the others of this pass.

        The save is checked and turned into a call at once (a bad value fails here, alone);
        the call waits for the end of the loop's pass, when every save the loop's tasks made
        meanwhile is committed in one transaction on the loop's thread (up to ``max_batch``
        at a time), each call failing alone as in any group commit.
        """
        if not (self._on_loop and self._policy is not None):
            await self._run(method, *args)
            return
        store = self._on_loop_store(method.__name__)
        gathered: list[Pending] = []
        token = handed_over.set(gathered)
        try:
            method(store, *args)
        finally:
            handed_over.reset(token)
        if not gathered:
            return
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[None] = loop.create_future()
        self._gathered.append((gathered[0], answer))
        if len(self._gathered) == 1:
            if self._loop_commits is None:  # one per store: the twin never changes
                self._loop_commits = GroupCommit(self._policy, store._commit_many)
            loop.call_soon(self._commit_gathered, self._loop_commits)
        await answer

    def _commit_gathered(self, commits: GroupCommit) -> None:
        gathered, self._gathered = self._gathered, []
        size = commits.policy.max_batch
        for start in range(0, len(gathered), size):
            part = gathered[start : start + size]
            commits.run_batch([call for call, _ in part])
            for call, answer in part:
                if answer.done():  # its task was cancelled; its call ran with the others
                    continue
                if call.error is not None:
                    answer.set_exception(call.error)
                else:
                    answer.set_result(None)

    def _on_loop_store(self, action: str) -> SQLCheckpointer:
        """The synchronous store that serves every call when ``on_loop`` is set."""
        if self._closed:
            if self._twin is not None:
                return self._twin  # closed too: it checks the arguments, then refuses the call
            raise StoreUnavailable(f"{action} failed on {self.url}: the store is closed")
        return self.sync

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy asyncio engine this store uses."""
        return self._engine

    @property
    def sync(self) -> SQLCheckpointer:
        """A synchronous store on the same database, for code that is not async.

        Built on first use, on the synchronous driver of the same URL, and closed with this
        store. An in-memory SQLite database is not shared with it (each engine has its own).

        Raises:
            StoreUnavailable: The store is closed, and its twin was never built.
        """
        twin = self._twin
        if twin is None:
            with self._twin_lock:
                twin = self._twin
                if twin is None and self._closed:
                    # Built now, it would open connections that nothing closes.
                    raise StoreUnavailable(
                        f"opening the synchronous store failed on {self.url}: the store is "
                        "closed; open a new one"
                    )
                if twin is None:
                    options = {**self._options, **self._twin_sizing}
                    if self._policy is not None and not self._on_loop:
                        options["group_commit"] = self._policy
                    twin = self._twin = SQLCheckpointer(self._sync_url, **options)
        return twin

    async def save_event(self, event: PAEvent) -> None:
        """See :meth:`SQLCheckpointer.save_event`."""
        await self._save(SQLCheckpointer.save_event, event)

    async def save_events(
        self, events: Iterable[PAEvent], snapshot: RunState | None = None
    ) -> None:
        """See :meth:`SQLCheckpointer.save_events`."""
        await self._save(SQLCheckpointer.save_events, events, snapshot)

    async def save_snapshot(self, run_id: str, state: RunState) -> None:
        """See :meth:`SQLCheckpointer.save_snapshot`."""
        await self._save(SQLCheckpointer.save_snapshot, run_id, state)

    async def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        """See :meth:`SQLCheckpointer.append`."""
        return await self._run(
            SQLCheckpointer.append,
            run_id,
            events,
            expected_last_seq=expected_last_seq,
            snapshot=snapshot,
            group=group,
        )

    async def last_seq(self, run_id: str) -> int:
        """See :meth:`SQLCheckpointer.last_seq`."""
        return await self._run(SQLCheckpointer.last_seq, run_id)

    async def event_by_key(self, run_id: str, key: str) -> PAEvent | None:
        """See :meth:`SQLCheckpointer.event_by_key`."""
        return await self._run(SQLCheckpointer.event_by_key, run_id, key)

    async def events_of_runs(self, run_ids: Iterable[str]) -> dict[str, list[PAEvent]]:
        """See :meth:`SQLCheckpointer.events_of_runs`."""
        return await self._run(SQLCheckpointer.events_of_runs, list(run_ids))

    async def load_latest(self, run_id: str) -> RunState | None:
        """See :meth:`SQLCheckpointer.load_latest`."""
        return await self._run(SQLCheckpointer.load_latest, run_id)

    async def list_events(
        self,
        run_id: str,
        since_seq: int = 0,
        limit: int | None = None,
        *,
        before: int | None = None,
        newest_first: bool = False,
        kinds: Iterable[EventKind | str] | None = None,
        lanes: Iterable[str] | None = None,
    ) -> list[PAEvent]:
        """See :meth:`SQLCheckpointer.list_events`."""
        return await self._run(
            SQLCheckpointer.list_events,
            run_id,
            since_seq,
            limit,
            before=before,
            newest_first=newest_first,
            kinds=kinds,
            lanes=lanes,
        )

    def iter_events(self, run_id: str, since_seq: int = 0) -> AsyncIterator[PAEvent]:
        """Stream events page by page, one call per page."""
        check_run_id(run_id)
        since_seq = check_since(since_seq)
        return self._iterate(run_id, since_seq)

    async def _iterate(self, run_id: str, since_seq: int) -> AsyncIterator[PAEvent]:
        page_size = self._page_size
        while True:
            page = await self._run(SQLCheckpointer.list_events, run_id, since_seq, page_size)
            for event in page:
                yield event
            if len(page) < page_size:
                return
            since_seq = page[-1].seq

    async def recover(self, run_id: str) -> Recovery | None:
        """See :meth:`SQLCheckpointer.recover`."""
        return await self._run(SQLCheckpointer.recover, run_id)

    async def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """See :meth:`SQLCheckpointer.list_runs`."""
        return await self._run(
            SQLCheckpointer.list_runs, limit, offset=offset, group=group, prefix=prefix
        )

    async def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """See :meth:`SQLCheckpointer.list_groups`."""
        return await self._run(SQLCheckpointer.list_groups, limit, offset=offset)

    async def run_group(self, run_id: str) -> str | None:
        """See :meth:`SQLCheckpointer.run_group`."""
        return await self._run(SQLCheckpointer.run_group, run_id)

    async def compact(self, run_id: str) -> int:
        """See :meth:`SQLCheckpointer.compact`."""
        check_run_id(run_id)
        # A chunk per call, the pause awaited: the loop runs other tasks between chunks.
        deleted, after = await self._run(SQLCheckpointer._compact_chunk, run_id, None)
        while after is not None:
            await asyncio.sleep(flavor_for(self._engine.sync_engine).chunk_pause)
            count, after = await self._run(SQLCheckpointer._compact_chunk, run_id, after)
            deleted += count
        return deleted

    async def delete_runs(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        group: str | None = None,
        prefix: str | None = None,
        older_than: timedelta | datetime | None = None,
        keep_newest: int | None = None,
        whole_groups: bool = False,
    ) -> list[str]:
        """See :meth:`SQLCheckpointer.delete_runs`."""
        return await self._run(
            SQLCheckpointer.delete_runs,
            run_ids,
            group=group,
            prefix=prefix,
            older_than=older_than,
            keep_newest=keep_newest,
            whole_groups=whole_groups,
        )

    async def upgrade_schema(self) -> None:
        """See :meth:`SQLCheckpointer.upgrade_schema`: on this store's own connections."""
        await self._run(SQLCheckpointer.upgrade_schema)

    async def clock_ns(self) -> int:
        """See :meth:`SQLCheckpointer.clock_ns`."""
        return await self._run(SQLCheckpointer.clock_ns)

    async def delete_run(self, run_id: str) -> None:
        """See :meth:`SQLCheckpointer.delete_run`."""
        await self.compact(run_id)
        await self._run(SQLCheckpointer._delete_rest, run_id)

    def iter_keyed_events(self, run_id: str, since_seq: int = 0) -> AsyncIterator[KeyedEvent]:
        """See :meth:`SQLCheckpointer.iter_keyed_events`; iterated with ``async for``."""
        check_run_id(run_id)
        since_seq = check_since(since_seq)
        return self._iterate_keyed(run_id, since_seq)

    async def _iterate_keyed(self, run_id: str, since_seq: int) -> AsyncIterator[KeyedEvent]:
        page_size = self._page_size
        while True:
            page = await self._run(SQLCheckpointer._keyed_events_page, run_id, since_seq, page_size)
            for item in page:
                yield item
            if len(page) < page_size:
                return
            since_seq = page[-1].event.seq

    async def save_keyed_events(
        self,
        run_id: str,
        events: Iterable[KeyedEvent],
        *,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> None:
        """See :meth:`SQLCheckpointer.save_keyed_events`."""
        await self._run(
            SQLCheckpointer.save_keyed_events, run_id, events, snapshot=snapshot, group=group
        )

    async def close(self) -> None:
        """Release the store's connections (an engine passed in is kept).

        A cancellation that arrives meanwhile (a timeout around ``async with``, a task
        cancelled at shutdown) is raised once the connections are released: cut short, the
        release left the rest of the pool and the synchronous twin's connections open, for
        the garbage collector to find still open.
        """
        releasing = asyncio.ensure_future(self._release())
        cancelled: asyncio.CancelledError | None = None
        while not releasing.done():
            try:
                await asyncio.shield(releasing)
            except asyncio.CancelledError as exc:
                if releasing.cancelled():
                    raise
                cancelled = exc
        releasing.result()
        if cancelled is not None:
            raise cancelled

    async def _release(self) -> None:
        self._closed = True
        watch, self._watch = self._watch, None
        if watch is not None:
            await watch.aclose()  # done with: nothing is left for the loop's end to close
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            await self._move_to(loop)
        store, self._store = self._store, None
        self._closed_store = self._closed_store or store
        if self._in_flight and self._owns_engine:
            self._left_pool = self._engine.sync_engine.pool
        if store is not None:
            await greenlet_spawn(store.close)
        elif self._owns_engine:
            await self._engine.dispose()
        with self._twin_lock:  # a twin being built as the store closes is closed with it
            if self._twin is not None:
                self._twin.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
