"""The benchmark cases: the store and its baselines doing the same durable work.

Every case calls the store through the public API only (``save_event``, ``save_events``,
``save_snapshot``, ``load_latest``, ``list_events``, ``iter_events``, ``recover``), so any
checkpointer built from a URL can be measured the same way (``--store module:Class``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks import concurrency, workload
from benchmarks.databases import Target
from benchmarks.measure import Measurement, RoundFn, compare, timed_loop
from benchmarks.profiles import KB, MB, Profile
from benchmarks.raw import Raw
from benchmarks.results import STORE, Case, Goal
from benchmarks.seed import REPO_ROOT
from purpose_agent import RunState


@dataclass
class Context:
    """Everything a case needs on one backend.

    Attributes:
        target: The throwaway database.
        profile: Sizes and budgets.
        store_spec: ``module:Class`` of the store under test.
        store: The store, or ``None`` if it could not be built (``store_error`` says why).
        raw: The raw-driver connection for the baselines.
        seed: The seed's ``SQLiteCheckpointer`` on SQLite, or ``None`` (``seed_reason`` says why).
        token: Makes run ids unique to this benchmark run.
    """

    target: Target
    profile: Profile
    store_spec: str
    store: Any  # None when it could not be built
    store_error: str | None
    raw: Raw
    seed: Any  # None off SQLite or without the seed file
    seed_reason: str | None
    log: Callable[[str], None]
    token: str
    dataset: dict[str, Any] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgres``."""
        return self.target.backend

    def run_id(self, what: str) -> str:
        """A run id no other case uses."""
        return f"{what}-{self.token}-{next(self._ids)}"


def size_name(size: int) -> str:
    """``1KB``, ``100KB``, ``1MB``."""
    return f"{size // MB}MB" if size >= MB and size % MB == 0 else f"{size // KB}KB"


def _single_events(run_id: str) -> Callable[[int], Any]:
    counter = itertools.count(1)
    return lambda _: workload.event(run_id, next(counter))


def _batches(run_id: str, size: int) -> Callable[[int], Any]:
    counter = itertools.count(0)
    return lambda _: workload.events(run_id, next(counter) * size + 1, size)


def _loop(op: Callable[[Any], Any], make_arg: Callable[[int], Any], units: int = 1) -> RoundFn:
    return lambda budget: timed_loop(op, make_arg, budget, units_per_op=units)


def _measure(ctx: Context, case: Case, sides: dict[str, RoundFn], **options: Any) -> Case:
    """Fill ``case.sides`` by running the sides interleaved; note sides that cannot run."""
    if ctx.store is None:
        case.skipped[STORE] = ctx.store_error or "store unavailable"
        case.error = f"store unavailable: {ctx.store_error}"
    rounds = options.pop("rounds", ctx.profile.rounds)
    budget = options.pop("budget", ctx.profile.budget)
    case.sides.update(compare(sides, rounds, budget, **options))
    return case


def _seed_side(ctx: Context, case: Case, sides: dict[str, RoundFn], fn: RoundFn | None) -> None:
    if ctx.backend != "sqlite":
        return
    if ctx.seed is None or fn is None:
        case.skipped["seed"] = ctx.seed_reason or "not applicable"
        return
    sides["seed"] = fn


# -- writes -------------------------------------------------------------------------------


def append_single(ctx: Context) -> Case:
    """One event per call, each committed, against one committed raw ``INSERT``."""
    if ctx.backend == "sqlite":
        goals = [
            Goal(
                "single appends >= 0.8x raw sqlite3 INSERT+COMMIT, same WAL/synchronous",
                "ratio:raw",
                0.8,
            ),
            Goal("single appends >= 4x the seed's SQLiteCheckpointer", "ratio:seed", 4.0),
        ]
    else:
        goals = [Goal("single appends >= 0.9x raw psycopg autocommit INSERT", "ratio:raw", 0.9)]
    case = Case("append_single", ctx.backend, "events/s", goals=goals)
    sides: dict[str, RoundFn] = {}
    if ctx.store is not None:
        sides[STORE] = _loop(ctx.store.save_event, _single_events(ctx.run_id("append-store")))
    sides["raw"] = _loop(ctx.raw.insert_one, _single_events(ctx.run_id("append-raw")))
    seed = ctx.seed
    _seed_side(
        ctx,
        case,
        sides,
        _loop(seed.save_event, _single_events(ctx.run_id("append-seed"))) if seed else None,
    )
    return _measure(ctx, case, sides)


def append_batch(ctx: Context, size: int) -> Case:
    """``save_events`` of ``size`` events in one transaction against the driver's batch paths."""
    goals: list[Goal] = []
    if size == 1000:
        goals = (
            [Goal("batches of 1,000 >= 0.7x raw sqlite3 executemany", "ratio:raw", 0.7)]
            if ctx.backend == "sqlite"
            else [Goal("batches of 1,000 >= 0.5x raw psycopg COPY", "ratio:raw_copy", 0.5)]
        )
    baseline = "raw" if ctx.backend == "sqlite" else "raw_copy"
    case = Case(
        f"append_batch_{size}",
        ctx.backend,
        "events/s",
        params={"batch": size},
        baseline=baseline,
        goals=goals,
    )
    sides: dict[str, RoundFn] = {}
    if ctx.store is not None:
        sides[STORE] = _loop(ctx.store.save_events, _batches(ctx.run_id("batch-store"), size), size)
    for path in ctx.raw.batch_paths:
        label = "raw" if ctx.backend == "sqlite" else f"raw_{path}"
        sides[label] = _loop(ctx.raw.batch(path), _batches(ctx.run_id(f"batch-{path}"), size), size)
    if ctx.backend == "sqlite":
        case.skipped["seed"] = "the seed has no batch write"
    return _measure(ctx, case, sides)


class _Phases:
    """Times the save and load halves of a snapshot round trip separately."""

    def __init__(
        self, save: Callable[[str, RunState], Any], load: Callable[[str], Any], run_id: str
    ):
        self.save, self.load, self.run_id = save, load, run_id
        self.save_s = self.load_s = 0.0
        self.ops = 0

    def __call__(self, state: RunState) -> None:
        clock = time.perf_counter
        start = clock()
        self.save(self.run_id, state)
        middle = clock()
        self.load(self.run_id)
        self.save_s += middle - start
        self.load_s += clock() - middle
        self.ops += 1

    def figures(self) -> dict[str, float]:
        return {
            "save_ops_per_s": self.ops / self.save_s if self.save_s else 0.0,
            "load_ops_per_s": self.ops / self.load_s if self.load_s else 0.0,
        }


def snapshot(ctx: Context, size: int) -> Case:
    """``save_snapshot`` then ``load_latest`` of a state of ``size`` bytes, as one operation."""
    data = workload.state_data(size)
    encoded = len(json.dumps(workload.state("r", 1, size).to_dict(), separators=(",", ":")))
    case = Case(
        f"snapshot_{size_name(size)}",
        ctx.backend,
        "ops/s",
        params={"state_bytes": encoded},
        note="one op = save_snapshot + load_latest; raw = JSON upsert + select + json.loads",
    )
    phases: dict[str, _Phases] = {}

    def side(label: str, save: Any, load: Any) -> RoundFn:
        run_id = ctx.run_id(f"snap-{label}")
        counter = itertools.count(1)
        phases[label] = _Phases(save, load, run_id)
        return _loop(phases[label], lambda _: RunState(run_id=run_id, seq=next(counter), data=data))

    sides: dict[str, RoundFn] = {}
    if ctx.store is not None:
        sides[STORE] = side(STORE, ctx.store.save_snapshot, ctx.store.load_latest)
    sides["raw"] = side("raw", ctx.raw.save_snapshot, ctx.raw.load_latest)
    seed = ctx.seed
    _seed_side(
        ctx, case, sides, side("seed", seed.save_snapshot, seed.load_latest) if seed else None
    )
    _measure(ctx, case, sides)
    for label, measurement in case.sides.items():
        measurement.extra.update(phases[label].figures())
    if ctx.store is not None:
        loaded = ctx.store.load_latest(phases[STORE].run_id)
        if loaded is None or loaded.data != data:
            raise AssertionError("load_latest did not return the state that was saved")
    return case


# -- reads --------------------------------------------------------------------------------


def load_dataset(ctx: Context) -> Case:
    """Write the read cases' runs through the store and the raw driver, chunk by chunk.

    The database gets a large run (``big_run`` events), a medium run read whole, and a run
    with a snapshot and a short tail that ``recover`` reads. Each chunk is written by the store
    (``save_events``) and by the raw driver's fastest batch path in turn, and both are timed:
    the figure is bulk-load events/s, with no target.
    """
    p = ctx.profile
    ds = {
        "big": ctx.run_id("big"),
        "medium": ctx.run_id("medium"),
        "recover": ctx.run_id("recover"),
    }
    ctx.dataset = ds
    case = Case(
        f"bulk_load_{p.load_chunk}",
        ctx.backend,
        "events/s",
        params={"chunk": p.load_chunk},
        baseline="raw",
        note="loading the read dataset; raw = COPY on Postgres, executemany on SQLite",
    )
    store_m, raw_m = Measurement(), Measurement()
    raw_batch = ctx.raw.batch(ctx.raw.batch_paths[0])
    plan = [
        (ds["big"], 1, p.big_run),
        (ds["medium"], 1, p.medium_run),
        (ds["recover"], 1, p.recover_prefix + p.recover_tail),
    ]
    clock = time.perf_counter
    for run_id, first, count in plan:
        for start in range(first, first + count, p.load_chunk):
            chunk = workload.events(run_id, start, min(p.load_chunk, first + count - start))
            if ctx.store is not None:
                began = clock()
                ctx.store.save_events(chunk)
                store_m.units += len(chunk)
                store_m.seconds += clock() - began
            began = clock()
            raw_batch(chunk)
            raw_m.units += len(chunk)
            raw_m.seconds += clock() - began
    state = workload.state(ds["recover"], p.recover_prefix, p.recover_state)
    if ctx.store is not None:
        ctx.store.save_snapshot(ds["recover"], state)
    ctx.raw.save_snapshot(ds["recover"], state)
    if ctx.seed is not None:
        from benchmarks import seed as seed_module

        assert ctx.target.seed_path is not None
        seed_module.bulk_load(ctx.target.seed_path, workload.events(ds["medium"], 1, p.medium_run))
        seed_module.bulk_load(
            ctx.target.seed_path,
            workload.events(ds["recover"], 1, p.recover_prefix + p.recover_tail),
        )
        ctx.seed.save_snapshot(ds["recover"], state)
    engine = getattr(ctx.store, "engine", None)
    if engine is not None:
        # What autovacuum does a minute after a load this size: the reads are measured on a
        # database with statistics, as a running one has (both sides read the same tables).
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
    for m in (store_m, raw_m):
        m.rates.append(m.units / m.seconds if m.seconds else 0.0)
    if ctx.store is not None:
        case.sides[STORE] = store_m
    else:
        case.skipped[STORE] = ctx.store_error or "store unavailable"
        case.error = f"store unavailable: {ctx.store_error}"
    case.sides["raw"] = raw_m
    total = p.big_run + p.medium_run + p.recover_prefix + p.recover_tail
    case.params["database_events"] = total
    ctx.log(f"  loaded {total:,} events per side")
    return case


def _check(what: str, got: int, expected: int) -> None:
    if got != expected:
        raise AssertionError(f"{what}: expected {expected} events, got {got}")


def recover(ctx: Context) -> Case:
    """``recover()`` of a run with a snapshot and a short tail, in the full database."""
    p, run_id = ctx.profile, ctx.dataset["recover"]
    case = Case(
        "recover",
        ctx.backend,
        "ops/s",
        params={
            "tail": p.recover_tail,
            "state_bytes": p.recover_state,
            "database_events": p.big_run + p.medium_run + p.recover_prefix + p.recover_tail,
        },
        goals=[Goal("recover() >= 0.8x raw indexed query + json.loads", "ratio:raw", 0.8)],
        note="raw = one UNION ALL statement (snapshot row, then the tail after its seq) + "
        "json.loads; seed = load_latest + list_events(since_seq)",
    )
    sides: dict[str, RoundFn] = {}
    if ctx.store is not None:
        got = ctx.store.recover(run_id)
        _check("store recover", len(got.events), p.recover_tail)
        sides[STORE] = _loop(lambda _: ctx.store.recover(run_id), lambda _: None)
    _check("raw recover", len(ctx.raw.recover(run_id)[1]), p.recover_tail)
    sides["raw"] = _loop(lambda _: ctx.raw.recover(run_id), lambda _: None)
    seed = ctx.seed

    def seed_recover(_: Any) -> Any:
        state = seed.load_latest(run_id)
        return state, seed.list_events(run_id, since_seq=state.seq)

    if seed is not None:
        _check("seed recover", len(seed_recover(None)[1]), p.recover_tail)
    _seed_side(ctx, case, sides, _loop(seed_recover, lambda _: None) if seed else None)
    return _measure(ctx, case, sides)


def list_events_run(ctx: Context) -> Case:
    """``list_events`` of a whole medium-sized run."""
    count, run_id = ctx.profile.medium_run, ctx.dataset["medium"]
    case = Case(
        f"list_events_{count}",
        ctx.backend,
        "events/s",
        params={"events": count},
        goals=[Goal("list_events >= 0.8x raw indexed query + json.loads", "ratio:raw", 0.8)],
    )
    sides: dict[str, RoundFn] = {}
    if ctx.store is not None:
        _check("store list_events", len(ctx.store.list_events(run_id)), count)
        sides[STORE] = _loop(lambda _: ctx.store.list_events(run_id), lambda _: None, count)
    _check("raw list_events", len(ctx.raw.list_events(run_id)), count)
    sides["raw"] = _loop(lambda _: ctx.raw.list_events(run_id), lambda _: None, count)
    seed = ctx.seed
    _seed_side(
        ctx,
        case,
        sides,
        _loop(lambda _: seed.list_events(run_id), lambda _: None, count) if seed else None,
    )
    return _measure(ctx, case, sides)


def list_events_page(ctx: Context) -> Case:
    """``list_events(since_seq=..., limit=100)``: one page from the middle of the large run."""
    run_id, since, limit = ctx.dataset["big"], ctx.profile.big_run // 2, 100
    case = Case(
        "list_events_page",
        ctx.backend,
        "events/s",
        params={"run_events": ctx.profile.big_run, "since_seq": since, "limit": limit},
        goals=[Goal("list_events page >= 0.8x raw indexed query + json.loads", "ratio:raw", 0.8)],
    )
    sides: dict[str, RoundFn] = {}
    if ctx.store is not None:
        _check("store page", len(ctx.store.list_events(run_id, since, limit)), limit)
        sides[STORE] = _loop(
            lambda _: ctx.store.list_events(run_id, since, limit), lambda _: None, limit
        )
    _check("raw page", len(ctx.raw.list_events(run_id, since, limit)), limit)
    sides["raw"] = _loop(lambda _: ctx.raw.list_events(run_id, since, limit), lambda _: None, limit)
    return _measure(ctx, case, sides)


def _iterate(ctx: Context, side: str, run_id: str, expected: int) -> dict[str, Any]:
    if side == STORE:
        args = ["store", ctx.target.store_url]
    else:
        args = [f"raw-{ctx.backend}", ctx.target.raw_dsn]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.iterate", *args, run_id, str(expected), ctx.store_spec],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or "error" in result:
        detail = result.get("error") or done.stderr.strip().splitlines()[-1:] or done.returncode
        raise RuntimeError(f"iter_events ({side}) failed: {detail}")
    return result


def iter_events(ctx: Context) -> Case:
    """``iter_events`` over the medium and the large run, each pass in a fresh process.

    The rate is the median over ``iter_rounds`` passes of the large run. Peak RSS (``VmHWM``,
    see :mod:`benchmarks.iterate`) of the passes shows whether memory stays flat: the growth
    from the medium to the large run should be small.
    """
    p = ctx.profile
    small, big = p.medium_run, p.big_run
    case = Case(
        f"iter_events_{big}",
        ctx.backend,
        "events/s",
        params={"events": big, "memory_compared_with": small},
        goals=[
            Goal("iter_events >= 0.8x raw streaming query + json.loads", "ratio:raw", 0.8),
            Goal(
                f"iter_events peak RSS grows < 50 MB from {small:,} to {big:,} events",
                "extra:store:rss_growth_mb",
                50.0,
                "<",
            ),
        ],
        note="each pass in its own process; raw streams with a server-side cursor on "
        "Postgres, the stepping sqlite3 cursor on SQLite",
    )
    sides = ["raw", STORE] if ctx.store is not None else ["raw"]
    if ctx.store is None:
        case.skipped[STORE] = ctx.store_error or "store unavailable"
        case.error = f"store unavailable: {ctx.store_error}"
    small_passes = {side: _iterate(ctx, side, ctx.dataset["medium"], small) for side in sides}
    big_passes: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    # The large pass is repeated, alternating which side goes first, and the median taken: a
    # single pass of a few seconds per side is at the mercy of whatever else the machine does.
    for index in range(p.iter_rounds):
        for side in sides if index % 2 == 0 else sides[::-1]:
            big_passes[side].append(_iterate(ctx, side, ctx.dataset["big"], big))
    for side in sides:
        m = Measurement()
        for one in big_passes[side]:
            m.add(one["events"], one["seconds"])
        small_peak = small_passes[side]["rss_peak_kb"] / 1024
        big_peak = max(one["rss_peak_kb"] for one in big_passes[side]) / 1024
        m.extra.update(
            {
                "rate_small": small / small_passes[side]["seconds"],
                "rss_peak_mb_small": small_peak,
                "rss_peak_mb_big": big_peak,
                "rss_growth_mb": big_peak - small_peak,
                "rss_before_pass_mb": big_passes[side][0]["rss_before_kb"] / 1024,
            }
        )
        case.sides[side] = m
    return case


# -- concurrency --------------------------------------------------------------------------


def concurrent(ctx: Context, mode: str, writers: int) -> Case:
    """``writers`` threads or processes appending single events, each to its own run."""
    case = Case(
        f"concurrent_{mode}_{writers}",
        ctx.backend,
        "events/s",
        params={"mode": mode, "writers": writers, "seconds": ctx.profile.concurrency_seconds},
        note="total committed single-event appends per second across all writers",
    )
    seconds = ctx.profile.concurrency_seconds

    def thread_side(label: str) -> RoundFn:
        def run(_: float) -> tuple[int, float]:
            run_ids = [ctx.run_id(f"conc-{label}") for _ in range(writers)]
            if label == STORE:
                fns = [concurrency.store_writer(ctx.store, r) for r in run_ids]
                return concurrency.run_threads(fns, seconds)
            conns = [ctx.raw.clone() for _ in run_ids]
            try:
                fns = [concurrency.raw_writer(c, r) for r, c in zip(run_ids, conns, strict=True)]
                return concurrency.run_threads(fns, seconds)
            finally:
                for conn in conns:
                    conn.close()

        return run

    def process_side(label: str) -> RoundFn:
        def run(_: float) -> tuple[int, float]:
            run_ids = [ctx.run_id(f"conc-{label}") for _ in range(writers)]
            return concurrency.run_processes(label, ctx.target, ctx.store_spec, run_ids, seconds)

        return run

    make = thread_side if mode == "threads" else process_side
    sides = {label: make(label) for label in ([STORE] if ctx.store is not None else []) + ["raw"]}
    return _measure(ctx, case, sides, rounds=ctx.profile.concurrency_rounds, warmup=False)
