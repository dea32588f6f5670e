"""Real LangGraph graphs checkpointed through the saver, on every backend."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langgraph.graph")

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from purpose_agent import StoreUnavailable
from purpose_agent.integrations.langgraph import PurposeAgentSaver, group_for, run_id_for
from purpose_agent.ops.prune import prune as prune_store
from tests.conftest import empty_tables
from tests.integrations import graphs
from tests.integrations.conftest import StoreFactory
from tests.test_cli_support import invoke

ROOT = Path(__file__).resolve().parents[2]


def _config(thread_id: str, **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, **extra}}


def test_parallel_branches_are_checkpointed_and_read_back_by_a_new_saver(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    result = graphs.fan_out(saver).invoke({"start": 5, "log": []}, _config("fan"))

    assert sorted(result["log"]) == ["a5", "b10", "c15", "d20"]
    assert result["total"] == 50
    reread = graphs.fan_out(PurposeAgentSaver(store_factory())).get_state(_config("fan"))
    assert reread.values == result
    assert reread.next == ()
    history = list(graphs.fan_out(saver).get_state_history(_config("fan")))
    # input, after a, after the three branches together, after join
    assert [snap.metadata["step"] for snap in history] == [3, 2, 1, 0, -1]
    assert history[2].next == ("b", "c", "d")


def test_subgraph_interrupt_is_kept_in_its_namespace_and_resumes(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    graph = graphs.nested(saver)
    first = graph.invoke({"steps": []}, _config("nest"))
    assert first["__interrupt__"][0].value == "value?"

    fresh = graphs.nested(PurposeAgentSaver(store_factory()))
    state = fresh.get_state(_config("nest"), subgraphs=True)
    assert state.next == ("child",)
    (child,) = state.tasks
    namespace = child.state.config["configurable"]["checkpoint_ns"]
    assert namespace.startswith("child:")
    assert child.state.next == ("inner_ask",)
    assert run_id_for("nest", namespace) in saver.store.list_runs()

    done = fresh.invoke(Command(resume=42), _config("nest"))
    # What LangGraph's own in-memory saver gives for the same run (the subgraph returns the
    # shared list whole, so the parent's reducer adds "before" twice).
    reference = graphs.nested(InMemorySaver())
    reference.invoke({"steps": []}, _config("nest"))
    assert done == reference.invoke(Command(resume=42), _config("nest"))
    assert done["steps"][-3:] == ["inner:42", "inner:done", "after"]


def test_interrupt_is_resumed_by_another_process(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    if store_factory.url is None:  # type: ignore[attr-defined]
        pytest.skip("the memory store lives in this process only")
    paused = graphs.approval(saver).invoke({"request": "refund"}, _config("hitl"))
    assert paused["__interrupt__"][0].value == {"question": "approve REFUND?"}

    finished = subprocess.run(
        [sys.executable, "-m", "tests.integrations.graphs", store_factory.url, "hitl", "yes"],  # type: ignore[attr-defined]
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(finished.stdout)["outcome"] == "REFUND:yes"
    # This process sees the other one's checkpoints through its own saver.
    state = graphs.approval(saver).get_state(_config("hitl"))
    assert state.values["outcome"] == "REFUND:yes"
    assert state.next == ()


def _shape(graph: Any, thread_id: str) -> list[tuple[Any, ...]]:
    """A thread's history with checkpoint ids replaced by their position in it."""
    history = list(graph.get_state_history(_config(thread_id)))
    position = {snap.config["configurable"]["checkpoint_id"]: i for i, snap in enumerate(history)}
    return [
        (
            snap.next,
            snap.values,
            snap.metadata["source"],
            snap.metadata["step"],
            position[snap.parent_config["configurable"]["checkpoint_id"]]
            if snap.parent_config
            else None,
        )
        for snap in history
    ]


def _approve_then_fork(graph: Any, thread_id: str) -> dict[str, Any]:
    graph.invoke({"request": "trip"}, _config(thread_id))
    graph.invoke(Command(resume="no"), _config(thread_id))
    history = list(graph.get_state_history(_config(thread_id)))
    before_ask = next(snap for snap in history if snap.next == ("ask",))
    paused = graph.invoke(None, before_ask.config)
    assert paused["__interrupt__"][0].value == {"question": "approve TRIP?"}
    result: dict[str, Any] = graph.invoke(Command(resume="yes"), _config(thread_id))
    return result


def test_time_travel_forks_from_an_older_checkpoint(saver: PurposeAgentSaver) -> None:
    graph = graphs.approval(saver)
    assert _approve_then_fork(graph, "tt")["outcome"] == "TRIP:yes"

    shape = _shape(graph, "tt")
    # Both branches hang off the checkpoint before "ask": the first answer's and the fork's.
    before_ask = next(i for i, row in enumerate(shape) if row[0] == ("ask",) and row[2] == "loop")
    children = [row for row in shape if row[4] == before_ask]
    assert sorted((row[2], row[1].get("answer")) for row in children) == [
        ("fork", None),
        ("loop", "no"),
    ]
    assert shape[0][1]["outcome"] == "TRIP:yes"
    assert any(row[1].get("outcome") == "TRIP:no" for row in shape)
    reference = graphs.approval(InMemorySaver())
    _approve_then_fork(reference, "tt")
    assert shape == _shape(reference, "tt")


THREADS = 40


@pytest.mark.parametrize("how", ["asyncio", "threads"])
def test_forty_threads_at_once_each_keep_their_interrupt(
    saver: PurposeAgentSaver, store_factory: StoreFactory, how: str
) -> None:
    graph = graphs.approval(saver)

    def pause(n: int) -> Any:
        return graph.invoke({"request": f"r{n}"}, _config(f"many-{n}"))

    def resume(n: int) -> Any:
        return graph.invoke(Command(resume=f"ok{n}"), _config(f"many-{n}"))

    async def apause(n: int) -> Any:
        return await graph.ainvoke({"request": f"r{n}"}, _config(f"many-{n}"))

    async def aresume(n: int) -> Any:
        return await graph.ainvoke(Command(resume=f"ok{n}"), _config(f"many-{n}"))

    def run_all(step: Any, astep: Any) -> list[Any]:
        if how == "threads":
            with ThreadPoolExecutor(THREADS) as pool:
                return list(pool.map(step, range(THREADS)))

        async def gather() -> list[Any]:
            return await asyncio.gather(*(astep(n) for n in range(THREADS)))

        return asyncio.run(gather())

    paused = run_all(pause, apause)
    assert [p["__interrupt__"][0].value for p in paused] == [
        {"question": f"approve R{n}?"} for n in range(THREADS)
    ]
    # Read back by a saver that shares nothing with the one that wrote.
    fresh = graphs.approval(PurposeAgentSaver(store_factory()))
    lost = [
        n
        for n in range(THREADS)
        if [i.value for i in fresh.get_state(_config(f"many-{n}")).interrupts]
        != [{"question": f"approve R{n}?"}]
    ]
    assert lost == []

    finished = run_all(resume, aresume)
    assert [f["outcome"] for f in finished] == [f"R{n}:ok{n}" for n in range(THREADS)]


def test_forty_threads_with_parallel_interrupts_lose_none(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """Two branches of each thread interrupt in the same super-step, forty threads at once.

    Each pause stores two interrupt writes from two tasks, sent concurrently with the
    checkpoint they belong to; a saver that shares nothing with the writer must see both in
    every thread, and resuming both at once must finish every thread.
    """
    graph = graphs.parallel_review(saver)

    async def pause_all() -> list[Any]:
        return await asyncio.gather(
            *(graph.ainvoke({"request": f"r{n}"}, _config(f"review-{n}")) for n in range(THREADS))
        )

    paused = asyncio.run(pause_all())
    asked = [sorted(i.value["reviewer"] for i in p["__interrupt__"]) for p in paused]
    assert asked == [sorted(graphs.REVIEWERS)] * THREADS

    fresh = graphs.parallel_review(PurposeAgentSaver(store_factory()))
    interrupts = [fresh.get_state(_config(f"review-{n}")).interrupts for n in range(THREADS)]
    seen = [
        sorted((i.value["reviewer"], i.value["request"]) for i in found) for found in interrupts
    ]
    assert seen == [[("finance", f"r{n}"), ("legal", f"r{n}")] for n in range(THREADS)]

    def resume(n: int) -> Any:
        answers = {i.id: f"{i.value['reviewer']}-ok{n}" for i in interrupts[n]}
        return fresh.invoke(Command(resume=answers), _config(f"review-{n}"))

    with ThreadPoolExecutor(8) as pool:
        finished = list(pool.map(resume, range(THREADS)))
    assert [sorted(f["answers"]) for f in finished] == [
        sorted([f"finance:finance-ok{n}", f"legal:legal-ok{n}", "done"]) for n in range(THREADS)
    ]


def _run(thread_id: str, run_id: str) -> dict[str, Any]:
    """A thread's config for one LangGraph run, named as LangGraph's server names runs."""
    return {"configurable": {"thread_id": thread_id}, "metadata": {"run_id": run_id}}


def test_rolling_back_a_resume_withdraws_its_writes_from_the_interrupted_checkpoint(
    saver: PurposeAgentSaver,
) -> None:
    """The run that resumed an interrupt is rolled back: the next resume must run again.

    The resuming run stores its resume value, and the writes of the task it finished, on the
    checkpoint it resumed, which an earlier run made and which stays. Left there, they made
    the graph look finished after the rollback (``next == ()``), and the next resume, with
    another answer, skipped the task and finished with the rolled-back run's answer.
    """
    graph = graphs.approval(saver)
    graph.invoke({"request": "refund", "answer": "", "outcome": ""}, _run("t", "r1"))
    paused = graph.get_state(_config("t"))
    assert paused.next == ("ask",)

    assert graph.invoke(Command(resume="yes"), _run("t", "r2"))["outcome"] == "REFUND:yes"
    saver.delete_for_runs(["r2"])

    after = graph.get_state(_config("t"))
    assert (after.next, after.values) == (paused.next, paused.values)
    assert [i.value for i in after.interrupts] == [i.value for i in paused.interrupts]
    done = graph.invoke(Command(resume="no"), _run("t", "r3"))

    reference = graphs.approval(InMemorySaver())
    reference.invoke({"request": "refund", "answer": "", "outcome": ""}, _run("t", "r1"))
    assert done == reference.invoke(Command(resume="no"), _run("t", "r3"))
    assert done["outcome"] == "REFUND:no"


def test_rolling_back_a_run_that_made_no_checkpoint_withdraws_its_writes(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """A run answered one of two parallel interrupts, then was rolled back.

    With one branch still waiting, the super-step never completed, so the run made no
    checkpoint of its own for ``delete_for_runs`` to find: its writes (the answered branch's
    result, the other branch's interrupt again) sat on the earlier run's checkpoint, and the
    answered reviewer was never asked again.
    """
    graph = graphs.parallel_review(saver)
    graph.invoke({"request": "loan"}, _run("t", "r1"))
    paused = graph.get_state(_config("t"))
    legal = next(i for i in paused.interrupts if i.value["reviewer"] == "legal")
    half = graph.invoke(Command(resume={legal.id: "ok"}), _run("t", "r2"))
    assert [i.value["reviewer"] for i in half["__interrupt__"]] == ["finance"]
    assert graph.get_state(_config("t")).config == paused.config  # no checkpoint of r2's

    saver.delete_for_runs(["r2"])

    fresh = graphs.parallel_review(PurposeAgentSaver(store_factory()))
    after = fresh.get_state(_config("t"))
    assert sorted(i.value["reviewer"] for i in after.interrupts) == sorted(graphs.REVIEWERS)
    answers = {i.id: f"{i.value['reviewer']}-r3" for i in after.interrupts}
    done = fresh.invoke(Command(resume=answers), _run("t", "r3"))
    assert sorted(done["answers"]) == ["done", "finance:finance-r3", "legal:legal-r3"]
    saver.delete_for_runs(["r2"])  # again: nothing more is stored, nothing changes
    assert graph.get_state(_config("t")).values == done


SQL_BACKENDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@pytest.mark.parametrize("backend", SQL_BACKENDS)
def test_afrom_url_serves_ainvoke_on_the_async_store_and_closes_it(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'async.db'}"
    else:
        server = request.getfixturevalue(f"{backend}_url")
        empty_tables(server)
        url = server.render_as_string(hide_password=False)
    config = _config("async-hitl")

    async def scenario() -> tuple[Any, Any, PurposeAgentSaver]:
        async with PurposeAgentSaver.afrom_url(url, group_commit=True) as saver:
            graph = graphs.approval(saver)
            paused = await graph.ainvoke({"request": "refund"}, config)
            done = await graph.ainvoke(Command(resume="yes"), config)
        return paused, done, saver

    paused, done, saver = asyncio.run(scenario())
    assert paused["__interrupt__"][0].value == {"question": "approve REFUND?"}
    assert done["outcome"] == "REFUND:yes"
    with pytest.raises(StoreUnavailable, match="closed"):  # the block closed its store
        asyncio.run(saver.aget_tuple(config))
    with PurposeAgentSaver.from_url(url) as fresh:  # and what it wrote is committed
        state = graphs.approval(fresh).get_state(config)
    assert state.values["outcome"] == "REFUND:yes"
    assert state.next == ()


def test_a_process_killed_mid_step_resumes_elsewhere_without_rerunning_finished_branches(
    saver: PurposeAgentSaver, store_factory: StoreFactory, tmp_path: Path
) -> None:
    """SIGKILL inside one branch of a super-step whose other branches are done and saved.

    Resuming (``invoke(None, config)``, in this process) re-runs only the killed branch: the
    writes the other two saved before the kill are the ones LangGraph takes, as with its own
    savers, and the result is the uninterrupted run's.
    """
    if store_factory.url is None:  # type: ignore[attr-defined]
        pytest.skip("the memory store lives in this process only")
    journal = tmp_path / "journal.txt"
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integrations.graphs",
            "--killed",
            store_factory.url,  # type: ignore[attr-defined]
            "killed",
            str(journal),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr
    assert sorted(journal.read_text().split()) == ["a", "b", "c", "d"]

    graph = graphs.killed_in_a_branch(saver, journal, kill=False)
    config = _config("killed")
    # LangGraph counts b and c done from their saved writes: only d is left to run.
    assert graph.get_state(config).next == ("d",)
    if store_factory.backend.startswith("async-"):  # type: ignore[attr-defined]
        result = asyncio.run(graph.ainvoke(None, config))
    else:
        result = graph.invoke(None, config)

    reference = graphs.fan_out(InMemorySaver()).invoke({"start": 5, "log": []}, config)
    assert sorted(result["log"]) == sorted(reference["log"])
    assert result["total"] == reference["total"] == 50
    # b and c ran once, before the kill; d twice (killed, then resumed); join once.
    assert sorted(journal.read_text().split()) == ["a", "b", "c", "d", "d", "join"]


def test_processes_running_graphs_at_once_on_one_store_lose_nothing(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """Three processes, each running the fan-out graph on several threads at once.

    Parallel branches send their writes concurrently, from every process, to one database
    (one SQLite file, one JSONL folder); every thread must end where the same inputs leave
    LangGraph's own in-memory saver, with every checkpoint of its history.
    """
    if store_factory.url is None:  # type: ignore[attr-defined]
        pytest.skip("the memory store lives in this process only")
    url: str = store_factory.url  # type: ignore[attr-defined]
    location = f"async+{url}" if store_factory.backend.startswith("async-") else url  # type: ignore[attr-defined]
    processes, threads, rounds = 3, 6, 4
    command = [sys.executable, "-m", "tests.integrations.graphs", "--many", location]
    children = [
        subprocess.Popen(
            [*command, f"p{n}", str(threads), str(rounds)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    outcomes = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0] * processes, outcomes
    assert [json.loads(stdout) for stdout, _ in outcomes] == [[]] * processes

    reference = graphs.fan_out(InMemorySaver())
    graphs.fan_out_rounds(reference, "reference", rounds)
    expected = reference.get_state(_config("reference"))
    history = len(list(reference.get_state_history(_config("reference"))))
    graph = graphs.fan_out(saver)
    wrong = []
    for n in range(processes):
        for thread in range(threads):
            config = _config(f"p{n}-{thread}")
            state = graph.get_state(config)
            found = (sorted(state.values["log"]), state.values["total"], state.next)
            if found != (sorted(expected.values["log"]), expected.values["total"], ()):
                wrong.append((n, thread, found))
            elif len(list(graph.get_state_history(config))) != history:
                wrong.append((n, thread, "history"))
    assert wrong == []


def test_pruning_threads_while_their_graphs_run_loses_nothing(saver: PurposeAgentSaver) -> None:
    """``saver.prune(keep_latest)`` again and again on threads whose graphs are stepping.

    A prune keeps each thread's latest checkpoint and its writes and drops the rest in one
    transaction per run, so a graph that reads its latest checkpoint between two prunes, or
    while one runs, finds it whole: every thread ends as LangGraph's own saver leaves it.
    """
    threads, rounds = 3, 12
    graph = graphs.fan_out(saver)
    done = threading.Event()
    errors: list[str] = []
    pruned = [0]
    prunes = threading.Condition()

    def step(thread_id: str) -> None:
        # Each round waits for a prune that began after it, so that prunes fall between the
        # rounds of every thread however the threads are scheduled, as well as during them.
        try:
            for start in range(1, rounds + 1):
                graph.invoke({"start": start}, _config(thread_id))
                with prunes:
                    if not prunes.wait_for(_after(pruned[0] + 2), 60):
                        errors.append(f"{thread_id}: no prune after round {start}")
        except Exception as exc:
            errors.append(f"{thread_id}: {exc!r}")

    def _after(target: int) -> Callable[[], bool]:
        return lambda: pruned[0] >= target or done.is_set()

    def prune() -> None:
        while not done.is_set():
            try:
                saver.prune([f"pruned-{n}" for n in range(threads)], strategy="keep_latest")
            except Exception as exc:
                errors.append(f"prune: {exc!r}")
                done.set()
            with prunes:
                pruned[0] += 1
                prunes.notify_all()

    workers = [threading.Thread(target=step, args=(f"pruned-{n}",)) for n in range(threads)]
    pruner = threading.Thread(target=prune)
    pruner.start()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    done.set()
    pruner.join(120)
    assert errors == []
    assert pruned[0] > rounds

    reference = graphs.fan_out(InMemorySaver())
    graphs.fan_out_rounds(reference, "reference", rounds)
    expected = reference.get_state(_config("reference")).values
    names = [f"pruned-{n}" for n in range(threads)]
    for name in names:
        found = graph.get_state(_config(name)).values
        assert sorted(found["log"]) == sorted(expected["log"])
        assert found["total"] == expected["total"]
    saver.prune(names, strategy="keep_latest")
    assert [len(list(graph.get_state_history(_config(name)))) for name in names] == [1] * threads


# Defined only where LangGraph has DeltaChannel: a skip of a required backend fails the run.
if graphs.DeltaChannel is not None:

    def test_keep_latest_refuses_a_thread_with_a_delta_channel_and_keeps_its_state(
        saver: PurposeAgentSaver,
    ) -> None:
        """A ``DeltaChannel`` is rebuilt from older checkpoints' writes: pruning them empties it.

        ``keep_latest`` refuses such a thread (as LangGraph's ``PostgresSaver`` does), before
        pruning any thread of the call; ``"delete"`` still deletes it.
        """
        chat = graphs.delta_chat(saver)
        for n in range(3):
            chat.invoke({"items": [f"msg{n}"]}, _config("delta"))
        graphs.fan_out_rounds(graphs.fan_out(saver), "plain", 2)
        before = chat.get_state(_config("delta")).values
        plain = len(list(saver.list(_config("plain"))))
        assert before == {"items": ["msg0", "reply1", "msg1", "reply3", "msg2", "reply5"]}

        with pytest.raises(NotImplementedError, match=r"DeltaChannel.*: delta$"):
            saver.prune(["plain", "delta"], strategy="keep_latest")

        assert chat.get_state(_config("delta")).values == before
        assert len(list(saver.list(_config("plain")))) == plain > 1
        final = chat.invoke({"items": ["msg3"]}, _config("delta"))
        assert final["items"] == [*before["items"], "msg3", "reply7"]
        saver.prune(["delta"], strategy="delete")
        assert saver.get_tuple(_config("delta")) is None

    def test_keep_latest_refuses_a_delta_thread_whose_newest_checkpoint_was_rolled_back(
        saver: PurposeAgentSaver,
    ) -> None:
        """Only the newest checkpoint was looked at, rolled back or not.

        A run ended on a checkpoint that took the channel's snapshot (no counters in its
        metadata); ``delete_for_runs`` rolled that run back, leaving a live checkpoint that
        is rebuilt from older writes. ``keep_latest`` passed the thread and emptied it.
        """
        chat = graphs.delta_chat(saver, short=True)  # a snapshot every 8 updates of items
        for n in range(3):  # 6 updates: the latest checkpoint counts them, no snapshot yet
            chat.invoke({"items": [f"msg{n}"]}, _config("delta"))
        before = chat.get_state(_config("delta")).values
        rolled_back = str(uuid.uuid4())
        # Updates 7 and 8: this run's last checkpoint holds a snapshot and no counters.
        chat.invoke(
            {"items": ["msg3"]}, {"configurable": {"thread_id": "delta", "run_id": rolled_back}}
        )
        latest = saver.get_tuple(_config("delta"))
        assert latest is not None
        assert "counters_since_delta_snapshot" not in latest.metadata
        saver.delete_for_runs([rolled_back])
        assert chat.get_state(_config("delta")).values == before

        with pytest.raises(NotImplementedError, match=r"DeltaChannel.*: delta$"):
            saver.prune(["delta"], strategy="keep_latest")

        assert chat.get_state(_config("delta")).values == before

    def test_a_store_wide_prune_by_age_leaves_a_thread_in_use_whole(
        saver: PurposeAgentSaver,
    ) -> None:
        """``purpose-agent prune --older-than AGE`` took the writes of a live thread's old
        checkpoints, from which a ``DeltaChannel``'s value is rebuilt: the thread lost its
        first turns and answered the next one wrongly. A group goes only with its newest run.
        """
        chat = graphs.delta_chat(saver)
        for n in range(3):
            chat.invoke({"items": [f"msg{n}"]}, _config("chat"))
        middle = time.time_ns()
        while time.time_ns() <= middle + 1_000_000:  # the turns after it are newer, by 1 ms
            time.sleep(0.001)
        chat.invoke({"items": ["msg3"]}, _config("chat"))  # the thread is in use
        chat.invoke({"items": ["idle"]}, _config("idle"))
        before = chat.get_state(_config("chat")).values
        assert before["items"][:2] == ["msg0", "reply1"]

        now = time.time_ns()  # pinned: the cutoff stays at ``middle`` for both calls
        age = timedelta(microseconds=(now - middle) // 1000)
        result = prune_store(saver.store, older_than=age, dry_run=True, now_ns=now)
        assert result.old_runs == 0
        prune_store(saver.store, older_than=age, now_ns=now)
        assert chat.get_state(_config("chat")).values == before
        final = chat.invoke({"items": ["msg4"]}, _config("chat"))
        assert final["items"] == [*before["items"], "msg4", "reply9"]

        prune_store(saver.store, older_than=timedelta(0))  # every thread is idle now
        assert saver.get_tuple(_config("chat")) is None
        assert saver.get_tuple(_config("idle")) is None

    @pytest.mark.parametrize("options", [{"older_than": timedelta(0)}, {"keep_newest": 0}])
    def test_a_store_wide_prune_keeps_a_thread_whole_that_goes_on_while_it_prunes(
        saver: PurposeAgentSaver, options: dict[str, Any]
    ) -> None:
        """A turn that commits after the prune judged the thread idle, before it deletes.

        The thread's group was judged before the deletion's transaction, and each run then
        checked alone: the runs the turn wrote stayed, the old checkpoints' writes went, and
        the ``DeltaChannel`` lost the thread's first turns. The thread goes whole or stays
        whole; here the turn committed first, so it stays.
        """
        chat = graphs.delta_chat(saver)
        for n in range(3):
            chat.invoke({"items": [f"msg{n}"]}, _config("chat"))
        before = chat.get_state(_config("chat")).values
        now = time.time_ns()  # pinned: the cutoff is before the turn below
        while time.time_ns() <= now + 1_000_000:  # the turn is newer, by 1 ms
            time.sleep(0.001)
        store = saver.store
        delete_runs = store.delete_runs  # type: ignore[attr-defined]
        turned: list[Any] = []

        def after_a_turn(*args: Any, **kwargs: Any) -> Any:
            if not turned:
                turned.append(chat.invoke({"items": ["msg3"]}, _config("chat")))
            return delete_runs(*args, **kwargs)

        store.delete_runs = after_a_turn  # type: ignore[attr-defined]
        try:
            prune_store(store, now_ns=now, **options)
        finally:
            store.delete_runs = delete_runs  # type: ignore[attr-defined]

        assert turned[0]["items"] == [*before["items"], "msg3", "reply7"]
        assert chat.get_state(_config("chat")).values == turned[0]
        final = chat.invoke({"items": ["msg4"]}, _config("chat"))
        assert final["items"] == [*turned[0]["items"], "msg4", "reply9"]


def test_keep_latest_drops_finished_subgraph_calls_and_keeps_the_interrupted_one(
    saver: PurposeAgentSaver, store_factory: StoreFactory
) -> None:
    """Each call of a subgraph node has a namespace of its own: a pruned thread kept one per call.

    As in LangGraph's ``PostgresSaver``, a call that started from an older root checkpoint
    goes whole; the call an interrupt waits in stays, and resumes.
    """
    graph, reference = graphs.nested(saver), graphs.nested(InMemorySaver())
    for each in (graph, reference):
        for n in range(2):
            each.invoke({"steps": [f"in{n}"]}, _config("calls"))
            each.invoke(Command(resume=n), _config("calls"))
        each.invoke({"steps": ["in2"]}, _config("calls"))  # waits in the third call

    def namespaces() -> list[str]:
        listed = saver.list(_config("calls"))
        return sorted({t.config["configurable"]["checkpoint_ns"] for t in listed})

    (waiting,) = graph.get_state(_config("calls"), subgraphs=True).tasks
    open_call = waiting.state.config["configurable"]["checkpoint_ns"]
    before = namespaces()
    assert len(before) == 4
    assert "" in before
    assert open_call in before

    saver.prune(["calls"], strategy="keep_latest")

    assert namespaces() == ["", open_call]
    group = saver.store.list_runs(group=group_for("calls"))
    assert sorted(run for run in group if run.startswith("lg:")) == sorted(
        run_id_for("calls", ns) for ns in ("", open_call)
    )
    fresh = graphs.nested(PurposeAgentSaver(store_factory()))
    assert fresh.get_state(_config("calls")).next == ("child",)
    done = fresh.invoke(Command(resume=2), _config("calls"))
    assert done == reference.invoke(Command(resume=2), _config("calls"))
    assert done["steps"][-3:] == ["inner:2", "inner:done", "after"]
    saver.prune(["calls"], strategy="keep_latest")
    assert namespaces() == [""]
    assert fresh.get_state(_config("calls")).values == done


class _SlowPuts(PurposeAgentSaver):
    """A saver whose writes of checkpoints take 50 ms longer: a busy or distant database."""

    def put(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return super().put(*args, **kwargs)

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        return await super().aput(*args, **kwargs)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_join_stored_while_the_graph_runs_on_is_stored_as_it_was(
    store_factory: StoreFactory, mode: str
) -> None:
    """LangGraph saves a step's checkpoint in the background while the next step runs.

    The join's barrier (a set of the branches seen) is updated in place by the next step, so
    serializing every channel when the save runs stored a barrier that had moved on: step 6
    listed ``d`` as next, and a replay from it ran ``a``, ``b``, ``c`` and never ``d``. A
    channel the checkpoint did not change is stored as its parent stored it, as LangGraph's
    own savers keep one value per version.
    """
    graph, reference = graphs.joined(_SlowPuts(store_factory())), graphs.joined(InMemorySaver())
    found = []
    for each in (graph, reference):
        if mode == "invoke":
            each.invoke({"log": []}, _config("join"))
            each.invoke({"log": ["again"]}, _config("join"))
        else:

            async def twice(graph: Any = each) -> None:
                await graph.ainvoke({"log": []}, _config("join"))
                await graph.ainvoke({"log": ["again"]}, _config("join"))

            asyncio.run(twice())
        history = list(each.get_state_history(_config("join")))
        at6 = next(snap for snap in history if snap.metadata["step"] == 6)
        found.append(
            (
                [(snap.metadata["step"], snap.next) for snap in history],
                each.invoke(None, at6.config)["log"][-3:],
            )
        )
    assert found[0] == found[1]
    assert found[0][1] == ["b", "c", "d"]


def test_an_interrupt_does_not_leak_into_the_last_finished_value_saved_at_exit(
    saver: PurposeAgentSaver,
) -> None:
    """With ``durability="exit"`` the checkpoint is saved after LangGraph changed the old value."""
    found = []
    for workflow in (graphs.asking_entrypoint(saver), graphs.asking_entrypoint(InMemorySaver())):
        workflow.invoke(1, _config("exit"), durability="exit")
        workflow.invoke(Command(resume="yes"), _config("exit"), durability="exit")
        workflow.invoke(2, _config("exit"), durability="exit")  # interrupted again
        found.append(workflow.get_state(_config("exit")).values)
    assert found[0] == found[1] == {"given": 1, "answer": "yes"}


@pytest.mark.parametrize("method", ["prune", "delete_for_runs"])
def test_one_string_for_a_list_of_ids_is_refused_not_read_as_its_characters(
    saver: PurposeAgentSaver, method: str
) -> None:
    """``prune("ab")`` pruned threads ``a`` and ``b``; ``delete_for_runs("10")`` runs 1 and 0."""
    for n, thread in enumerate(("a", "b", "ab", "10")):
        saver.put(_config(thread, checkpoint_ns=""), empty_checkpoint(), {"run_id": str(n)}, {})
    every = sorted(t.config["configurable"]["thread_id"] for t in saver.list(None))
    call = {
        "prune": lambda: saver.prune("ab", strategy="delete"),  # type: ignore[arg-type]
        "delete_for_runs": lambda: saver.delete_for_runs("10"),  # type: ignore[arg-type]
    }[method]

    with pytest.raises(TypeError, match="not one str"):
        call()

    assert sorted(t.config["configurable"]["thread_id"] for t in saver.list(None)) == every


def test_the_copy_compile_makes_for_the_state_schema_reads_with_its_own_serializer(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under ``LANGGRAPH_STRICT_MSGPACK``, ``compile()`` gives the graph ``with_allowlist(...)``:
    a copy whose serializer allows the state schema's types. Reading with the original one
    turned the schema's pydantic model back into a dict, without an error.
    """
    serde = pytest.importorskip("langgraph._internal._serde")
    jsonplus = pytest.importorskip("langgraph.checkpoint.serde.jsonplus")
    if not hasattr(serde, "apply_checkpointer_allowlist"):
        pytest.skip("this LangGraph release has no msgpack allowlist")
    monkeypatch.setattr(serde, "STRICT_MSGPACK_ENABLED", True)  # the variable, read at import
    strict = jsonplus.JsonPlusSerializer(allowed_msgpack_modules=None)
    saver = PurposeAgentSaver(store_factory(), serde=strict)
    graph = graphs.ticket(saver)
    assert graph.checkpointer is not saver

    graph.invoke({}, _config("strict"))
    ticket = graph.get_state(_config("strict")).values["ticket"]
    assert isinstance(ticket, graphs.Ticket)
    assert ticket.priority is graphs.Priority.HIGH
    assert graph.invoke(None, _config("strict"))["seen"] == "Ticket"


@pytest.mark.parametrize("thread", ["d1f0c9e4-8c7a-4f4e-9a55-2b7c1e0f6a31", "スレッド" * 12])
def test_subgraphs_nested_deeper_than_a_run_id_spells_out_interrupt_and_resume(
    saver: PurposeAgentSaver, store_factory: StoreFactory, thread: str
) -> None:
    """Four levels of subgraphs name namespaces of about 200 characters: the innermost
    checkpoints were dropped and the resume failed with ``InvalidInput``. Their runs' ids are
    now hashed, and the thread reads, resumes, copies and prunes as any other.
    """
    graph = graphs.deeply_nested(saver)
    reference = graphs.deeply_nested(InMemorySaver())
    first = graph.invoke({"log": []}, _config(thread))
    reference.invoke({"log": []}, _config(thread))
    assert [i.value for i in first["__interrupt__"]] == ["approve?"]

    def depths(of: Any) -> list[int]:
        found = of.get_state(_config(thread), subgraphs=True)
        levels = []
        while found.tasks and found.tasks[0].state is not None:
            found = found.tasks[0].state
            levels.append(found.config["configurable"]["checkpoint_ns"].count("|") + 1)
        return levels

    assert depths(graph) == depths(reference) == [1, 2, 3]
    innermost = max(saver.list(None), key=lambda t: len(t.config["configurable"]["checkpoint_ns"]))
    assert innermost.config["configurable"]["thread_id"] == thread
    assert innermost.config["configurable"]["checkpoint_ns"].count("|") == 2

    fresh = graphs.deeply_nested(PurposeAgentSaver(store_factory()))
    resumed = fresh.invoke(Command(resume="yes"), _config(thread))
    assert resumed == reference.invoke(Command(resume="yes"), _config(thread)) == {"log": ["yes"]}

    saver.copy_thread(thread, "copy")
    assert graph.get_state(_config("copy")).values == {"log": ["yes"]}
    saver.prune([thread], strategy="keep_latest")
    assert graph.get_state(_config(thread)).values == {"log": ["yes"]}
    saver.delete_thread(thread)
    assert graph.get_state(_config(thread)).values == {}
    assert graph.get_state(_config("copy")).values == {"log": ["yes"]}


def _listed(saver: PurposeAgentSaver, thread: str) -> list[tuple[Any, Any, Any]]:
    return [(t.config, t.checkpoint, t.pending_writes) for t in saver.list(_config(thread))]


@pytest.mark.postgres
def test_threads_copied_from_sqlite_to_postgres_resume_there(
    tmp_path: Path, postgres_url: Any
) -> None:
    """A project that outgrows its SQLite file copies it to Postgres and carries on.

    ``purpose-agent copy`` carries every event with its key and every run with its group,
    which is all the saver keeps: an interrupted thread resumes on the copy, and every
    checkpoint is found there by its id, with its writes.
    """
    empty_tables(postgres_url)
    source = f"sqlite:///{tmp_path / 'dev.db'}"
    target = postgres_url.render_as_string(hide_password=False)
    with PurposeAgentSaver.from_url(source) as saver:
        paused = graphs.approval(saver).invoke({"request": "refund"}, _config("hitl"))
        assert paused["__interrupt__"][0].value == {"question": "approve REFUND?"}
        graphs.fan_out_rounds(graphs.fan_out(saver), "fan", 2)
        before = {thread: _listed(saver, thread) for thread in ("hitl", "fan")}

    copied = invoke("copy", source, target)
    assert copied.exit_code == 0, copied.output

    with PurposeAgentSaver.from_url(target) as saver:
        for thread, tuples in before.items():
            assert _listed(saver, thread) == tuples
            for config, checkpoint, writes in tuples:
                by_id = saver.get_tuple(config)
                assert by_id is not None
                assert (by_id.checkpoint, by_id.pending_writes) == (checkpoint, writes)
        done = graphs.approval(saver).invoke(Command(resume="yes"), _config("hitl"))
        assert done["outcome"] == "REFUND:yes"


class _PutsEachIdOnce(InMemorySaver):
    """LangGraph's reference saver, noting each checkpoint id LangGraph puts a second time."""

    def __init__(self) -> None:
        super().__init__()
        self.put_again: list[str] = []

    def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
        configurable = config["configurable"]
        if (
            checkpoint["id"]
            in self.storage[configurable["thread_id"]][configurable["checkpoint_ns"]]
        ):
            self.put_again.append(checkpoint["id"])
        return super().put(config, checkpoint, metadata, new_versions)


def _review_fork_and_nested(saver: Any, durability: str) -> list[Any]:
    """Parallel interrupts answered one at a time, a fork, a subgraph's interrupt: what shows."""
    review, nested = graphs.parallel_review(saver), graphs.nested(saver)
    config = _config("review")
    seen: list[Any] = []

    def state(graph: Any, config: Any = config) -> tuple[Any, ...]:
        snap = graph.get_state(config, subgraphs=True)
        tasks = [(t.name, [i.value for i in t.interrupts], t.state is not None) for t in snap.tasks]
        return snap.values, snap.next, tasks

    review.invoke({"request": "trip", "answers": []}, config, durability=durability)
    seen.append(state(review))
    legal = next(i for i in review.get_state(config).interrupts if i.value["reviewer"] == "legal")
    review.invoke(Command(resume={legal.id: "yes"}), config, durability=durability)
    seen.append(state(review))
    rest = {i.id: "ok" for i in review.get_state(config).interrupts}
    seen.append(review.invoke(Command(resume=rest), config, durability=durability))
    review.update_state(config, {"answers": ["late"]}, as_node="done")
    oldest = list(review.get_state_history(config))[-1].config
    fork = review.update_state(oldest, {"request": "forked"}, as_node="legal")
    seen.append(state(review, fork))
    seen.append(_shape(review, "review"))

    nested.invoke({"steps": []}, _config("nested"), durability=durability)
    seen.append(state(nested, _config("nested")))
    seen.append(nested.invoke(Command(resume="v"), _config("nested"), durability=durability))
    seen.append(_shape(nested, "nested"))
    return seen


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_every_durability_mode_shows_what_langgraphs_own_saver_shows(
    saver: PurposeAgentSaver, durability: str
) -> None:
    """States, histories, interrupts and forks read as on ``InMemorySaver``, in every mode.

    LangGraph never puts a checkpoint id twice in these flows (each save has a new id; the
    save at exit with ``durability="exit"`` skips one already saved), so the saver's refusal
    to change a stored checkpoint never meets a graph.
    """
    reference = _PutsEachIdOnce()
    assert _review_fork_and_nested(saver, durability) == _review_fork_and_nested(
        reference, durability
    )
    assert reference.put_again == []
