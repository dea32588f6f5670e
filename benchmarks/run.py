"""``python -m benchmarks``: the store against the raw driver, on SQLite and Postgres.

Examples::

    python -m benchmarks          # full run on SQLite and Postgres (~9 min on 2 cores)
    python -m benchmarks --quick --backends sqlite
    python -m benchmarks --backends postgres --postgres-url postgresql+psycopg://u@host/db

Each backend gets a throwaway database (a temporary SQLite directory; ``CREATE DATABASE
bench_<random>`` on the Postgres server, dropped at the end). The store is built from its URL
and migrates its own tables; the raw baselines use tables of the same shape beside them. The
table printed at the end has one row per case and baseline; the JSON file has every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import cases, machine, report
from benchmarks import seed as seed_module
from benchmarks.databases import (
    DEFAULT_POSTGRES_URL,
    DEFAULT_STORE,
    Target,
    load_factory,
    postgres_target,
    sqlite_target,
    store_settings,
)
from benchmarks.profiles import PROFILES, Profile
from benchmarks.results import Case
from benchmarks.seed import REPO_ROOT

GROUPS = ("append", "batch", "snapshot", "read", "iter", "threads", "processes")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the store against the raw driver doing the same durable work.",
    )
    parser.add_argument(
        "--backends",
        default=None,
        help="comma-separated: sqlite,postgres (default: both; postgres is skipped "
        "with a message when its server does not answer)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and short budgets")
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=None,
        help="full (default), quick (= --quick) or smoke (tiny, for the test suite)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON file to write (default benchmarks/results/<time>-<profile>.json)",
    )
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="SQLAlchemy URL of a Postgres server a throwaway database is created "
        "on (default $PURPOSE_AGENT_BENCH_POSTGRES_URL, "
        f"$PURPOSE_AGENT_TEST_POSTGRES_URL, then {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--sqlite-dir",
        default=None,
        help="where the throwaway SQLite directory is made (default: the temp dir)",
    )
    parser.add_argument(
        "--store",
        default=DEFAULT_STORE,
        help=f"module:Class of the store under test (default {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--cases",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run (default all: {','.join(GROUPS)})",
    )
    parser.add_argument(
        "--big-run",
        type=int,
        default=None,
        help="events in the large run (default 1,000,000; --quick 20,000)",
    )
    parser.add_argument("--plain", action="store_true", help="plain-text table instead of rich")
    return parser.parse_args(argv)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _postgres_admin_url(explicit: str | None) -> str:
    return (
        explicit
        or os.environ.get("PURPOSE_AGENT_BENCH_POSTGRES_URL")
        or os.environ.get("PURPOSE_AGENT_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


def _plan(ctx: cases.Context, groups: set[str]) -> list[tuple[str, Callable[[], Case]]]:
    p = ctx.profile
    plan: list[tuple[str, Callable[[], Case]]] = []
    if "append" in groups:
        plan.append(("append_single", lambda: cases.append_single(ctx)))
    if "batch" in groups:
        for size in p.batch_sizes:
            plan.append((f"append_batch_{size}", functools.partial(cases.append_batch, ctx, size)))
    if "snapshot" in groups:
        for size in p.snapshot_sizes:
            plan.append(
                (f"snapshot_{cases.size_name(size)}", functools.partial(cases.snapshot, ctx, size))
            )
    if groups & {"read", "iter"}:
        plan.append(("bulk_load", lambda: cases.load_dataset(ctx)))
    if "read" in groups:
        plan.append(("recover", lambda: cases.recover(ctx)))
        plan.append(("list_events", lambda: cases.list_events_run(ctx)))
        plan.append(("list_events_page", lambda: cases.list_events_page(ctx)))
    if "iter" in groups:
        plan.append(("iter_events", lambda: cases.iter_events(ctx)))
    for mode, levels in (("threads", p.thread_levels), ("processes", p.process_levels)):
        if mode in groups:
            for n in levels:
                plan.append(
                    (
                        f"concurrent_{mode}_{n}",
                        functools.partial(cases.concurrent, ctx, mode, n),
                    )
                )
    return plan


def run_backend(
    target: Target, profile: Profile, store_spec: str, groups: set[str]
) -> dict[str, Any]:
    """Run every case on one throwaway database and return the backend's part of the report."""
    doc: dict[str, Any] = {"database": dict(target.info)}
    store: Any = None
    store_error: str | None = None
    try:
        store = load_factory(store_spec)(target.store_url)
    except Exception as exc:
        store_error = f"{type(exc).__name__}: {exc}"
        _log(f"  store unavailable ({store_error}); measuring the baselines only")
    settings = store_settings(store, target.backend) if store is not None else {}
    doc["store_settings"] = settings
    if target.backend == "sqlite":
        # The raw baseline commits at exactly the store's durability settings.
        target.raw_options = {
            "journal_mode": settings.get("journal_mode", "wal"),
            "synchronous": settings.get("synchronous", 2),
        }
    raw = target.raw()
    raw.create_tables()
    doc["raw_settings"] = raw.settings()
    seed, seed_reason = None, None
    if target.backend == "sqlite":
        try:
            seed_path = str(target.seed_path)
            seed = seed_module.load().SQLiteCheckpointer(seed_path)
            doc["seed"] = {
                "path": str(seed_module.locate()),
                **seed_module.journal_settings(seed_path),
            }
        except FileNotFoundError as exc:
            seed_reason = str(exc)
            _log(f"  skipping the seed's cases: {seed_reason}")
            doc["seed"] = {"skipped": seed_reason}
    ctx = cases.Context(
        target=target,
        profile=profile,
        store_spec=store_spec,
        store=store,
        store_error=store_error,
        raw=raw,
        seed=seed,
        seed_reason=seed_reason,
        log=_log,
        token=uuid.uuid4().hex[:8],
    )
    results: list[Case] = []
    try:
        for name, fn in _plan(ctx, groups):
            began = time.perf_counter()
            _log(f"  {name} ...")
            try:
                case = fn()
            except Exception as exc:
                detail = traceback.format_exception_only(exc)[-1].strip()
                _log(f"  {name} failed: {detail}")
                case = Case(name, target.backend, "-", error=detail, baseline=None)
            case.params.setdefault("wall_seconds", round(time.perf_counter() - began, 2))
            results.append(case)
    finally:
        raw.close()
        if store is not None:
            store.close()
    doc["store_error"] = store_error
    doc["cases"] = results
    return doc


@contextlib.contextmanager
def open_target(backend: str, args: argparse.Namespace) -> Iterator[Target]:
    if backend == "sqlite":
        with sqlite_target(args.sqlite_dir) as target:
            yield target
    elif backend == "postgres":
        with postgres_target(_postgres_admin_url(args.postgres_url)) as target:
            yield target
    else:
        raise ValueError(f"unknown backend {backend!r} (sqlite, postgres)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    profile = PROFILES[args.profile or ("quick" if args.quick else "full")].with_big_run(
        args.big_run
    )
    explicit = args.backends is not None
    backends = [b.strip() for b in (args.backends or "sqlite,postgres").split(",") if b.strip()]
    groups = {g.strip() for g in args.cases.split(",") if g.strip()}
    unknown = groups - set(GROUPS)
    if unknown:
        _log(f"unknown case groups: {', '.join(sorted(unknown))} (known: {', '.join(GROUPS)})")
        return 2
    started = datetime.now(UTC)
    began = time.perf_counter()
    document: dict[str, Any] = {
        "benchmark": "purpose_agent store vs raw driver",
        "format": 1,
        "command": [
            Path(sys.executable).name,
            "-m",
            "benchmarks",
            *(argv if argv is not None else sys.argv[1:]),
        ],
        "started_at": started.isoformat(timespec="seconds"),
        "profile": dataclasses.asdict(profile),
        "store": args.store,
        "machine": machine.describe(),
        "backends": {},
    }
    failed = False
    all_cases: list[Case] = []
    for backend in backends:
        _log(f"== {backend} ({profile.name}) ==")
        try:
            with open_target(backend, args) as target:
                doc = run_backend(target, profile, args.store, groups)
        except Exception as exc:
            detail = traceback.format_exception_only(exc)[-1].strip()
            _log(f"  {backend} skipped: {detail}")
            document["backends"][backend] = {"skipped": detail}
            failed = failed or explicit or backend == "sqlite"
            continue
        if backend == "postgres":
            document["machine"]["postgres_version"] = doc["database"].get("postgres_version")
        backend_cases: list[Case] = doc.pop("cases")
        all_cases += backend_cases
        failed = failed or any(c.error for c in backend_cases)
        document["backends"][backend] = {**doc, "cases": [c.to_json() for c in backend_cases]}
    verdicts = [v for c in all_cases for v in c.verdicts()]
    document["targets"] = verdicts
    document["summary"] = {
        "targets_met": sum(1 for v in verdicts if v["met"] is True),
        "targets_missed": sum(1 for v in verdicts if v["met"] is False),
        "targets_not_measured": sum(1 for v in verdicts if v["met"] is None),
        "cases_failed": sum(1 for c in all_cases if c.error),
    }
    document["seconds"] = round(time.perf_counter() - began, 1)
    out = args.out or REPO_ROOT / "benchmarks" / "results" / (
        f"{started.strftime('%Y%m%dT%H%M%SZ')}-{profile.name}-{'-'.join(backends)}.json"
    )
    report.write_json(out, document)
    report.print_table(all_cases, plain=args.plain)
    summary = document["summary"]
    print(
        f"\ntargets met {summary['targets_met']}, missed {summary['targets_missed']}, "
        f"not measured {summary['targets_not_measured']}; cases failed {summary['cases_failed']}; "
        f"{document['seconds']} s; JSON: {out}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
