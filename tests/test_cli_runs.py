"""`purpose-agent runs`: listings for people and scripts, paging, and deleting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from purpose_agent import EventKind, NewEvent, PAEvent, RunState
from purpose_agent.stores.open import open_store
from tests.test_cli_copy import _write_seed_sqlite
from tests.test_cli_support import (
    STORES,
    invoke,
    json_lines,
    make_store_url,
    run_on_a_terminal,
    run_python_module,
)


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
        "group": None,
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


def test_runs_events_past_the_end_tells_an_unknown_run_from_a_known_one(store_url: str) -> None:
    """A poll with --since on a mistyped run id fails, as the first page does."""
    _fill(store_url)
    for args in (["--since", "5"], ["--since", "5", "--json"], ["--since", "5", "--all"]):
        unknown = invoke("runs", "events", "nope", *args, "--url", store_url)
        assert unknown.exit_code == 1, (args, unknown.output)
        assert unknown.stderr.startswith("error: no run 'nope' in "), args
        known = invoke("runs", "events", "b", *args, "--url", store_url)
        assert known.exit_code == 0, (args, known.output)
    done = invoke("runs", "events", "b", "--since", "5", "--url", store_url)
    assert done.stdout == "No events after seq 5 in run 'b'.\n"


@pytest.mark.sqlite
def test_runs_read_a_jsonl_folder(tmp_path: Path) -> None:
    target = f"jsonl:{tmp_path / 'runs'}"
    _fill(target)
    listed = json.loads(invoke("runs", "list", "--json", "--url", target).stdout)
    assert [run["run_id"] for run in listed["runs"]] == ["c", "b", "a"]
    detail = json.loads(invoke("runs", "show", "c", "--json", "--url", target).stdout)
    assert detail["events"]["count"] == 250


@pytest.mark.sqlite
def test_runs_of_a_jsonl_folder_show_and_select_its_groups(tmp_path: Path) -> None:
    target = f"jsonl:{tmp_path / 'runs'}"
    with open_store(target) as store:
        store.append("chat-1:r1", [NewEvent(kind=EventKind.MESSAGE)], group="chat-1")
        store.append("solo", [NewEvent(kind=EventKind.MESSAGE)])
    listed = json.loads(invoke("runs", "list", "--json", "--url", target).stdout)
    assert {run["run_id"]: run["group"] for run in listed["runs"]} == {
        "chat-1:r1": "chat-1",
        "solo": None,
    }
    detail = json.loads(invoke("runs", "show", "chat-1:r1", "--json", "--url", target).stdout)
    assert detail["group"] == "chat-1"
    selected = invoke("runs", "list", "--group", "chat-1", "--json", "--url", target)
    assert selected.exit_code == 0, selected.output
    assert [run["run_id"] for run in json.loads(selected.stdout)["runs"]] == ["chat-1:r1"]
    groups = invoke("runs", "groups", "--json", "--url", target)
    assert groups.exit_code == 0, groups.output
    assert [group["group"] for group in json.loads(groups.stdout)["groups"]] == ["chat-1"]
    verified = invoke("runs", "verify", "--prefix", "solo", "--json", "--url", target)
    assert verified.exit_code == 0, verified.output
    assert json.loads(verified.stdout)["runs"] == 1


@pytest.mark.sqlite
def test_runs_print_a_lone_surrogate_as_a_json_escape(tmp_path: Path) -> None:
    # A lone surrogate is a value the stores keep exactly; UTF-8 cannot encode it, so the
    # output must carry it as JSON's \udc80 escape, whatever the locale's error handler.
    url = f"sqlite:///{tmp_path / 'store.db'}"
    data = {"text": "half \udc80 pair", "\ud800": [1]}
    event = PAEvent(run_id="r", seq=1, kind=EventKind.MESSAGE, ts=1.0, data=data)
    with open_store(url) as store:
        store.save_events([event], snapshot=RunState(run_id="r", seq=1, data=data))
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    env["PYTHONIOENCODING"] = "utf-8"  # strict, as stdout is in most UTF-8 locales

    def run(*args: str) -> str:
        done = run_python_module("purpose_agent", *args, "--url", url, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert json_lines(run("runs", "events", "r", "--json")) == [event.to_dict()]
    assert json.loads(run("runs", "show", "r", "--json"))["snapshot"]["data"] == data
    assert "\\udc80" in run("runs", "events", "r")
    assert '"text": "half \\udc80 pair"' in run("runs", "show", "r")


@pytest.mark.sqlite
@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_runs_print_what_a_non_utf8_output_cannot_encode_as_escapes(
    tmp_path: Path, encoding: str
) -> None:
    """On a standard output that is not UTF-8 (``LANG=C`` with ``PYTHONUTF8=0``, a Latin-1
    locale), every command failed with UnicodeEncodeError on the first run id, group or datum
    it could not encode: one such run made ``runs list`` useless."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run_id = "zürich-\u2192"
    data = {"city": "Zürich \u2192 Köln", "mark": "\u202e"}
    with open_store(url) as store:
        store.append(
            run_id,
            [NewEvent(kind=EventKind.MESSAGE, data=data)],
            snapshot=RunState(run_id=run_id, data=data),
            group="gruppe-\u2192",
        )
    env = {k: v for k, v in os.environ.items() if k != "PURPOSE_AGENT_DB_URL"}
    env["PYTHONIOENCODING"] = encoding  # strict, as a non-UTF-8 locale's stdout is

    def run(*args: str) -> bytes:
        done = subprocess.run(
            [sys.executable, "-m", "purpose_agent", *args, "--url", url],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # Scripts get the exact values back, as JSON's \u escapes.
    listed = run("runs", "list", "--json")
    assert listed.isascii()
    assert json.loads(listed)["runs"][0]["run_id"] == run_id
    assert json.loads(run("runs", "groups", "--json"))["groups"][0]["group"] == "gruppe-\u2192"
    assert json.loads(run("runs", "show", run_id, "--json"))["snapshot"]["data"] == data
    assert json.loads(run("runs", "events", run_id, "--json"))["data"] == data
    # People see an escape where the terminal has no character (click writes UTF-8 to an
    # ASCII stream, which it takes for a mistake, so `runs events` is checked on Latin-1).
    shown = [run("runs", "list"), run("runs", "groups"), run("runs", "show", run_id)]
    shown += [run("runs", "verify")]
    if encoding == "latin-1":
        shown.append(run("runs", "events", run_id))
    for output in shown:
        text = output.decode(encoding)
        assert "\\u2192" in text or "Read 1 run" in text
        assert "\u2192" not in text


@pytest.mark.sqlite
def test_runs_events_escapes_control_characters_in_event_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    data = {"text": "plain \x9b2J then \x85 next", "tab": "\t"}
    with open_store(url) as store:
        store.save_event(PAEvent(run_id="r", seq=1, kind=EventKind.MESSAGE, data=data))
    result = invoke("runs", "events", "r", "--url", url)
    assert result.exit_code == 0, result.output
    assert "\x9b" not in result.stdout
    assert "\x85" not in result.stdout
    assert '"plain \\x9b2J then \\x85 next"' in result.stdout
    as_json = invoke("runs", "events", "r", "--json", "--url", url)
    # One line per event at "\n" only: str.splitlines() would also split at the NEL.
    assert json.loads(as_json.stdout.split("\n")[0])["data"] == data


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


# -- groups ------------------------------------------------------------------------------------


def _fill_groups(url: str) -> None:
    """Written in this order: chat-1:r1, chat-2:r1, solo, chat-1:r2, chat-1:r3, chat-3:r1."""
    with open_store(url) as store:
        for run_id, group in (
            ("chat-1:r1", "chat-1"),
            ("chat-2:r1", "chat-2"),
            ("solo", None),
            ("chat-1:r2", "chat-1"),
            ("chat-1:r3", "chat-1"),
            ("chat-3:r1", "chat-3"),
        ):
            events = [NewEvent(kind=EventKind.MESSAGE, data={"run": run_id})] * 2
            store.append(run_id, events, group=group)  # type: ignore[attr-defined]


def _table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]


def test_runs_list_shows_each_run_s_group(store_url: str) -> None:
    _fill_groups(store_url)
    result = invoke("runs", "list", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert "┃ run id    ┃ group  ┃ status" in result.stdout
    assert [row[:2] for row in _table_rows(result.stdout)] == [
        ["chat-3:r1", "chat-3"],
        ["chat-1:r3", "chat-1"],
        ["chat-1:r2", "chat-1"],
        ["solo", "-"],
        ["chat-2:r1", "chat-2"],
        ["chat-1:r1", "chat-1"],
    ]
    listed = json.loads(invoke("runs", "list", "--json", "--url", store_url).stdout)
    assert [(run["run_id"], run["group"]) for run in listed["runs"]][2:4] == [
        ("chat-1:r2", "chat-1"),
        ("solo", None),
    ]


def test_runs_list_filters_by_group_and_prefix_with_paging(store_url: str) -> None:
    _fill_groups(store_url)

    def page(*options: str) -> dict[str, object]:
        result = invoke("runs", "list", "--json", *options, "--url", store_url)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # type: ignore[no-any-return]

    def ids(listed: dict[str, object]) -> list[str]:
        return [run["run_id"] for run in listed["runs"]]  # type: ignore[attr-defined, index]

    first = page("--group", "chat-1", "--limit", "2")
    assert ids(first) == ["chat-1:r3", "chat-1:r2"]
    assert (first["group"], first["prefix"], first["next_offset"]) == ("chat-1", None, 2)
    rest = page("--group", "chat-1", "--limit", "2", "--offset", "2")
    assert ids(rest) == ["chat-1:r1"]
    assert rest["next_offset"] is None
    assert ids(page("--prefix", "chat-")) == [
        "chat-3:r1", "chat-1:r3", "chat-1:r2", "chat-2:r1", "chat-1:r1",
    ]  # fmt: skip
    assert ids(page("--prefix", "CHAT-")) == []  # case-sensitive
    assert ids(page("--prefix", "chat-1:r", "--group", "chat-1", "--offset", "1")) == [
        "chat-1:r2",
        "chat-1:r1",
    ]
    assert ids(page("--group", "chat-1", "--prefix", "chat-2")) == []
    text = invoke("runs", "list", "--group", "chat-2", "--url", store_url).stdout
    assert text.startswith("Runs of group 'chat-2' in ")
    none = invoke("runs", "list", "--group", "nobody", "--url", store_url).stdout
    assert none.startswith("No runs of group 'nobody' in ")


def test_runs_groups_lists_newest_first_in_pages(store_url: str) -> None:
    _fill_groups(store_url)
    result = invoke("runs", "groups", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert [row[:2] for row in _table_rows(result.stdout)] == [
        ["chat-3", "chat-3:r1"],
        ["chat-1", "chat-1:r3"],
        ["chat-2", "chat-2:r1"],
    ]
    first = json.loads(
        invoke("runs", "groups", "--json", "--limit", "2", "--url", store_url).stdout
    )
    assert [group["group"] for group in first["groups"]] == ["chat-3", "chat-1"]
    assert first["next_offset"] == 2
    assert first["groups"][1]["latest_run"] == "chat-1:r3"
    assert isinstance(first["groups"][1]["updated_at"], float)
    rest = invoke("runs", "groups", "--limit", "2", "--offset", "2", "--url", store_url)
    assert [row[0] for row in _table_rows(rest.stdout)] == ["chat-2"]
    assert "More groups" not in rest.stdout
    assert (
        "More groups: --offset 2"
        in invoke("runs", "groups", "--limit", "2", "--url", store_url).stdout
    )


def test_runs_groups_of_a_store_without_groups_says_so(store_url: str) -> None:
    _fill(store_url)
    result = invoke("runs", "groups", "--url", store_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("No groups in ")
    assert json.loads(invoke("runs", "groups", "--json", "--url", store_url).stdout)["groups"] == []


def test_runs_show_names_the_group(store_url: str) -> None:
    _fill_groups(store_url)
    detail = json.loads(invoke("runs", "show", "chat-1:r2", "--json", "--url", store_url).stdout)
    assert detail["group"] == "chat-1"
    text = invoke("runs", "show", "solo", "--url", store_url).stdout
    assert ["group", "-"] in _table_rows(text)


def test_runs_delete_by_group_asks_then_deletes_in_one_call(store_url: str) -> None:
    _fill_groups(store_url)
    declined = invoke("runs", "delete", "--group", "chat-1", "--url", store_url, input="n\n")
    assert declined.exit_code == 1
    assert "Delete 3 runs of group 'chat-1' (6 events) from " in declined.stdout
    with open_store(store_url, create=False) as store:
        assert len(store.list_runs()) == 6

    result = invoke("runs", "delete", "--group", "chat-1", "--url", store_url, input="y\n")
    assert result.exit_code == 0, result.output
    assert "Deleted 3 runs of group 'chat-1' (6 events) from " in result.stdout
    with open_store(store_url, create=False) as store:
        assert store.list_runs() == ["chat-3:r1", "solo", "chat-2:r1"]


@pytest.mark.parametrize(
    ("options", "left"),
    [
        (["--prefix", "chat-1:"], ["chat-3:r1", "solo", "chat-2:r1"]),
        # Store-wide, a group goes only with its newest run: chat-1:r3 keeps chat-1 whole.
        (["--keep-newest", "2"], ["chat-3:r1", "chat-1:r3", "chat-1:r2", "chat-1:r1"]),
        (
            ["--keep-newest", "1", "--group", "chat-1"],
            ["chat-3:r1", "chat-1:r3", "solo", "chat-2:r1"],
        ),
        (["--older-than", "1h"], None),
    ],
)
def test_runs_delete_by_filters(store_url: str, options: list[str], left: list[str] | None) -> None:
    _fill_groups(store_url)
    with open_store(store_url, create=False) as store:
        before = store.list_runs()
    result = invoke("runs", "delete", *options, "--yes", "--url", store_url)
    assert result.exit_code == 0, result.output
    with open_store(store_url, create=False) as store:
        after = store.list_runs()
    assert after == (before if left is None else left)
    gone = len(before) - len(after)
    assert f"Deleted {gone} run{'s' if gone != 1 else ''} " in result.stdout
    assert f"({2 * gone} events)" in result.stdout


def test_runs_delete_needs_a_run_or_filters_not_both(store_url: str) -> None:
    neither = invoke("runs", "delete", "--url", store_url)
    assert neither.exit_code == 2
    assert "say which runs" in neither.stderr
    both = invoke("runs", "delete", "solo", "--group", "g", "--url", store_url)
    assert both.exit_code == 2
    assert "not both" in both.stderr
    _fill_groups(store_url)
    nothing = invoke("runs", "delete", "--group", "nobody", "--url", store_url)
    assert nothing.exit_code == 0
    assert nothing.stdout.startswith("No runs of group 'nobody' in ")


@pytest.mark.sqlite
def test_runs_list_by_group_needs_a_store_with_groups(tmp_path: Path) -> None:
    path = tmp_path / "seed.db"
    _write_seed_sqlite(path, [("r", 1, "custom", {})], {})
    result = invoke("runs", "list", "--group", "g", "--url", f"seed-sqlite:{path}")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: seed-sqlite:{path} keeps no run groups")
    plain = json.loads(invoke("runs", "list", "--json", "--url", f"seed-sqlite:{path}").stdout)
    assert [(run["run_id"], run["group"]) for run in plain["runs"]] == [("r", None)]


def test_control_characters_in_groups_and_lanes_are_shown_escaped_not_sent_to_the_terminal(
    tmp_path: Path,
) -> None:
    """A group is often an end user's id (a LangGraph thread): its escapes retitled the
    terminal (``ESC ] 0 ;``) and a lane's recoloured the listing."""
    url = f"sqlite:///{tmp_path / 'esc.db'}"
    group, lane = "chat\x1b]0;pwned\x07\x9b", "\x1b[31mred\x7f"
    with open_store(url) as store:
        store.append("esc", [NewEvent(kind=EventKind.CUSTOM, lane_id=lane)], group=group)
    shown = {
        "list": invoke("runs", "list", "--url", url).stdout,
        "groups": invoke("runs", "groups", "--url", url).stdout,
        "show": invoke("runs", "show", "esc", "--url", url).stdout,
        "events": invoke("runs", "events", "esc", "--url", url).stdout,
    }
    for name, text in shown.items():
        assert not any(c in text for c in "\x1b\x07\x7f\x9b"), name
    for name in ("list", "groups", "show"):
        assert "chat\\x1b]0;pwned\\x07\\x9b" in shown[name], name
    assert "\\x1b[31mred\\x7f" in shown["events"]
    listed = json.loads(invoke("runs", "list", "--json", "--url", url).stdout)
    assert listed["runs"][0]["group"] == group  # scripts get the exact value


def test_bidirectional_and_zero_width_characters_are_shown_escaped(tmp_path: Path) -> None:
    """A RIGHT-TO-LEFT OVERRIDE showed run "inv-\u202e1gpj" as "inv-jpg1", and a zero-width
    space made two ids look the same; readable text (accents, CJK, emoji) stays as it is."""
    url = f"sqlite:///{tmp_path / 'bidi.db'}"
    run_id, group = "inv-\u202e1gpj", "caf\u00e9-\u4e2d\u200b\ufeff-\U0001f468\u200d\U0001f469"
    lane, data = "\u2066lane\u2069", {"note": "a\u202db\u200ec\u2028d"}
    with open_store(url) as store:
        store.append(
            run_id, [NewEvent(kind=EventKind.CUSTOM, lane_id=lane, data=data)], group=group
        )
    shown = {
        "list": invoke("runs", "list", "--url", url).stdout,
        "groups": invoke("runs", "groups", "--url", url).stdout,
        "show": invoke("runs", "show", run_id, "--url", url).stdout,
        "events": invoke("runs", "events", run_id, "--url", url).stdout,
        "error": invoke("runs", "show", run_id + "x", "--url", url).stderr,
    }
    for name, text in shown.items():
        assert not any(c in text for c in "\u202e\u202d\u2066\u2069\u200b\ufeff\u200e\u2028"), name
    for name in ("list", "groups", "show"):
        assert "caf\u00e9-\u4e2d\\u200b\\ufeff-\U0001f468\u200d\U0001f469" in shown[name], name
    for name in ("list", "show", "error"):
        assert "inv-\\u202e1gpj" in shown[name], name
    assert "\\u2066lane\\u2069" in shown["events"]
    assert "a\\u202db\\u200ec\\u2028d" in shown["events"]
    listed = json.loads(invoke("runs", "list", "--json", "--url", url).stdout)
    assert (listed["runs"][0]["run_id"], listed["runs"][0]["group"]) == (run_id, group)
    # One event a line: its raw U+2028 is inside a JSON string, not a line break.
    (line,) = (
        invoke("runs", "events", run_id, "--json", "--url", url).stdout.rstrip("\n").split("\n")
    )
    event = json.loads(line)
    assert (event["run_id"], event["lane_id"], event["data"]) == (run_id, lane, data)


def _on_a_terminal(columns: int, *args: str) -> list[str]:
    """The lines ``python -m purpose_agent ARGS`` shows on a terminal ``columns`` wide."""
    import re

    env = {k: v for k, v in os.environ.items() if k not in ("PURPOSE_AGENT_DB_URL", "COLUMNS")}
    code, err, shown = run_on_a_terminal(*args, terminal="stdout", env=env, columns=columns)
    assert code == 0, err
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    return text.replace("\r\n", "\n").splitlines()


def _cells(lines: list[str]) -> list[list[str]]:
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines if "│" in line]


def test_runs_list_on_a_narrow_terminal_keeps_the_run_ids(store_url: str) -> None:
    """In 40 columns only the times were readable: every other column squeezed to a letter."""
    with open_store(store_url) as store:
        store.append("chat-2024-11-05-abcdef", [NewEvent(kind="tool_call")], group="support")
        store.append("job-7", [NewEvent(kind="tool_call")])
    narrow = _on_a_terminal(40, "runs", "list", "--url", store_url)
    assert _cells(narrow) == [["job-7", "-"], ["chat-2024-11-05-abcdef", "support"]]
    assert all(len(line) <= 40 for line in narrow if "│" in line or "━" in line)
    assert "4 more columns with --json" in narrow
    header = next(line for line in narrow if "┃" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["run id", "group"]
    # No room for the group: the id alone; everything on a wide terminal.
    narrower = _on_a_terminal(30, "runs", "list", "--url", store_url)
    assert _cells(narrower) == [["job-7"], ["chat-2024-11-05-abcdef"]]
    assert "5 more columns with --json" in narrower
    wide = _on_a_terminal(200, "runs", "list", "--url", store_url)
    assert [row[:5] for row in _cells(wide)] == [
        ["job-7", "-", "-", "1", "-"],
        ["chat-2024-11-05-abcdef", "support", "-", "1", "-"],
    ]
    assert not any("more column" in line for line in wide)


def test_runs_groups_on_a_narrow_terminal_keeps_the_group_names(store_url: str) -> None:
    """In 40 columns each group and run id folded to a few letters beside a whole time."""
    with open_store(store_url) as store:
        store.append("chat-2024-11-05-abcdef", [NewEvent(kind="tool_call")], group="support")
        store.append("job-7", [NewEvent(kind="tool_call")], group="ops")
    narrow = _on_a_terminal(40, "runs", "groups", "--url", store_url)
    assert _cells(narrow) == [["ops", "job-7"], ["support", "chat-2024-11-05-abcdef"]]
    assert all(len(line) <= 40 for line in narrow if "│" in line or "━" in line)
    assert "1 more column with --json" in narrow
    header = next(line for line in narrow if "┃" in line)
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == ["group", "latest run"]
    # No room for the latest run: the group alone; everything on a wide terminal.
    narrower = _on_a_terminal(30, "runs", "groups", "--url", store_url)
    assert _cells(narrower) == [["ops"], ["support"]]
    assert "2 more columns with --json" in narrower
    wide = _on_a_terminal(200, "runs", "groups", "--url", store_url)
    assert [row[:2] for row in _cells(wide)] == [
        ["ops", "job-7"],
        ["support", "chat-2024-11-05-abcdef"],
    ]
    assert all(len(row) == 3 and row[2].endswith("Z") for row in _cells(wide))
    assert not any("more column" in line for line in wide)
