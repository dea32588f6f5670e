"""`purpose-agent demo`: a run killed with SIGKILL resumes and ends like an uninterrupted one."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from purpose_agent import EventKind, PAEvent, RunStatus
from purpose_agent.cli.demo_agent import DemoRun, step_events
from purpose_agent.stores.open import open_store
from tests.test_cli_support import STORES, invoke, make_store_url, run_module

KILLED = -signal.SIGKILL


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request, tmp_path, request.param)


def _final(url: str, run_id: str):
    with open_store(url, create=False) as store:
        state = store.load_latest(run_id)
        events = [(e.seq, e.kind, e.ts, e.lane_id, e.data) for e in store.iter_events(run_id)]
    assert state is not None
    return state, events


def _assert_same_run(url: str, resumed: str, straight: str) -> None:
    """Same state (data, seq, status, times) and the same log, whatever the run id."""
    state, events = _final(url, resumed)
    expected_state, expected_events = _final(url, straight)
    assert state.status is RunStatus.FINISHED
    assert state.data == expected_state.data
    assert (state.seq, state.created_at, state.updated_at) == (
        expected_state.seq,
        expected_state.created_at,
        expected_state.updated_at,
    )
    assert events == expected_events
    assert len(events) == 37


def _resumes_as_if_never_stopped(
    url: str, run_id: str, *shown: str, cwd: Path | None = None
) -> None:
    """Run the demo on ``run_id`` again: it shows each of ``shown`` and ends as a run never stopped.

    Args:
        url: The store.
        run_id: The run to resume.
        shown: Lines of what it shows while it resumes.
        cwd: Resume in a process of its own, started in this folder, as a user does after a
            crash; in this process if None.
    """
    args = ("demo", "--run-id", run_id, "--url", url)
    if cwd is None:
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        out = result.stdout
    else:
        process = run_module(*args, cwd=cwd)
        assert process.returncode == 0, process.stderr
        out = process.stdout
    for line in shown:
        assert line in out, out
    straight = invoke("demo", "--run-id", "straight", "--url", url)
    assert straight.exit_code == 0, straight.output
    _assert_same_run(url, run_id, "straight")


def test_demo_killed_after_a_step_resumes_to_the_uninterrupted_state(
    store_url: str, tmp_path: Path
) -> None:
    crashed = run_module(
        "demo", "--run-id", "crashed", "--crash-after", "2", "--url", store_url, cwd=tmp_path
    )
    assert crashed.returncode == KILLED, crashed.stderr
    assert "step 2" in crashed.stdout
    assert "step 3" not in crashed.stdout
    with open_store(store_url, create=False) as store:
        recovery = store.recover("crashed")
    assert recovery is not None
    assert recovery.state is not None
    assert recovery.state.seq == 15
    assert recovery.events == []

    _resumes_as_if_never_stopped(
        store_url,
        "crashed",
        "resuming from the snapshot at seq 15 and 0 events after it",
        "step 1   skipped",
        "step 2   skipped",
        *(f"step {step}   run" for step in (3, 4, 5)),
        "finished at seq 37",
        cwd=tmp_path,
    )


def test_demo_killed_inside_a_commit_loses_the_whole_step_and_runs_it_again(
    store_url: str, tmp_path: Path
) -> None:
    crashed = run_module(
        "demo", "--run-id", "torn", "--crash-during", "3", "--url", store_url, cwd=tmp_path
    )
    assert crashed.returncode == KILLED, crashed.stderr
    assert "inside step 3's save, before it is committed" in crashed.stdout
    with open_store(store_url, create=False) as store:
        stored = store.list_events("torn")
        snapshot = store.load_latest("torn")
    # Step 3's seven events were inserted but never committed: none of them is there.
    assert [event.seq for event in stored] == list(range(1, 16))
    assert snapshot is not None
    assert snapshot.seq == 15

    _resumes_as_if_never_stopped(
        store_url, "torn", "step 2   skipped", "step 3   run", cwd=tmp_path
    )


@pytest.mark.sqlite
def test_demo_replays_the_steps_committed_after_the_last_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    crashed = run_module(
        "demo",
        "--run-id",
        "sparse",
        "--snapshot-every",
        "2",
        "--crash-after",
        "3",
        "--url",
        url,
        cwd=tmp_path,
    )
    assert crashed.returncode == KILLED
    _resumes_as_if_never_stopped(
        url,
        "sparse",
        "resuming from the snapshot at seq 15 and 7 events after it",
        "step 2   skipped",
        "step 3   replayed",
        "step 4   run",
    )


@pytest.mark.sqlite
def test_demo_runs_again_a_step_whose_events_were_partly_written(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    with open_store(url) as store:
        run = DemoRun(store, "partial")
        run.run_step(1)
        # Another writer stored the first three events of step 2 without its snapshot.
        store.save_events(step_events(run.state, 2)[:3])
    _resumes_as_if_never_stopped(url, "partial", "3 events of an unfinished step", "step 2   run")


@pytest.mark.sqlite
def test_demo_of_a_finished_run_writes_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert invoke("demo", "--url", url).exit_code == 0
    again = invoke("demo", "--url", url)
    assert again.exit_code == 0
    assert "had already finished; nothing to do" in again.stdout
    assert "step 5   skipped" in again.stdout
    with open_store(url, create=False) as store:
        assert len(store.list_events("demo")) == 37


@pytest.mark.sqlite
def test_demo_uses_the_embedded_default_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PURPOSE_AGENT_DB_URL", raising=False)
    result = invoke("demo", "--steps", "2")
    assert result.exit_code == 0, result.output
    assert "on sqlite:///purpose_agent.db" in result.stdout
    assert (tmp_path / "purpose_agent.db").is_file()

    other = tmp_path / "from_env.db"
    result = invoke("demo", "--steps", "2", env={"PURPOSE_AGENT_DB_URL": f"sqlite:///{other}"})
    assert result.exit_code == 0, result.output
    assert other.is_file()


@pytest.mark.sqlite
def test_demo_refuses_to_resume_with_another_number_of_steps(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert invoke("demo", "--steps", "5", "--url", url).exit_code == 0
    result = invoke("demo", "--steps", "3", "--url", url)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: run 'demo' was started with 5 steps, not 3; leave out --steps to resume it"
    )


@pytest.mark.sqlite
def test_demo_refuses_a_crash_point_past_the_last_step(tmp_path: Path) -> None:
    result = invoke(
        "demo", "--steps", "2", "--crash-after", "3", "--url", f"sqlite:///{tmp_path / 'd.db'}"
    )
    assert result.exit_code == 1
    assert result.stderr == "error: --crash-after 3: run 'demo' has only 2 steps\n"


@pytest.mark.sqlite
def test_demo_refuses_to_resume_a_run_it_did_not_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with open_store(url) as store:
        store.save_events(
            [
                PAEvent(run_id="other", seq=1, kind=EventKind.RUN_STARTED, data={"x": 1}),
                PAEvent(run_id="other", seq=2, kind=EventKind.STEP_FINISHED, data={}),
            ]
        )
    result = invoke("demo", "--run-id", "other", "--url", url)
    assert result.exit_code == 1
    assert result.stderr == "error: run 'other' was not written by the demo\n"


def test_demo_crash_inside_a_commit_needs_a_sql_store(tmp_path: Path) -> None:
    result = invoke("demo", "--crash-during", "1", "--url", f"jsonl:{tmp_path / 'runs'}")
    assert result.exit_code == 1
    assert "--crash-during needs a SQL store" in result.stderr
