"""``python -m benchmarks.async_stress``: many tasks on a few runs, checked after every round.

Examples::

    python -m benchmarks.async_stress --url sqlite:///stress.db --rounds 20
    python -m benchmarks.async_stress --url postgresql+psycopg://u@host/db --group --rounds 40

Each round opens an ``AsyncSQLCheckpointer`` (with group commit or without) and runs tasks that
each make a mix of calls on a handful of shared runs: plain appends, keyed appends (keys repeat,
so some are retries), appends with the expected last seq just read (so some race and fail),
snapshots, and appends cancelled a few loop turns after they start. Then it checks what a
durable store owes its callers: every run's seqs are 1 to its last seq with no gap, no key is
stored twice, and every keyed append that returned is stored at the seq it returned. Any call
that failed with something other than the ``SequenceConflict`` a race may earn is counted and
printed with its message.

This found a prepared statement psycopg believed the server had after a failed pipeline (group
commit on Postgres, 6 of 40 rounds) and a connection aiomysql had closed on cancellation left in
the pool (1-2 of 20 rounds on MariaDB). ``tests/test_async_stress.py`` runs a small version on
every backend.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import uuid

from purpose_agent import (
    AsyncSQLCheckpointer,
    EventKind,
    NewEvent,
    RunState,
    SequenceConflict,
)
from purpose_agent.db.group_commit import GroupCommitPolicy

RUNS = 6


async def stress_round(
    url: str, *, tasks: int = 24, calls: int = 60, group: bool = False, seed: int = 0
) -> collections.Counter[str]:
    """One round on fresh runs; the unexpected errors, by kind and message.

    Raises:
        AssertionError: What the store holds breaks one of the checks above.
    """
    rng = random.Random(seed)
    prefix = f"stress-{uuid.uuid4().hex[:8]}"
    policy = GroupCommitPolicy(max_batch=16) if group else False
    errors: collections.Counter[str] = collections.Counter()
    acknowledged: dict[tuple[str, str], int] = {}
    async with await AsyncSQLCheckpointer.open(url, group_commit=policy) as store:

        async def call(task: int, number: int) -> None:
            run = f"{prefix}-{rng.randrange(RUNS)}"
            pick = rng.random()
            if pick < 0.4:
                await store.append(run, [_event(task=task, n=number)])
            elif pick < 0.6:
                key = f"k{rng.randrange(40)}"
                (stored,) = await store.append(run, [_event(key=key)], group=prefix)
                seq = acknowledged.setdefault((run, key), stored.seq)
                assert seq == stored.seq, f"{run} key {key}: seq {stored.seq}, then {seq}"
            elif pick < 0.75:
                last = await store.last_seq(run)
                with contextlib.suppress(SequenceConflict):  # another task appended since
                    await store.append(run, [_event(expected=last)], expected_last_seq=last)
            elif pick < 0.85:
                cancelled = asyncio.ensure_future(store.append(run, [_event(cancelled=True)]))
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)
                cancelled.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cancelled
            else:
                await store.save_snapshot(run, RunState(run_id=run, seq=await store.last_seq(run)))

        async def work(task: int) -> None:
            for number in range(calls):
                try:
                    await call(task, number)
                except AssertionError:
                    raise
                except Exception as exc:  # counted and reported: the round's finding
                    errors[f"{type(exc).__name__}: {str(exc)[:160]}"] += 1

        await asyncio.gather(*(work(task) for task in range(tasks)))
        for index in range(RUNS):
            run = f"{prefix}-{index}"
            events = await store.list_events(run)
            last = await store.last_seq(run)
            assert [e.seq for e in events] == list(range(1, last + 1)), f"{run}: a gap"
            keys = [e.data["key"] for e in events if "key" in e.data]
            assert len(keys) == len(set(keys)), f"{run}: a key stored twice"
        for (run, key), seq in acknowledged.items():
            found = await store.event_by_key(run, key)
            assert found is not None, f"{run} key {key}: acknowledged, not stored"
            assert found.seq == seq, f"{run} key {key}: at {found.seq}, acknowledged at {seq}"
    return errors


def _event(**data: object) -> NewEvent:
    key = data.get("key")
    return NewEvent(kind=EventKind.CUSTOM, data=data, key=key if isinstance(key, str) else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.async_stress")
    parser.add_argument("--url", required=True, help="a database URL (migrated on open)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=24)
    parser.add_argument("--calls", type=int, default=60, help="calls per task and round")
    parser.add_argument("--group", action="store_true", help="with group commit")
    args = parser.parse_args(argv)
    failed = 0
    for seed in range(args.rounds):
        errors = asyncio.run(
            stress_round(args.url, tasks=args.tasks, calls=args.calls, group=args.group, seed=seed)
        )
        failed += bool(errors)
        print(f"round {seed}: " + (", ".join(f"{n} x {e}" for e, n in errors.items()) or "ok"))
    print(f"{failed} of {args.rounds} rounds had errors")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
