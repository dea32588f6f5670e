"""The README's one-page example does what it says: killed, it resumes and repeats no step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from purpose_agent import EventKind, SQLCheckpointer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "resumable_agent.py"
SQUARES = [1, 4, 9, 16, 25, 36]


@pytest.mark.sqlite
def test_the_resumable_example_killed_mid_run_resumes_after_its_last_step(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'example.db'}"
    # -u: each line as it is printed (a pipe would hold them until the process ends)
    first = subprocess.Popen(
        [sys.executable, "-u", str(EXAMPLE), url], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert first.stdout is not None
    committed = []
    for line in first.stdout:  # kill -9 once two steps are committed
        committed.append(line.strip())
        if line.startswith("step 2 committed"):
            os.kill(first.pid, signal.SIGKILL)
            break
    assert first.wait(timeout=30) == -signal.SIGKILL  # killed, not finished
    assert committed == ["step 1 committed: 1", "step 2 committed: 4"]

    second = subprocess.run(
        [sys.executable, str(EXAMPLE), url],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=True,
    )
    lines = second.stdout.splitlines()
    # The kill may land while step 3 commits: it is then stored whole, or not at all.
    done_before = 2 if lines[0] == "resuming after step 2 (seq 6)" else 3
    assert lines[0] == f"resuming after step {done_before} (seq {done_before * 3})"
    assert lines[1:-1] == [
        f"step {step} committed: {step * step}" for step in range(done_before + 1, 7)
    ]
    assert lines[-1] == f"done: {SQUARES}"

    with SQLCheckpointer(url) as store:
        events = store.list_events("example")
        assert [event.seq for event in events] == list(range(1, 19))  # no step twice
        results = [event.data["square"] for event in events if event.kind == EventKind.TOOL_RESULT]
        assert results == SQUARES
        recovered = store.recover("example")
        assert recovered is not None
        assert recovered.state is not None
        assert recovered.state.data == {"squares": SQUARES}
        assert recovered.events == []


LANGGRAPH_EXAMPLE = EXAMPLE.parent / "langgraph_resume.py"


@pytest.mark.sqlite
def test_the_langgraph_example_killed_in_one_tool_reruns_only_that_tool(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'example.db'}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(LANGGRAPH_EXAMPLE), "--url", url, *args]
        return subprocess.run(
            command, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False
        )

    killed = run("--crash-in", "weather")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    lines = killed.stdout.splitlines()
    assert lines[0] == f"thread 'trip' on {url}: new trip"
    assert sorted(lines[1:4]) == ["  flights  running", "  hotels   running", "  weather  running"]
    assert lines[4:] == ["  weather  killing this process with SIGKILL"]

    resumed = run()
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == [
        f"thread 'trip' on {url}: resuming; left to run: weather",
        "  weather  running",  # flights and hotels are not run again
        "answer: 4 facts found",
        "  flights: LIS to OSL, 2 stops, 412 EUR",
        "  hotels: 3 nights near the harbour, 540 EUR",
        "  plan: Oslo in March",
        "  weather: 8 to 12 C, rain on Saturday",
    ]
    assert run().stdout.splitlines()[0] == (
        f"thread 'trip' on {url}: done already (--thread NAME starts another)"
    )


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_the_resumable_example_prints_its_usage_for_help(tmp_path: Path, flag: str) -> None:
    """``--help`` was taken for the database URL and failed to parse as one."""
    shown = subprocess.run(
        [sys.executable, str(EXAMPLE), flag],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: python examples/resumable_agent.py [DATABASE_URL]")
    assert shown.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no database made
