"""`purpose-agent runs`: listings for people and scripts, paging, and deleting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from purpose_agent import EventKind, PAEvent, RunState
from purpose_agent.stores.open import open_store
from tests.test_cli_support import STORES, invoke, json_lines, make_store_url


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request, tmp_path, request.param)


def _fill(url: str) -> None:
    """Three runs written in the order a, b, c; b has no snapshot, c has 250 events."""
    with open_store(url) as store:
        store.save_events(
            [PAEvent(run_id="a", seq=i, kind=EventKind.STEP_STARTED, ts=10.0 + i) for i in (1, 2)],
            snapshot=RunState(run_id="a", seq=2, data={"answer": 42}, status="finished"),
        )
        store.save_events([PAEvent(run_id="b", seq=1, kind=EventKind.MESSAGE, data={"t": "hi"})])
        events = [
            PAEvent(run_id="c", seq=i, kind=EventKind.TOOL_CALL, ts=100.0 + i, data={"i": i})
            for i in range(1, 251)
        ]
        store.save_events(events, snapshot=RunState(run_id="c", seq=200))


def test_runs_list_shows_every_run_most_recent_first(store_url: str) -> None:
    _fill(store_url)
    result = invoke("runs", "list", "--url", store_url)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["c", "b", "a"]
    assert "finished" in rows[2]
    assert "250" in rows[0]


def test_runs_list_json_pages_with_limit_and_offset(store_url: str) -> None:
    _fill(store_url)
    first = json.loads(invoke("runs", "list", "--json", "--limit", "2", "--url", store_url).stdout)
    assert [run["run_id"] for run in first["runs"]] == ["c", "b"]
    assert first["next_offset"] == 2
    assert first["runs"][0] == {
        "run_id": "c",
        "status": "running",
        "last_seq": 250,
        "snapshot_seq": 200,
        "updated_at": first["runs"][0]["updated_at"],
    }
    assert first["runs"][1]["status"] is None
    rest = invoke("runs", "list", "--json", "--limit", "2", "--offset", "2", "--url", store_url)
    page = json.loads(rest.stdout)
    assert [run["run_id"] for run in page["runs"]] == ["a"]
    assert page["next_offset"] is None


def test_runs_list_of_an_empty_store_says_so(store_url: str) -> None:
    result = invoke("runs", "list", "--url", store_url)
    assert result.exit_code == 0
    assert "No runs in" in result.stdout
    assert json.loads(invoke("runs", "list", "--json", "--url", store_url).stdout)["runs"] == []


def test_runs_show_gives_counts_by_kind_and_the_state(store_url: str) -> None:
    _fill(store_url)
    result = invoke("runs", "show", "a", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert "finished" in result.stdout
    assert "step_started" in result.stdout
    assert '"answer": 42' in result.stdout
    detail = json.loads(invoke("runs", "show", "c", "--json", "--url", store_url).stdout)
    assert detail["events"] == {"count": 250, "first_seq": 1, "kinds": {"tool_call": 250}}
    assert detail["snapshot"]["seq"] == 200
    assert detail["last_seq"] == 250


def test_runs_events_pages_through_a_log(store_url: str) -> None:
    _fill(store_url)
    page = invoke("runs", "events", "c", "--since", "10", "--limit", "5", "--url", store_url)
    assert page.exit_code == 0, page.output
    seqs = [int(line.split()[0]) for line in page.stdout.splitlines()[1:-1]]
    assert seqs == [11, 12, 13, 14, 15]
    assert page.stdout.splitlines()[-1] == "More events: --since 15"

    lines = json_lines(
        invoke("runs", "events", "c", "--since", "245", "--json", "--url", store_url).stdout
    )
    assert [line["seq"] for line in lines] == [246, 247, 248, 249, 250]
    assert lines[0] == {
        "run_id": "c",
        "seq": 246,
        "kind": "tool_call",
        "ts": 346.0,
        "lane_id": "main",
        "data": {"i": 246},
    }


def test_runs_events_all_streams_the_whole_log(store_url: str) -> None:
    _fill(store_url)
    result = invoke("runs", "events", "c", "--all", "--json", "--url", store_url)
    assert [line["seq"] for line in json_lines(result.stdout)] == list(range(1, 251))


def test_runs_delete_asks_first_and_removes_the_run(store_url: str) -> None:
    _fill(store_url)
    declined = invoke("runs", "delete", "a", "--url", store_url, input="n\n")
    assert declined.exit_code == 1
    with open_store(store_url, create=False) as store:
        assert store.load_latest("a") is not None

    result = invoke("runs", "delete", "a", "--yes", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert "Deleted run 'a': 2 events and its snapshot." in result.stdout
    with open_store(store_url, create=False) as store:
        assert store.recover("a") is None
        assert store.list_runs() == ["c", "b"]


def test_runs_commands_name_an_unknown_run(store_url: str) -> None:
    for command in (["show", "nope"], ["events", "nope"], ["delete", "nope", "--yes"]):
        result = invoke("runs", *command, "--url", store_url)
        assert result.exit_code == 1
        assert result.stderr.startswith("error: no run 'nope' in ")
        assert len(result.stderr.splitlines()) == 1


@pytest.mark.sqlite
def test_runs_read_a_jsonl_folder(tmp_path: Path) -> None:
    target = f"jsonl:{tmp_path / 'runs'}"
    _fill(target)
    listed = json.loads(invoke("runs", "list", "--json", "--url", target).stdout)
    assert [run["run_id"] for run in listed["runs"]] == ["c", "b", "a"]
    detail = json.loads(invoke("runs", "show", "c", "--json", "--url", target).stdout)
    assert detail["events"]["count"] == 250


@pytest.mark.sqlite
def test_runs_list_piped_keeps_a_long_run_id_on_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    long_id = "agent-" + "x" * 180 + "-end"
    with open_store(url) as store:
        store.save_event(PAEvent(run_id=long_id, seq=1, kind=EventKind.CUSTOM))
    result = invoke("runs", "list", "--url", url)  # click's runner is not a terminal
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if long_id in line]
    assert row.split("│")[1].strip() == long_id


def test_runs_list_help_explains_paging() -> None:
    help_text = " ".join(invoke("runs", "list", "--help").stdout.split())
    assert "--limit INTEGER RANGE Runs per page, most recently written first." in help_text
    assert "--offset INTEGER RANGE Runs to skip: where the previous page said more" in help_text
