"""Failover: the primary is SIGKILLed under load, its synchronous standby promoted.

The stores reach the servers through one multi-host URL (``host=a&host=b`` with
``target_session_attrs=read-write``) and are never rebuilt. What callers must see: every save
that returned before the kill is on the promoted standby; calls made during the outage fail
with ``StoreUnavailable`` (never a driver's exception) and succeed when retried; no call
hangs; and a COMMIT that was in flight when the primary died is either stored or not, but a
retry of the identical save is safe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from purpose_agent import AsyncSQLCheckpointer, SQLCheckpointer, StoreUnavailable
from purpose_agent.db.postgres_sessions import MARKER
from purpose_agent.testing.samples import ev, new
from tests.reliability.workload import (
    JOIN_TIMEOUT,
    StepWriters,
    attempt,
    check_steps,
    describe,
    foreign,
)
from tests.servers import SynchronousPair

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

DATABASE = "pa_failover"
# How long the writers run before the kill, and after the promotion.
BEFORE = 1.0
AFTER = 1.0
# How long the primary stays dead before the standby is promoted: calls meet the outage.
OUTAGE = 0.5
RETRY_PAUSE = 0.05


@pytest.fixture
def failover_url(sync_pair: SynchronousPair) -> URL:
    """A database on the pair (made on the primary, replicated), through the multi-host URL."""
    sync_pair.primary.query(f"CREATE DATABASE {DATABASE}")
    url = sync_pair.url(DATABASE)
    SQLCheckpointer(url).close()  # the schema, before anything is killed
    return url


def served_by(store: SQLCheckpointer) -> tuple[int, bool]:
    """The port of the server the store's connections reach, and whether it is a standby.

    It also checks that the connection was set up as a direct one (the marker the store asks
    for at connect time, which keeps prepared statements on): a multi-host URL must not be
    taken for a pooler.
    """
    with store.reading("asking which server answers") as conn:
        row = conn.execute(
            sa.text(
                f"SELECT inet_server_port(), pg_is_in_recovery(), current_setting('{MARKER}', true)"
            )
        ).one()
    assert row[2] == "on", "the store took the multi-host URL for a pooler"
    return int(row[0]), bool(row[1])


@dataclass
class Retrying:
    """A thread that makes one kind of call until stopped, retrying a call that failed.

    ``call(n)`` makes the n-th call (1-based); a call that raised ``StoreUnavailable`` is made
    again with the same ``n``, so that a retry is the same save. Anything else ends the thread
    (it is a bug the test reports).
    """

    call: Callable[[int], object]
    acknowledged: list[int] = field(default_factory=list)
    failures: list[tuple[float, BaseException]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 1
        while not self._stop.is_set():
            started = time.monotonic()
            error = attempt(lambda n=n: self.call(n))
            if error is None:
                self.acknowledged.append(n)
                n += 1
                continue
            self.failures.append((started, error))
            if not isinstance(error, StoreUnavailable):
                return
            time.sleep(RETRY_PAUSE)

    def stop(self) -> bool:
        """Stop; returns whether the thread hung."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join(JOIN_TIMEOUT)
        return self._thread.is_alive()


def test_saves_acknowledged_before_the_primary_dies_are_on_the_promoted_standby(
    sync_pair: SynchronousPair, failover_url: URL
) -> None:
    assert sync_pair.standby is not None
    replica = sync_pair.standby.url.set(database=DATABASE)
    store = SQLCheckpointer(failover_url, read_url=replica)
    grouped = SQLCheckpointer(failover_url, group_commit=True)
    idle = SQLCheckpointer(failover_url)
    idle.save_event(ev("idle", 1))  # then it sits through the failover with a pooled connection
    with store, grouped, idle:
        assert served_by(store) == (sync_pair.primary.port, False)
        steps = StepWriters(store, threads=3, prefix="steps")
        grouped_steps = StepWriters(grouped, threads=2, prefix="grouped")

        def unkeyed(n: int) -> None:
            # An append without keys whose outcome is unknown must be read before it is
            # made again (its error says so): the next append would otherwise add a copy.
            if n in [event.data["n"] for event in store.list_events("unkeyed")]:
                return
            store.append("unkeyed", [new(n=n)])

        def recovering(n: int) -> None:
            # Reads of runs this store writes (recover, iter_events, list_runs): on the
            # replica once it has replayed the writes, else on the primary; each sees every
            # step acknowledged before it.
            run_id = f"steps-{n % 3}"
            done = max(steps.acknowledged.get(run_id, set()), default=0)
            recovered = store.recover(run_id)
            seq = 0 if recovered is None or recovered.state is None else recovered.state.seq
            assert seq >= done * steps.size, f"{run_id}: recovered seq {seq}, step {done} acked"
            streamed = [event.seq for event in store.iter_events(run_id, since_seq=seq)]
            assert streamed[: len(recovered.events) if recovered else 0] == [
                event.seq for event in (recovered.events if recovered else [])
            ]
            assert run_id in store.list_runs() or recovered is None
            time.sleep(0.01)

        callers = {
            "save_event": Retrying(lambda n: store.save_event(ev("explicit", n, n=n))),
            "keyed append": Retrying(lambda n: store.append("keyed", [new(key=f"k{n}", n=n)])),
            "unkeyed append": Retrying(unkeyed),
            "recover": Retrying(recovering),
        }
        steps.start()
        grouped_steps.start()
        for caller in callers.values():
            caller.start()
        time.sleep(BEFORE)

        killed = time.monotonic()
        sync_pair.kill_primary()
        time.sleep(OUTAGE)
        sync_pair.promote()
        promoted = time.monotonic()
        first_idle = attempt(lambda: idle.save_event(ev("idle", 2)))
        first_done = time.monotonic()
        time.sleep(AFTER)

        hung = [name for name, caller in callers.items() if caller.stop()]
        hung += steps.stop() + grouped_steps.stop()
        failures = [error for _, _, error in steps.failures + grouped_steps.failures]
        failures += [error for caller in callers.values() for _, error in caller.failures]
        started_after = steps.failed_after(promoted) + grouped_steps.failed_after(promoted)
        started_after += [
            describe(error)
            for caller in callers.values()
            for started, error in caller.failures
            if started > promoted
        ]
        seen: dict[str, Any] = {
            "hung callers": hung,
            "driver errors": foreign(failures),
            "errors other than StoreUnavailable": [
                describe(error) for error in failures if not isinstance(error, StoreUnavailable)
            ],
            "failures of calls started after the promotion": started_after,
            "first call of the idle store": describe(first_idle),
            "server the stores reach": served_by(store),
            "server the idle store reaches": served_by(idle),
        }
        assert seen == {
            "hung callers": [],
            "driver errors": [],
            "errors other than StoreUnavailable": [],
            "failures of calls started after the promotion": [],
            "first call of the idle store": "ok",
            "server the stores reach": (sync_pair.standby.port, False),
            "server the idle store reaches": (sync_pair.standby.port, False),
        }
        # The outage was real: calls failed during it, and were retried until they succeeded.
        assert any(started >= killed for started, _, _ in steps.failures)
        for writers in (steps, grouped_steps):
            for run_id, acknowledged in writers.acknowledged.items():
                # A failed step is retried until it returns: the acknowledged steps have no gap.
                assert acknowledged == set(range(1, max(acknowledged) + 1))
                check_steps(store, run_id, acknowledged, writers.size)

        explicit = callers["save_event"].acknowledged
        assert store.list_events("explicit") == [ev("explicit", n, n=n) for n in explicit]
        keyed = callers["keyed append"].acknowledged
        stored = store.list_events("keyed")
        assert [event.data["n"] for event in stored] == keyed
        assert [event.seq for event in stored] == list(range(1, len(keyed) + 1))
        # Unkeyed appends: the retries read first, so each n is stored once, in order.
        unkeyed_ns = [event.data["n"] for event in store.list_events("unkeyed")]
        assert unkeyed_ns == callers["unkeyed append"].acknowledged
        for caller in callers.values():
            assert caller.acknowledged, "a caller never got a call through"
        assert idle.list_events("idle") == [ev("idle", 1), ev("idle", 2)]
    figures = {
        "kill to promoted (s)": round(promoted - killed, 2),
        "first call after the promotion (s)": round(first_done - promoted, 3),
        "steps acknowledged": sum(
            len(acked)
            for writers in (steps, grouped_steps)
            for acked in writers.acknowledged.values()
        ),
        "other calls acknowledged": sum(len(c.acknowledged) for c in callers.values()),
        "calls that failed with StoreUnavailable": len(failures),
        "acknowledged saves lost": 0,
    }
    print(f"\nfailover: {figures}")


def test_a_commit_in_flight_when_the_primary_dies_is_reported_and_a_retry_is_safe(
    sync_pair: SynchronousPair, failover_url: URL
) -> None:
    """A COMMIT the primary wrote but the sync standby never confirmed, then the kill.

    The standby is dropped from ``synchronous_standby_names`` in favour of a name no standby
    has, so every commit waits on the primary for a confirmation that never comes: the
    caller's COMMIT is in flight, deterministically, when the primary dies. The standby still
    streams the WAL asynchronously, so after the promotion the save may be stored or not.
    """
    store = SQLCheckpointer(failover_url)
    with store:
        store.save_event(ev("explicit", 1))
        store.append("unkeyed", [new(n=1)])
        sync_pair.primary.require_synchronous("nobody")
        sync_pair.primary.wait_synchronous(SynchronousPair.STANDBY, "async")
        outcomes: dict[str, BaseException | None] = {}

        def save(name: str, call: Callable[[], object]) -> threading.Thread:
            def run() -> None:
                outcomes[name] = attempt(call)

            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            return thread

        threads = [
            save("save_event", lambda: store.save_event(ev("explicit", 2, try_=1))),
            save("unkeyed append", lambda: store.append("unkeyed", [new(n=2)])),
        ]
        waiting = (
            "SELECT count(*) FROM pg_stat_activity "
            f"WHERE datname = '{DATABASE}' AND wait_event = 'SyncRep'"
        )
        deadline = time.monotonic() + JOIN_TIMEOUT
        while sync_pair.primary.query(waiting) != len(threads):
            assert time.monotonic() < deadline, "the commits never waited for the standby"
            assert all(thread.is_alive() for thread in threads), f"returned: {outcomes}"
            time.sleep(0.02)
        sync_pair.kill_primary()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
        assert not any(thread.is_alive() for thread in threads), "a call hung"
        assert {name: type(error) for name, error in outcomes.items()} == {
            "save_event": StoreUnavailable,
            "unkeyed append": StoreUnavailable,
        }
        assert "may or may not be stored" in str(outcomes["unkeyed append"])

        sync_pair.promote()
        # The identical save again: stored once, whether the first COMMIT survived or not.
        store.save_event(ev("explicit", 2, try_=1))
        assert store.list_events("explicit") == [ev("explicit", 1), ev("explicit", 2, try_=1)]
        unkeyed = [event.data["n"] for event in store.list_events("unkeyed")]
        assert unkeyed in ([1], [1, 2])  # may or may not be stored, never twice
        assert served_by(store) == (sync_pair.standby.port if sync_pair.standby else 0, False)


def test_the_async_store_follows_the_promotion_too(
    sync_pair: SynchronousPair, failover_url: URL
) -> None:
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        store = AsyncSQLCheckpointer(failover_url)
        acknowledged: dict[str, list[int]] = {f"async-{i}": [] for i in range(4)}
        failures: list[tuple[float, BaseException]] = []
        stop = asyncio.Event()

        async def write(run_id: str) -> None:
            n = 1
            while not stop.is_set():
                try:
                    await store.save_event(ev(run_id, n))
                except Exception as exc:
                    failures.append((time.monotonic(), exc))
                    if not isinstance(exc, StoreUnavailable):
                        return  # a bug the test reports; retrying would hide it
                    await asyncio.sleep(RETRY_PAUSE)
                    continue
                acknowledged[run_id].append(n)
                n += 1

        tasks = [asyncio.create_task(write(run_id)) for run_id in acknowledged]
        await asyncio.sleep(BEFORE)
        await asyncio.to_thread(sync_pair.kill_primary)
        await asyncio.sleep(OUTAGE)
        await asyncio.to_thread(sync_pair.promote)
        promoted = time.monotonic()
        await asyncio.sleep(AFTER)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), JOIN_TIMEOUT)
        seen["errors"] = {type(error).__name__ for _, error in failures}
        seen["failures after the promotion"] = [
            describe(error) for started, error in failures if started > promoted
        ]
        for run_id, acked in acknowledged.items():
            stored = await store.list_events(run_id)
            assert acked, f"{run_id} saved nothing"
            assert stored == [ev(run_id, n) for n in range(1, len(stored) + 1)]
            assert acked == list(range(1, len(acked) + 1))
            assert len(stored) >= len(acked), f"{run_id}: acknowledged events are lost"
        await store.close()

    asyncio.run(scenario())
    assert seen == {"errors": {"StoreUnavailable"}, "failures after the promotion": []}
