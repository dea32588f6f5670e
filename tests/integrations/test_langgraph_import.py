"""Threads run on LangGraph's own savers, imported into the saver, resume as they would have.

Real graphs run on ``SqliteSaver`` and ``PostgresSaver``; their threads are imported into
``PurposeAgentSaver`` on SQLite, Postgres and MariaDB, then compared checkpoint by checkpoint
and resumed on both sides, which must answer alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.graph")
pytest.importorskip("langgraph.checkpoint.sqlite")

from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command, StateSnapshot
from sqlalchemy.engine import URL

from purpose_agent import InMemoryCheckpointer, InvalidInput, SQLCheckpointer
from purpose_agent.cli.output import count
from purpose_agent.errors import ThreadConflict
from purpose_agent.integrations.langgraph import (
    ImportProgress,
    PurposeAgentSaver,
    aimport_threads,
    group_for,
    import_threads,
)
from tests.conftest import DATABASES, empty_tables
from tests.integrations import graphs
from tests.integrations.together import AppendsTogether
from tests.servers import server_url, throwaway_database
from tests.test_cli_support import invoke

SOURCES = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


def _config(thread_id: str, **extra: Any) -> Any:
    return {"configurable": {"thread_id": thread_id, **extra}}


# -- the two sides --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def langgraph_postgres() -> Iterator[str]:
    """A database of LangGraph's ``PostgresSaver``'s own, set up once; its URL for psycopg."""
    postgres_saver = pytest.importorskip("langgraph.checkpoint.postgres")
    with server_url("postgres") as admin, throwaway_database(admin, "pa_lgsrc") as url:
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with postgres_saver.PostgresSaver.from_conn_string(conninfo) as saver:
            saver.setup()
        yield conninfo


def _empty_langgraph_postgres(conninfo: str) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("TRUNCATE checkpoints, checkpoint_blobs, checkpoint_writes")


@pytest.fixture(params=SOURCES)
def source_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty LangGraph checkpointer, as ``import langgraph --from`` names it."""
    if request.param == "sqlite":
        path = tmp_path / "langgraph.sqlite"
        with SqliteSaver.from_conn_string(str(path)) as saver:
            saver.setup()
        return f"sqlite:{path}"
    conninfo: str = request.getfixturevalue("langgraph_postgres")
    _empty_langgraph_postgres(conninfo)
    return conninfo


def _open_source(url: str) -> Any:
    if url.startswith("sqlite:"):
        return SqliteSaver.from_conn_string(url.removeprefix("sqlite:"))
    from langgraph.checkpoint.postgres import PostgresSaver

    return PostgresSaver.from_conn_string(url)


@pytest.fixture(params=DATABASES)
def target_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store on each SQL backend, as ``--url`` names it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: URL = request.getfixturevalue(f"{request.param}_url")
    empty_tables(server)
    return server.render_as_string(hide_password=False)


@pytest.fixture
def target(target_url: str) -> Iterator[PurposeAgentSaver]:
    with PurposeAgentSaver.from_url(target_url) as saver:
        yield saver


@pytest.fixture
def sqlite_source(tmp_path: Path) -> Iterator[SqliteSaver]:
    with SqliteSaver.from_conn_string(str(tmp_path / "source.sqlite")) as saver:
        yield saver


# -- what the graphs leave, and how it is compared ------------------------------------------


THREADS = ("hitl", "fan", "nest", "review", "travel")


def _run_graphs(saver: BaseCheckpointSaver[Any]) -> None:
    """Interrupts (one, parallel, in a subgraph), parallel branches and a time-travel fork."""
    graphs.approval(saver).invoke({"request": "refund"}, _config("hitl"))
    graphs.fan_out_rounds(graphs.fan_out(saver), "fan", 2)
    graphs.nested(saver).invoke({"steps": []}, _config("nest"))
    graphs.parallel_review(saver).invoke({"request": "merger", "answers": []}, _config("review"))
    approval = graphs.approval(saver)
    approval.invoke({"request": "travel"}, _config("travel"))
    approval.invoke(Command(resume="first"), _config("travel"))
    older = next(s for s in approval.get_state_history(_config("travel")) if s.next == ("ask",))
    approval.invoke(None, older.config)  # a fork from the interrupted checkpoint


def _listed(saver: BaseCheckpointSaver[Any], thread_id: str) -> list[tuple[Any, ...]]:
    """Everything a saver gives of a thread, every namespace, newest first."""
    return [
        (t.config, t.checkpoint, t.metadata, t.parent_config, t.pending_writes)
        for t in saver.list(_config(thread_id))
    ]


def _shape(state: Any) -> tuple[Any, ...]:
    """A state snapshot as LangGraph shows it, subgraph states included."""
    tasks = tuple(
        (
            task.id,
            task.name,
            task.path,
            tuple(i.value for i in task.interrupts),
            task.result,
            _shape(task.state) if isinstance(task.state, StateSnapshot) else task.state,
        )
        for task in state.tasks
    )
    return (
        state.config,
        state.parent_config,
        state.values,
        state.next,
        state.metadata,
        state.created_at,
        tasks,
        tuple((i.id, i.value) for i in state.interrupts),
    )


def _history(graph: Any, thread_id: str, **extra: Any) -> list[tuple[Any, ...]]:
    return [_shape(s) for s in graph.get_state_history(_config(thread_id, **extra))]


def _assert_same_threads(
    source: BaseCheckpointSaver[Any], target: PurposeAgentSaver, threads: tuple[str, ...]
) -> None:
    for thread in threads:
        expected = _listed(source, thread)
        assert expected, thread
        assert _listed(target, thread) == expected, thread


# -- the importer -----------------------------------------------------------------------------


def test_imported_threads_read_and_resume_as_on_the_source(
    source_url: str, target: PurposeAgentSaver
) -> None:
    """Every checkpoint, parent, value and write comes across; graphs resume alike on both."""
    with _open_source(source_url) as source:
        _run_graphs(source)
        steps: list[ImportProgress] = []
        report = import_threads(source, target, progress=steps.append)

        assert report.ok, report.problems
        assert report.threads_total == report.threads_imported == len(THREADS)
        total = sum(len(_listed(source, thread)) for thread in THREADS)
        assert report.checkpoints == total
        assert report.writes == sum(
            len(writes or []) for thread in THREADS for *_, writes in _listed(source, thread)
        )
        assert dataclasses.replace(steps[-1], thread_id="") == ImportProgress(
            "", len(THREADS), len(THREADS), total
        )
        _assert_same_threads(source, target, THREADS)

        # What LangGraph makes of them: history with the same ids, order and parents, the
        # pending interrupts, the subgraph's state.
        for thread, build in [
            ("hitl", graphs.approval),
            ("fan", graphs.fan_out),
            ("review", graphs.parallel_review),
            ("travel", graphs.approval),
        ]:
            assert _history(build(target), thread) == _history(build(source), thread), thread
        nested_source, nested_target = graphs.nested(source), graphs.nested(target)
        assert nested_target.get_state(_config("nest"), subgraphs=True) == nested_source.get_state(
            _config("nest"), subgraphs=True
        )
        assert _history(nested_target, "nest") == _history(nested_source, "nest")

        # Resumed on each side: the same answers.
        for side in (source, target):
            done = graphs.approval(side).invoke(Command(resume="yes"), _config("hitl"))
            assert done == {"request": "REFUND", "answer": "yes", "outcome": "REFUND:yes"}
            inner = graphs.nested(side).invoke(Command(resume="v"), _config("nest"))
            assert inner["steps"][-3:] == ["inner:v", "inner:done", "after"]
            review = graphs.parallel_review(side)
            pending = review.get_state(_config("review")).interrupts
            answers = {i.id: f"ok-{i.value['reviewer']}" for i in pending}
            result = review.invoke(Command(resume=answers), _config("review"))
            assert sorted(result["answers"]) == ["done", "finance:ok-finance", "legal:ok-legal"]

        # Time travel from an older checkpoint of the import, on each side.
        forked = []
        for side in (source, target):
            approval = graphs.approval(side)
            draft = [s for s in approval.get_state_history(_config("travel")) if s.next == ("ask",)]
            oldest = draft[-1]
            approval.invoke(None, oldest.config)
            forked.append(approval.invoke(Command(resume="second"), _config("travel")))
        assert (
            forked[0]
            == forked[1]
            == {
                "request": "TRAVEL",
                "answer": "second",
                "outcome": "TRAVEL:second",
            }
        )


def test_importing_again_writes_nothing(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver
) -> None:
    """A second run finds every checkpoint and write and stores no event twice."""
    _run_graphs(sqlite_source)
    first = import_threads(sqlite_source, target)
    stored = _event_counts(target)
    again = import_threads(sqlite_source, target)

    assert again.ok
    assert (again.threads_unchanged, again.checkpoints, again.writes) == (len(THREADS), 0, 0)
    assert again.checkpoints_present == first.checkpoints
    assert _event_counts(target) == stored


def _event_counts(saver: PurposeAgentSaver) -> dict[str, int]:
    store = saver.store
    assert isinstance(store, SQLCheckpointer)
    counts = {}
    for thread in THREADS:
        for run_id in store.list_runs(group=group_for(thread)):
            counts[run_id] = len(store.list_events(run_id))
    return counts


class _Crash(Exception):
    """What the saver below raises, standing in for a process that dies."""


class _CrashingSaver(PurposeAgentSaver):
    """Fails its ``after``-th call of ``method``, once the calls before it have been stored."""

    def __init__(self, store: Any, method: str, after: int) -> None:
        super().__init__(store)
        self.method, self.left = method, after
        self.stored_checkpoints = self.stored_writes = 0

    def _tick(self, method: str) -> None:
        if method == self.method:
            self.left -= 1
            if self.left < 0:
                raise _Crash(method)

    def put(self, *args: Any, **kwargs: Any) -> Any:
        self._tick("put")
        stored = super().put(*args, **kwargs)
        self.stored_checkpoints += 1
        return stored

    def put_writes(self, *args: Any, **kwargs: Any) -> None:
        self._tick("put_writes")
        super().put_writes(*args, **kwargs)
        self.stored_writes += len(args[1])

    def _put_missing_writes(self, *args: Any) -> int:
        # What the import calls for writes stored without a key (interrupts, errors).
        self._tick("put_writes")
        written = super()._put_missing_writes(*args)
        self.stored_writes += written
        return written


@pytest.mark.parametrize(("method", "after"), [("put", 7), ("put_writes", 11), ("put", 0)])
def test_an_import_that_crashed_midway_is_finished_by_running_it_again(
    sqlite_source: SqliteSaver, target_url: str, tmp_path: Path, method: str, after: int
) -> None:
    """Stopped after some checkpoints (or between a checkpoint and its writes), then re-run:
    the store ends as a clean import leaves it, every event once."""
    _run_graphs(sqlite_source)
    with PurposeAgentSaver.from_url(f"sqlite:///{tmp_path / 'clean.db'}") as clean:
        expected = import_threads(sqlite_source, clean)
        clean_counts = _event_counts(clean)

    store = SQLCheckpointer(target_url)
    try:
        crashing = _CrashingSaver(store, method, after)
        with pytest.raises(_Crash):
            import_threads(sqlite_source, crashing)
        resumed = import_threads(sqlite_source, PurposeAgentSaver(store))
        target = PurposeAgentSaver(store)

        assert resumed.ok
        if method == "put":
            assert crashing.stored_checkpoints == after
        else:  # stopped between a checkpoint and the rest of its writes
            assert crashing.stored_checkpoints > 0
            assert crashing.stored_writes > 0
        assert resumed.checkpoints == expected.checkpoints - crashing.stored_checkpoints
        assert resumed.writes == expected.writes - crashing.stored_writes
        assert (
            resumed.checkpoints + resumed.checkpoints_completed + resumed.checkpoints_present
            == expected.checkpoints
        )
        _assert_same_threads(sqlite_source, target, THREADS)
        assert _event_counts(target) == clean_counts
        done = graphs.approval(target).invoke(Command(resume="yes"), _config("hitl"))
        assert done["outcome"] == "REFUND:yes"
    finally:
        store.close()


def test_a_thread_held_with_other_content_is_refused_and_left_alone(
    tmp_path: Path, target: PurposeAgentSaver
) -> None:
    """Same thread id, another history: refused by name, untouched; other threads go on."""
    with SqliteSaver.from_conn_string(str(tmp_path / "a.sqlite")) as first:
        graphs.approval(first).invoke({"request": "refund"}, _config("hitl"))
        assert import_threads(first, target).ok
    before = _listed(target, "hitl")

    with SqliteSaver.from_conn_string(str(tmp_path / "b.sqlite")) as second:
        graphs.approval(second).invoke({"request": "other"}, _config("hitl"))
        graphs.fan_out_rounds(graphs.fan_out(second), "fan", 1)
        report = import_threads(second, target)

        assert not report.ok
        assert [p.thread_id for p in report.problems] == ["hitl"]
        assert "'hitl'" in report.problems[0].message
        assert "already in the target with other content" in report.problems[0].message
        assert report.threads_imported == 1  # fan
        assert _listed(target, "hitl") == before
        _assert_same_threads(second, target, ("fan",))

        with pytest.raises(ThreadConflict) as raised:
            import_threads(second, target, stop_on_conflict=True)
        assert raised.value.thread_id == "hitl"
    assert _listed(target, "hitl") == before


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"channel_values": {"v": "two"}}, "differs in the value of channel 'v'"),
        ({"metadata": {"step": 5}}, "differs in its metadata"),
        ({"channel_versions": {"v": 2}}, "differs in its channel versions or body"),
    ],
)
def test_a_checkpoint_stored_under_the_same_id_with_other_content_is_a_conflict(
    target: PurposeAgentSaver, change: dict[str, Any], said: str
) -> None:
    """Same thread, same checkpoint id, another value: refused, nothing written."""
    checkpoint = {**empty_checkpoint(), "id": str(uuid6(clock_seq=-1))}
    first, second = InMemorySaver(), InMemorySaver()
    for saver, changed in ((first, {}), (second, change)):
        body = {
            **checkpoint,
            "channel_values": changed.get("channel_values", {"v": "one"}),
            "channel_versions": changed.get("channel_versions", {"v": 1}),
        }
        metadata = changed.get("metadata", {"step": 0})
        saver.put(_config("t", checkpoint_ns=""), body, metadata, body["channel_versions"])
    assert import_threads(first, target).ok
    before = _listed(target, "t")

    report = import_threads(second, target)

    assert [p.thread_id for p in report.problems] == ["t"]
    assert said in report.problems[0].message
    assert _listed(target, "t") == before


def test_a_thread_moved_on_in_the_source_is_brought_up_to_date(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver
) -> None:
    """Imported while interrupted, resumed on the source, imported again: the rest comes."""
    approval = graphs.approval(sqlite_source)
    approval.invoke({"request": "refund"}, _config("hitl"))
    import_threads(sqlite_source, target, ["hitl"])
    approval.invoke(Command(resume="yes"), _config("hitl"))

    report = import_threads(sqlite_source, target, ["hitl"])

    assert report.ok
    assert report.checkpoints == 2  # the resumed step and the end
    _assert_same_threads(sqlite_source, target, ("hitl",))


def test_a_thread_moved_on_in_the_target_is_left_as_it_is(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver
) -> None:
    """Resumed on the target after the import: a re-run finds the source's part and adds none."""
    graphs.approval(sqlite_source).invoke({"request": "refund"}, _config("hitl"))
    import_threads(sqlite_source, target)
    graphs.approval(target).invoke(Command(resume="yes"), _config("hitl"))
    after_resume = _listed(target, "hitl")

    report = import_threads(sqlite_source, target)

    assert report.ok
    assert (report.threads_unchanged, report.checkpoints, report.writes) == (1, 0, 0)
    assert _listed(target, "hitl") == after_resume


# Defined only where LangGraph has DeltaChannel: a skip of a required backend fails the run.
if graphs.DeltaChannel is not None:

    def test_a_delta_channel_thread_is_rebuilt_alike_and_goes_on_alike(
        sqlite_source: SqliteSaver, target: PurposeAgentSaver
    ) -> None:
        """A ``DeltaChannel`` is rebuilt from the writes along the parent chain: they all came."""
        for short in (False, True):
            chat = graphs.delta_chat(sqlite_source, short=short)
            for turn in range(11):
                chat.invoke({"items": [f"q{turn}"]}, _config(f"delta-{short}"))
        threads = ("delta-False", "delta-True")

        assert import_threads(sqlite_source, target).ok

        _assert_same_threads(sqlite_source, target, threads)
        for short, thread in zip((False, True), threads, strict=True):
            channels = ["items", "turns"] if short else ["items"]
            # Listed first: SqliteSaver holds its lock while a listing is read.
            for checkpoint in list(sqlite_source.list(_config(thread, checkpoint_ns=""))):
                assert target.get_delta_channel_history(
                    config=checkpoint.config, channels=channels
                ) == sqlite_source.get_delta_channel_history(
                    config=checkpoint.config, channels=channels
                )
            states = [
                graphs.delta_chat(side, short=short).get_state(_config(thread))
                for side in (sqlite_source, target)
            ]
            assert states[0].values == states[1].values
            assert len(states[0].values["items"]) == 22
            ends = [
                graphs.delta_chat(side, short=short).invoke({"items": ["more"]}, _config(thread))
                for side in (sqlite_source, target)
            ]
            assert ends[0] == ends[1]


def test_threads_imported_by_several_workers_come_across_alike(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver, tmp_path: Path
) -> None:
    """Threads written at once by four workers: each complete, in order, every event once."""
    _run_graphs(sqlite_source)
    for n in range(8):
        graphs.approval(sqlite_source).invoke({"request": f"r{n}"}, _config(f"more-{n}"))
    threads = (*THREADS, *(f"more-{n}" for n in range(8)))
    steps: list[ImportProgress] = []

    report = import_threads(sqlite_source, target, workers=4, progress=steps.append)

    assert report.ok
    assert report.threads_imported == len(threads)
    _assert_same_threads(sqlite_source, target, threads)
    assert steps[-1].threads_done == len(threads)
    assert steps[-1].checkpoints_done == report.checkpoints
    assert [step.threads_done for step in steps] == sorted(step.threads_done for step in steps)
    with PurposeAgentSaver.from_url(f"sqlite:///{tmp_path / 'one.db'}") as alone:
        import_threads(sqlite_source, alone)
        assert _event_counts(target) == _event_counts(alone)


def _at_once(*work: Callable[[], Any]) -> list[Any]:
    """Run each function in its own thread; their results, or the first error raised."""
    with ThreadPoolExecutor(len(work)) as pool:
        return [future.result() for future in [pool.submit(one) for one in work]]


def test_two_imports_of_the_same_threads_at_once_store_each_write_once(
    tmp_path: Path, target_url: str
) -> None:
    """Started twice at once, the imports end as one leaves the target: every interrupt,
    error and resume value stored once, not once per import."""
    path = str(tmp_path / "source.sqlite")
    with SqliteSaver.from_conn_string(path) as source:
        _run_graphs(source)
    with PurposeAgentSaver.from_url(f"sqlite:///{tmp_path / 'alone.db'}") as alone:
        with SqliteSaver.from_conn_string(path) as source:
            expected = import_threads(source, alone)
        alone_counts = _event_counts(alone)
    barrier = threading.Barrier(2, timeout=60)
    stores = [SQLCheckpointer(target_url) for _ in range(2)]

    def importing(store: SQLCheckpointer) -> Any:
        with SqliteSaver.from_conn_string(path) as source:
            return import_threads(source, PurposeAgentSaver(AppendsTogether(store, barrier)))

    try:
        reports = _at_once(*(functools.partial(importing, store) for store in stores))
        target = PurposeAgentSaver(stores[0])

        assert all(report.ok for report in reports), [r.problems for r in reports]
        assert _event_counts(target) == alone_counts
        with SqliteSaver.from_conn_string(path) as source:
            _assert_same_threads(source, target, THREADS)
            again = import_threads(source, target)
        assert (again.checkpoints, again.writes) == (0, 0)
        assert again.checkpoints_present == expected.checkpoints
    finally:
        for store in stores:
            store.close()


def test_workers_below_one_are_refused(sqlite_source: SqliteSaver) -> None:
    with pytest.raises(InvalidInput, match="workers must be an int >= 1"):
        import_threads(sqlite_source, PurposeAgentSaver(InMemoryCheckpointer()), workers=0)


@pytest.mark.parametrize("given", ["tt", b"tt"])
def test_one_thread_id_given_alone_is_refused_not_taken_as_its_characters(
    sqlite_source: SqliteSaver, given: Any
) -> None:
    """``"tt"`` would be the thread ``"t"`` (once); the async import refuses it alike."""
    graphs.approval(sqlite_source).invoke({"request": "refund"}, _config("t"))
    target = PurposeAgentSaver(InMemoryCheckpointer())

    with pytest.raises(InvalidInput, match="a list of thread ids, not one"):
        import_threads(sqlite_source, target, given)
    with pytest.raises(InvalidInput, match="a list of thread ids, not one"):
        asyncio.run(aimport_threads(sqlite_source, target, given))
    assert not _listed(target, "t")


def test_the_async_import_reads_an_async_source_and_writes_alike(
    tmp_path: Path, target_url: str
) -> None:
    """``aimport_threads`` over ``AsyncSqliteSaver`` and the async store: the same threads."""
    aiosqlite_saver = pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    path = tmp_path / "source.sqlite"
    with SqliteSaver.from_conn_string(str(path)) as source:
        _run_graphs(source)
        expected = {thread: _listed(source, thread) for thread in THREADS}

    async def scenario() -> tuple[Any, Any]:
        async with (
            aiosqlite_saver.AsyncSqliteSaver.from_conn_string(str(path)) as source,
            PurposeAgentSaver.afrom_url(target_url) as target,
        ):
            report = await aimport_threads(source, target, workers=3)
            again = await aimport_threads(source, target)
            # Another "hitl" in the source, with new checkpoints: refused, raised as such.
            await source.adelete_thread("hitl")
            await graphs.approval(source).ainvoke({"request": "x"}, _config("hitl"))
            with pytest.raises(ThreadConflict):
                await aimport_threads(source, target, ["fan", "hitl"], stop_on_conflict=True)
            return report, again

    report, again = asyncio.run(scenario())

    assert report.ok
    assert report.threads_imported == len(THREADS)
    assert (again.threads_unchanged, again.checkpoints, again.writes) == (len(THREADS), 0, 0)
    with PurposeAgentSaver.from_url(target_url) as target:
        for thread, listed in expected.items():
            if thread != "hitl":
                assert _listed(target, thread) == listed


def test_an_in_memory_saver_is_read_through_the_same_api(target: PurposeAgentSaver) -> None:
    """Nothing but LangGraph's public API is read: ``InMemorySaver`` imports as the others."""
    source = InMemorySaver()
    _run_graphs(source)

    assert import_threads(source, target).ok
    for thread in THREADS:
        # InMemorySaver lists a thread namespace by namespace, the SQL savers newest first;
        # langgraph-checkpoint 4.0 gave a checkpoint's writes in the order they
        # were put, not in LangGraph's replay order (its special writes first).
        expected = sorted(_by_task(_listed(source, thread)), key=_by_namespace_and_id)
        assert expected
        found = sorted(_by_task(_listed(target, thread)), key=_by_namespace_and_id)
        assert found == expected


def _by_task(listing: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A listing with each checkpoint's writes ordered by task and channel (stable)."""
    return [
        (*listed[:4], sorted(listed[4] or [], key=lambda write: (write[0], write[1])))
        for listed in listing
    ]


def _by_namespace_and_id(listed: tuple[Any, ...]) -> tuple[str, str]:
    configurable = listed[0]["configurable"]
    return configurable["checkpoint_ns"], configurable["checkpoint_id"]


def test_the_threads_of_langgraphs_sql_savers_are_found_without_reading_every_checkpoint(
    source_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing of every checkpoint loads all their values (PostgresSaver: all at once)."""
    with _open_source(source_url) as source:
        _run_graphs(source)
        listed = type(source).list

        def one_thread_at_a_time(self: Any, config: Any, **options: Any) -> Any:
            assert config is not None, "every checkpoint of the source was listed"
            return listed(self, config, **options)

        monkeypatch.setattr(type(source), "list", one_thread_at_a_time)
        target = PurposeAgentSaver(InMemoryCheckpointer())

        report = import_threads(source, target)

        assert report.ok
        assert report.threads_imported == len(THREADS)
        _assert_same_threads(source, target, THREADS)


def test_the_threads_of_an_async_sql_saver_are_found_without_reading_every_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aiosqlite_saver = pytest.importorskip("langgraph.checkpoint.sqlite.aio")
    path = tmp_path / "source.sqlite"
    with SqliteSaver.from_conn_string(str(path)) as source:
        _run_graphs(source)
    listed = aiosqlite_saver.AsyncSqliteSaver.alist

    def one_thread_at_a_time(self: Any, config: Any, **options: Any) -> Any:
        assert config is not None, "every checkpoint of the source was listed"
        return listed(self, config, **options)

    monkeypatch.setattr(aiosqlite_saver.AsyncSqliteSaver, "alist", one_thread_at_a_time)

    async def scenario() -> Any:
        async with aiosqlite_saver.AsyncSqliteSaver.from_conn_string(str(path)) as source:
            return await aimport_threads(source, PurposeAgentSaver(InMemoryCheckpointer()))

    report = asyncio.run(scenario())

    assert report.ok
    assert report.threads_imported == len(THREADS)


def test_only_the_threads_asked_for_are_imported(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver
) -> None:
    _run_graphs(sqlite_source)

    report = import_threads(sqlite_source, target, ["nest", "hitl", "nest"])

    assert (report.threads_total, report.threads_imported) == (2, 2)
    assert {t for t in THREADS if _listed(target, t)} == {"nest", "hitl"}


def test_a_thread_the_source_lacks_is_reported_not_skipped(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver
) -> None:
    report = import_threads(sqlite_source, target, ["nowhere"])

    assert not report.ok
    assert report.problems[0].thread_id == "nowhere"
    assert "no checkpoint" in report.problems[0].message


def test_a_value_the_target_cannot_serialize_fails_its_thread_only(
    sqlite_source: SqliteSaver, target: PurposeAgentSaver
) -> None:
    """SqliteSaver keeps metadata as JSON; what the target's serializer refuses is a problem."""
    approval = graphs.approval(sqlite_source)
    approval.invoke({"request": "a"}, {**_config("huge"), "metadata": {"n": 2**70}})
    approval.invoke({"request": "b"}, _config("plain"))

    report = import_threads(sqlite_source, target, ["huge", "plain"])

    assert [problem.thread_id for problem in report.problems] == ["huge"]
    assert "serializer refuses" in report.problems[0].message
    assert _listed(target, "plain") == _listed(sqlite_source, "plain")


def test_a_type_the_source_will_not_load_refuses_its_thread_until_allowed(
    tmp_path: Path, target: PurposeAgentSaver
) -> None:
    """Strict msgpack gives a disallowed type back as a dict: imported so, it resumes as one."""
    conn = sqlite3.connect(tmp_path / "strict.sqlite", check_same_thread=False)
    # What LANGGRAPH_STRICT_MSGPACK=true gives every saver (LangGraph's announced default).
    source = SqliteSaver(conn, serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    graphs.ticket(source).invoke({}, _config("ticket"))  # compiled: the graph's types allowed
    graphs.approval(source).invoke({"request": "a"}, _config("plain"))

    refused = import_threads(source, target)

    assert [problem.thread_id for problem in refused.problems] == ["ticket"]
    assert "graphs.Ticket" in refused.problems[0].message
    assert not _listed(target, "ticket")
    assert _listed(target, "plain") == _listed(source, "plain")

    allowed = source.with_allowlist([(graphs.__name__, "Ticket"), (graphs.__name__, "Priority")])
    assert import_threads(allowed, target, ["ticket"]).ok
    assert graphs.ticket(target).invoke(None, _config("ticket"))["seen"] == "Ticket"
    conn.close()


_NEWEST = "checkpoint_id = (SELECT max(checkpoint_id) FROM checkpoints WHERE thread_id = 'b')"
_NO_CHANNELS = JsonPlusSerializer().dumps_typed({"v": 4, "id": "x"})[1]


@pytest.mark.parametrize(
    ("damage", "parameters"),
    [
        pytest.param(
            f"UPDATE checkpoints SET checkpoint = substr(checkpoint, 1, 10) WHERE {_NEWEST}",
            (),
            id="a truncated checkpoint",
        ),
        pytest.param(
            f"UPDATE checkpoints SET type = 'bogus' WHERE {_NEWEST}", (), id="an unknown type"
        ),
        pytest.param(
            "UPDATE writes SET value = substr(value, 1, 3) WHERE thread_id = 'b'",
            (),
            id="a truncated write",
        ),
        pytest.param(
            "UPDATE checkpoints SET metadata = '[1]' WHERE thread_id = 'b'",
            (),
            id="metadata not a mapping",
        ),
        pytest.param(
            f"UPDATE checkpoints SET checkpoint = ? WHERE {_NEWEST}",
            (_NO_CHANNELS,),
            id="a checkpoint without its channels",
        ),
    ],
)
def test_a_damaged_source_thread_is_refused_by_name_and_the_others_come_across(
    tmp_path: Path, target_url: str, damage: str, parameters: tuple[Any, ...]
) -> None:
    """A row the source cannot load, or loads as no checkpoint: that thread only, nothing of it."""
    path = tmp_path / "damaged.sqlite"
    with SqliteSaver.from_conn_string(str(path)) as source:
        for thread in ("a", "b", "c"):
            graphs.approval(source).invoke({"request": thread}, _config(thread))
        expected = {thread: _listed(source, thread) for thread in ("a", "c")}
    with sqlite3.connect(path) as db:
        db.execute(damage, parameters)
    db.close()

    with (
        SqliteSaver.from_conn_string(str(path)) as source,
        PurposeAgentSaver.from_url(target_url) as target,
    ):
        report = import_threads(source, target)

        assert [problem.thread_id for problem in report.problems] == ["b"]
        assert "damaged" in report.problems[0].message
        assert report.threads_imported == 2
        assert not _listed(target, "b")
        for thread, listed in expected.items():
            assert _listed(target, thread) == listed

    done = invoke("import", "langgraph", "--from", f"sqlite:{path}", "--url", target_url)
    assert done.exit_code == 1
    assert "REFUSED 'b'" in done.stdout
    assert "error: 1 of 3 threads not imported" in done.stderr


# -- the command line ---------------------------------------------------------------------------


def test_the_command_imports_then_finds_everything_there(source_url: str, target_url: str) -> None:
    """``import langgraph`` end to end: a summary, the threads resumable, a re-run a no-op."""
    with _open_source(source_url) as source:
        _run_graphs(source)
        expected = {thread: _listed(source, thread) for thread in THREADS}
    total = sum(len(listed) for listed in expected.values())

    done = invoke("import", "langgraph", "--from", source_url, "--url", target_url)

    assert done.exit_code == 0, done.output + done.stderr
    assert f"{len(THREADS)} threads ({len(THREADS)} imported, 0 already there, 0 refused)" in (
        done.stdout
    )
    assert f"{total} checkpoints and" in done.stdout
    with PurposeAgentSaver.from_url(target_url) as target:
        for thread, listed in expected.items():
            assert _listed(target, thread) == listed
        resumed = graphs.approval(target).invoke(Command(resume="yes"), _config("hitl"))
        assert resumed["outcome"] == "REFUND:yes"

    again = invoke("import", "langgraph", "--from", source_url, "--url", target_url, "--json")
    assert again.exit_code == 0, again.output + again.stderr
    summary = json.loads(again.stdout)
    assert (summary["checkpoints"], summary["writes"], summary["threads_unchanged"]) == (
        0,
        0,
        len(THREADS),  # hitl, resumed on the target since, is left as it is
    )


def test_the_command_counts_the_checkpoints_whose_missing_writes_it_wrote(
    tmp_path: Path, target_url: str
) -> None:
    """After an import stopped between a checkpoint and its writes, the summary accounts for
    every checkpoint: written, completed (its writes added), or already there."""
    path = tmp_path / "lg.sqlite"
    store = SQLCheckpointer(target_url)
    try:
        with SqliteSaver.from_conn_string(str(path)) as source:
            _run_graphs(source)
            total = sum(len(_listed(source, thread)) for thread in THREADS)
            crashing = _CrashingSaver(store, "put_writes", 0)
            with pytest.raises(_Crash):
                import_threads(source, crashing)
    finally:
        store.close()
    put = crashing.stored_checkpoints  # the last of them has none of its writes

    done = invoke("import", "langgraph", "--from", f"sqlite:{path}", "--url", target_url)
    again = invoke("import", "langgraph", "--from", f"sqlite:{path}", "--url", target_url, "--json")

    assert done.exit_code == 0, done.output + done.stderr
    assert f"{count(total - put, 'checkpoint')} and " in done.stdout
    assert (
        f"written, 1 checkpoint completed (missing writes added), "
        f"{count(put - 1, 'checkpoint')} already there"
    ) in done.stdout
    summary = json.loads(again.stdout)
    assert (summary["checkpoints_completed"], summary["checkpoints_present"]) == (0, total)


def test_the_command_imports_the_threads_named(tmp_path: Path, target_url: str) -> None:
    path = tmp_path / "lg.sqlite"
    with SqliteSaver.from_conn_string(str(path)) as source:
        _run_graphs(source)

    done = invoke(
        "import", "langgraph", "--from", f"sqlite:///{path}", "--url", target_url,
        "--thread", "fan", "--thread", "nest",
    )  # fmt: skip

    assert done.exit_code == 0, done.output + done.stderr
    assert "2 threads (2 imported" in done.stdout
    with PurposeAgentSaver.from_url(target_url) as target:
        assert {t for t in THREADS if _listed(target, t)} == {"fan", "nest"}


def test_the_command_takes_a_path_relative_to_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SqliteSaver.from_conn_string(str(tmp_path / "lg.sqlite")) as source:
        graphs.approval(source).invoke({"request": "refund"}, _config("hitl"))
    monkeypatch.chdir(tmp_path)

    done = invoke("import", "langgraph", "--from", "sqlite:lg.sqlite", "--url", "sqlite:///s.db")

    assert done.exit_code == 0, done.output + done.stderr
    assert "1 thread (1 imported" in done.stdout
    assert "3 checkpoints" in done.stdout


def test_the_command_refuses_a_conflicting_thread_with_status_1(
    tmp_path: Path, target_url: str
) -> None:
    for name, request in (("a", "refund"), ("b", "other")):
        with SqliteSaver.from_conn_string(str(tmp_path / f"{name}.sqlite")) as saver:
            graphs.approval(saver).invoke({"request": request}, _config("hitl"))
    assert (
        invoke(
            "import", "langgraph", "--from", f"sqlite:{tmp_path / 'a.sqlite'}", "--url", target_url
        ).exit_code
        == 0
    )

    refused = invoke(
        "import", "langgraph", "--from", f"sqlite:{tmp_path / 'b.sqlite'}", "--url", target_url
    )

    assert refused.exit_code == 1
    assert "REFUSED 'hitl'" in refused.stdout
    assert "error: 1 of 1 thread not imported" in refused.stderr

    stopped = invoke(
        "import", "langgraph", "--from", f"sqlite:{tmp_path / 'b.sqlite'}", "--url", target_url,
        "--stop-on-conflict",
    )  # fmt: skip
    assert stopped.exit_code == 1
    assert stopped.stderr.startswith("error: thread 'hitl' is already in the target")
    assert "Traceback" not in stopped.stderr


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("sqlite:{tmp}/missing.sqlite", "no SQLite file at"),
        ("sqlite:{tmp}/plain.sqlite", "holds no SqliteSaver checkpoints"),
        ("mysql://root@127.0.0.1/x", "is not a LangGraph checkpointer this command reads"),
        ("postgres://nobody@127.0.0.1:1/none", "connecting to LangGraph's checkpoints failed"),
    ],
)
def test_the_command_says_what_is_wrong_with_a_source_in_one_line(
    tmp_path: Path, given: str, said: str
) -> None:
    sqlite3.connect(tmp_path / "plain.sqlite").execute("CREATE TABLE t (x)").connection.close()
    store = tmp_path / "store.db"

    failed = invoke(
        "import", "langgraph", "--from", given.format(tmp=tmp_path), "--url", f"sqlite:///{store}"
    )

    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: ")
    assert said in failed.stderr
    assert "Traceback" not in failed.stderr
    assert not (tmp_path / "missing.sqlite").exists()


@pytest.mark.parametrize(
    "given",
    [
        "postgres://nobody@127.0.0.1:1/none?password=hunter22",
        "postgres://nobody@127.0.0.1:1/none?sslmode=disable&PassWord=hunter22",
        "postgres://nobody:hunter22@127.0.0.1:1/none",
        "postgress://nobody:hunter22@127.0.0.1:1/none",
        "postgres://nobody:hunter22@[127.0.0.1:1/none",
    ],
)
def test_the_command_never_prints_a_source_password(tmp_path: Path, given: str) -> None:
    failed = invoke(
        "import", "langgraph", "--from", given, "--url", f"sqlite:///{tmp_path / 'store.db'}"
    )

    assert failed.exit_code == 1
    assert failed.stderr.startswith("error: ")
    assert "hunter22" not in failed.output + failed.stderr
    assert "unexpected" not in failed.stderr
    assert "Traceback" not in failed.stderr


def test_the_command_names_the_package_a_postgres_source_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres", None)

    failed = invoke(
        "import", "langgraph", "--from", "postgresql://u@127.0.0.1/db",
        "--url", f"sqlite:///{tmp_path / 'store.db'}",
    )  # fmt: skip

    assert failed.exit_code == 1
    assert "needs langgraph-checkpoint-postgres, which is not installed" in failed.stderr
    assert "pip install" in failed.stderr


@pytest.mark.postgres
def test_the_command_reports_an_empty_postgres_database_as_no_checkpoints(
    postgres_url: URL, tmp_path: Path
) -> None:
    """A database without ``PostgresSaver``'s tables: said so, nothing created in it."""
    conninfo = postgres_url.set(drivername="postgresql").render_as_string(hide_password=False)

    failed = invoke(
        "import", "langgraph", "--from", conninfo, "--url", f"sqlite:///{tmp_path / 's.db'}"
    )

    assert failed.exit_code == 1
    assert "holds no PostgresSaver checkpoints" in failed.stderr
