"""The shared behaviour suite on every backend, and proof that the suite itself can fail.

``TestBehaviour`` runs every row on every backend the ``backend`` fixture yields. The tests
after it feed the suite's newer rows stores that break the promise each row is about, so a
row that could never fail would show up here.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from purpose_agent import (
    AsyncSQLCheckpointer,
    InMemoryCheckpointer,
    NewEvent,
    PAEvent,
    Recovery,
    RunState,
    RunStatus,
    SequenceConflict,
    SQLCheckpointer,
)
from purpose_agent.testing import (
    ALL_CAPABILITIES,
    SUITES,
    Backend,
    BlockingAdapter,
    Capability,
    CheckpointerSuite,
    GroupsSuite,
    ProcessesSuite,
    StreamingSuite,
    ThreadsSuite,
)
from purpose_agent.testing.appending import AppendingThreadsRows
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.samples import ev
from purpose_agent.testing.steps import TornRead, step, steps_in_log, steps_in_recovery

REPO = Path(__file__).resolve().parent.parent


class TestBehaviour(CheckpointerSuite):
    """Every contract row on every backend."""


# -- declaring capabilities -------------------------------------------------------------------


def test_backend_declaring_nothing_is_held_to_every_capability() -> None:
    backend = Backend("plain", InMemoryCheckpointer)
    assert backend.capabilities == ALL_CAPABILITIES
    assert all(backend.has(capability) for capability in Capability)


def test_backend_declaring_some_capabilities_has_those_and_base() -> None:
    backend = Backend("some", InMemoryCheckpointer, [Capability.THREADS])
    assert backend.capabilities == {Capability.BASE, Capability.THREADS}
    assert not backend.has(Capability.DURABLE)


def test_every_capability_has_rows_and_every_row_runs_in_the_whole_suite() -> None:
    assert set(SUITES) == set(Capability)
    assert all(issubclass(CheckpointerSuite, rows) for rows in SUITES.values())
    # A row defined twice under one name would hide one of them in CheckpointerSuite.
    owners: dict[str, list[str]] = {}
    for klass in CheckpointerSuite.__mro__:
        if issubclass(klass, Rows) and "capability" in vars(klass):
            for name in vars(klass):
                if name.startswith("test_"):
                    owners.setdefault(name, []).append(klass.__name__)
    assert {name: classes for name, classes in owners.items() if len(classes) > 1} == {}


GATED_SUITE = """
import pytest
from purpose_agent import InMemoryCheckpointer
from purpose_agent.testing import Backend, CheckpointerSuite

class TestBare(CheckpointerSuite):
    @pytest.fixture
    def backend(self):
        store = InMemoryCheckpointer()
        return Backend("bare", lambda: store, capabilities=())

    def test_saved_event_is_visible_to_a_new_handle(self, backend):
        super().test_saved_event_is_visible_to_a_new_handle(backend)  # overridden, still DURABLE
"""


def test_rows_of_undeclared_capabilities_are_skipped_naming_the_capability(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_bare.py").write_text(GATED_SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    rows = "unknown_run_reads_as_empty or visible_to_a_new_handle or racing_for_one_seq"
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [*command, "-c", str(tmp_path / "pytest.ini"), "-k", rows, "test_bare.py"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 2 skipped" in result.stdout
    assert "bare does not declare Capability.DURABLE" in result.stdout
    assert "bare does not declare Capability.THREADS" in result.stdout


# -- importing without pytest ----------------------------------------------------------------

WITHOUT_PYTEST = """
import sys
sys.modules["pytest"] = None
from purpose_agent import InMemoryCheckpointer
import purpose_agent.testing as testing
from purpose_agent.testing import Backend, BlockingAdapter, Capability
store = InMemoryCheckpointer()
print(sorted(c.value for c in Backend("m", lambda: store, {Capability.THREADS}).capabilities))
print(BlockingAdapter.__name__, any(name.startswith("_pytest") for name in sys.modules))
try:
    testing.CheckpointerSuite
except ImportError as exc:
    print("ImportError:", exc)
"""


def test_package_imports_without_pytest_and_names_the_extra_the_rows_need() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_PYTEST],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    capabilities, adapter, suite = result.stdout.splitlines()
    assert capabilities == "['base', 'threads']"
    assert adapter == "BlockingAdapter False"
    assert suite.startswith("ImportError:")
    assert "install purpose-agent[testing]" in suite


# -- what counts as a torn read --------------------------------------------------------------


def _steps(first: int, last: int, run_id: str = "r") -> list[PAEvent]:
    return [event for number in range(first, last + 1) for event in step(run_id, number)[0]]


def _state(number: int) -> RunState:
    state = step("r", number)[1]
    assert state is not None
    return state


WHOLE: dict[str, tuple[Recovery | None, int]] = {
    "unknown_run": (None, 0),
    "first_step_no_snapshot_yet": (Recovery(None, _steps(1, 1)), 1),
    "snapshot_alone": (Recovery(_state(2), []), 2),
    "snapshot_and_the_step_after": (Recovery(_state(4), _steps(5, 5)), 5),
}

TORN: dict[str, Recovery] = {
    "gap": Recovery(None, [e for e in _steps(1, 1) if e.seq != 2]),
    "half_a_step": Recovery(None, _steps(1, 1)[:2]),
    "half_a_step_after_the_snapshot": Recovery(_state(2), _steps(3, 3)[:1]),
    "snapshot_missing_though_committed_with_step_2": Recovery(None, _steps(1, 2)),
    "stale_snapshot": Recovery(_state(2), _steps(3, 5)),
    "tail_overlapping_the_snapshot": Recovery(_state(2), _steps(2, 3)),
    "snapshot_no_step_wrote": Recovery(RunState(run_id="r", seq=3), []),
    "event_of_another_run": Recovery(None, _steps(1, 1, run_id="other")),
    "event_with_other_data": Recovery(None, [*_steps(1, 1)[:2], ev("r", 3, step=9)]),
}


@pytest.mark.parametrize("name", list(WHOLE))
def test_whole_recoveries_count_their_steps(name: str) -> None:
    recovery, steps = WHOLE[name]
    assert steps_in_recovery("r", recovery) == steps


@pytest.mark.parametrize("name", list(TORN))
def test_torn_recoveries_are_recognised(name: str) -> None:
    with pytest.raises(TornRead):
        steps_in_recovery("r", TORN[name])


def test_log_read_from_a_step_boundary_counts_the_earlier_steps() -> None:
    assert steps_in_log("r", iter(_steps(3, 4)), since_seq=6) == 4
    with pytest.raises(TornRead):
        steps_in_log("r", iter(_steps(3, 4)), since_seq=3)


# -- the new rows fail on stores that break their promise --------------------------------------


class _WholeRunInMemory(InMemoryCheckpointer):
    """Streams by reading the whole run first, as a store without paging would."""

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        return iter(self.list_events(run_id, since_seq))


class _StepsInPieces(InMemoryCheckpointer):
    """Commits a batch one event at a time and its snapshot last, as without transactions."""

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        for event in events:
            super().save_events([event])
            time.sleep(0.002)
        if snapshot is not None:
            super().save_snapshot(snapshot.run_id, snapshot)


class _RecoverInTwoReads(SQLCheckpointer):
    """Recovers with two separate reads, so a step committed between them tears the result."""

    def recover(self, run_id: str) -> Recovery | None:
        state = self.load_latest(run_id)
        time.sleep(0.02)
        events = self.list_events(run_id, state.seq if state is not None else 0)
        if state is None and not events:
            return None
        return Recovery(state, events)


def test_flat_memory_row_fails_for_a_store_that_reads_the_whole_run() -> None:
    with _WholeRunInMemory() as cp, pytest.raises(AssertionError, match="peaked"):
        StreamingSuite().test_iter_events_memory_stays_flat_as_the_run_grows(cp)


def test_readers_row_fails_for_a_store_that_commits_a_step_in_pieces() -> None:
    store = _StepsInPieces()
    backend = Backend("pieces", lambda: store, {Capability.THREADS})
    with pytest.raises(TornRead):
        ThreadsSuite().test_readers_alongside_writers_never_see_a_gap_or_half_a_step(backend)


@pytest.mark.sqlite
def test_recover_row_fails_for_a_store_that_recovers_in_two_reads(tmp_path: Path) -> None:
    opener: Any = functools.partial(_RecoverInTwoReads, f"sqlite:///{tmp_path / 'torn.db'}")
    backend = Backend("two-reads", opener)
    with pytest.raises(TornRead):
        ProcessesSuite().test_recover_is_consistent_while_another_process_writes_steps(backend)


class _CheckThenAppend(InMemoryCheckpointer):
    """Checks the expected last seq, then appends in a second step, as without a lock."""

    def append(
        self,
        run_id: str,
        events: Iterable[NewEvent],
        *,
        expected_last_seq: int | None = None,
        snapshot: RunState | None = None,
        group: str | None = None,
    ) -> list[PAEvent]:
        if expected_last_seq is not None and self.last_seq(run_id) != expected_last_seq:
            raise SequenceConflict(run_id, expected_last_seq + 1)
        time.sleep(0.005)
        return super().append(run_id, events, snapshot=snapshot, group=group)


class _PrefixAsPattern(InMemoryCheckpointer):
    """Lists runs by prefix as SQL's LIKE would, wildcards and (on some collations) case."""

    def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        runs = super().list_runs(group=group)
        if prefix is not None:
            pattern = "".join({"%": ".*", "_": "."}.get(char, re.escape(char)) for char in prefix)
            runs = [run_id for run_id in runs if re.match(pattern, run_id, re.IGNORECASE)]
        return runs[offset:][:limit]


def test_racing_append_row_fails_for_a_store_that_checks_then_appends() -> None:
    store = _CheckThenAppend()
    backend = Backend("check-then-append", lambda: store, {Capability.APPEND, Capability.THREADS})
    with pytest.raises(AssertionError):
        AppendingThreadsRows().test_threads_racing_on_one_expected_last_seq_have_one_winner(backend)


def test_prefix_row_fails_for_a_store_that_reads_the_prefix_as_a_pattern() -> None:
    with _PrefixAsPattern() as cp, pytest.raises(AssertionError):
        GroupsSuite().test_list_runs_by_prefix_is_exact(cp)  # type: ignore[arg-type]


# -- rows that a third-party store broke without failing them ----------------------------------


class _LenientReads(InMemoryCheckpointer):
    """Reads answer any str run id (a lone surrogate, say) instead of refusing it."""

    def load_latest(self, run_id: str) -> RunState | None:
        if isinstance(run_id, str) and any("\ud800" <= char <= "\udfff" for char in run_id):
            return None
        return super().load_latest(run_id)


class _SameSeqSnapshotKeptInBatches(InMemoryCheckpointer):
    """A snapshot sent with save_events at the stored seq is dropped instead of replacing it."""

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        latest = self.load_latest(snapshot.run_id) if snapshot is not None else None
        if latest is not None and snapshot is not None and latest.seq == snapshot.seq:
            snapshot = None
        super().save_events(events, snapshot)


class _StreamsBySeqWindows(InMemoryCheckpointer):
    """Pages iter_events by seq windows and stops at the first empty one."""

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        self.list_events(run_id, limit=0)  # checks the run id now

        def pages(low: int) -> Iterator[PAEvent]:
            while page := [e for e in self.list_events(run_id, low, 256) if e.seq <= low + 256]:
                yield from page
                low += 256

        return pages(max(since_seq, 0))


class _TsToTheMicrosecond(InMemoryCheckpointer):
    """Keeps ts to the microsecond, as a DATETIME(6) or TIMESTAMP column would."""

    def save_event(self, event: PAEvent) -> None:
        super().save_event(event.model_copy(update={"ts": round(event.ts, 6)}))


class _EncodesWithJsonDumps(InMemoryCheckpointer):
    """Runs data through json.dumps and json.loads, which read a surrogate pair as one character."""

    def save_event(self, event: PAEvent) -> None:
        data = json.loads(json.dumps(event.data))
        super().save_event(event.model_copy(update={"data": data}))


class _OffsetAsSQLiteTakesIt(InMemoryCheckpointer):
    """Hands list_runs' limit and offset on unchecked: SQLite reads a negative OFFSET as 0."""

    def list_runs(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        if offset >= 2**63:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        return super().list_runs(limit, offset=max(int(offset), 0))


class _SnapshotTimesToTheMillisecond(InMemoryCheckpointer):
    """Keeps a snapshot's created_at and updated_at to the millisecond, as DATETIME(3) would."""

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        times = {"created_at": round(state.created_at, 3), "updated_at": round(state.updated_at, 3)}
        super().save_snapshot(run_id, state.model_copy(update=times))


class _HandsOutWhatItKeeps(InMemoryCheckpointer):
    """Returns the same event objects on every read, so a caller's edit changes the store."""

    def __init__(self) -> None:
        super().__init__()
        self._kept: dict[tuple[str, int], PAEvent] = {}

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        read = super().list_events(run_id, since_seq, limit)
        return [self._kept.setdefault((event.run_id, event.seq), event) for event in read]


class _StatusByValue(InMemoryCheckpointer):
    """Takes a snapshot's status as a plain string, as a store writing a TEXT column would."""

    def save_snapshot(self, run_id: str, state: RunState) -> None:
        if type(state.status) is str:
            state = state.model_copy(update={"status": RunStatus(state.status)})
        super().save_snapshot(run_id, state)


@pytest.mark.parametrize(
    ("store", "row", "args"),
    [
        (_LenientReads, "test_bad_run_id_is_refused_by_every_method", ("lone_surrogate",)),
        (_SameSeqSnapshotKeptInBatches, "test_latest_snapshot_is_the_highest_seq", ()),
        (_StreamsBySeqWindows, "test_iter_events_streams_across_gaps_longer_than_a_page", ()),
        (_TsToTheMicrosecond, "test_event_comes_back_equal_with_ts_and_lane", ()),
        (
            _EncodesWithJsonDumps,
            "test_non_json_event_data_is_refused_and_nothing_written",
            ("surrogate_pair",),
        ),
        (
            _EncodesWithJsonDumps,
            "test_non_json_event_data_is_refused_and_nothing_written",
            ("surrogate_pair_key",),
        ),
        (_OffsetAsSQLiteTakesIt, "test_paging_arguments_are_checked", ()),
        (_SnapshotTimesToTheMillisecond, "test_snapshot_keeps_status_and_timestamps", ()),
        (_HandsOutWhatItKeeps, "test_what_a_read_returns_is_the_callers_to_change", ()),
        (_StatusByValue, "test_non_finite_or_bad_state_fields_are_refused", ()),
    ],
)
def test_base_row_fails_for_a_store_that_breaks_its_rule(
    store: type, row: str, args: tuple[str, ...]
) -> None:
    suite = CheckpointerSuite()
    with store() as cp, pytest.raises((AssertionError, pytest.fail.Exception)):
        getattr(suite, row)(cp, *args)


class _TrailingSpacesIgnored(InMemoryCheckpointer):
    """Matches run ids as a PAD SPACE collation does: "run " is the run "run"."""

    def save_events(self, events: Iterable[PAEvent], snapshot: RunState | None = None) -> None:
        events = [event.model_copy(update={"run_id": event.run_id.rstrip()}) for event in events]
        if snapshot is not None:
            snapshot = snapshot.model_copy(update={"run_id": snapshot.run_id.rstrip()})
        super().save_events(events, snapshot)


def test_run_ids_row_fails_for_a_store_that_ignores_trailing_spaces() -> None:
    row = "test_run_ids_differing_only_in_spaces_case_accents_or_wildcards_are_separate"
    with _TrailingSpacesIgnored() as cp, pytest.raises((AssertionError, SequenceConflict)):
        getattr(CheckpointerSuite(), row)(cp)


def test_huge_offset_row_reaches_a_store_whose_driver_cannot_take_it() -> None:
    with _OffsetAsSQLiteTakesIt() as cp, pytest.raises(OverflowError):
        CheckpointerSuite().test_paging_arguments_beyond_64_bits_are_answered(cp)


@pytest.mark.parametrize(
    "row",
    [
        "test_processes_appending_to_one_run_lose_and_duplicate_nothing",
        "test_recover_is_consistent_while_another_process_writes_steps",
    ],
)
def test_processes_rows_say_the_opener_must_pickle(row: str) -> None:
    """A lambda opener failed deep in multiprocessing with pickle's own words only."""
    store = InMemoryCheckpointer()
    backend = Backend("local", lambda: store, {Capability.PROCESSES})
    expected = r"local declares Capability\.PROCESSES.*does not pickle"
    with pytest.raises(pytest.fail.Exception, match=expected):
        getattr(ProcessesSuite(), row)(backend)


def test_bad_state_field_row_names_the_field_it_accepted() -> None:
    with (
        _StatusByValue() as cp,
        pytest.raises(pytest.fail.Exception, match="status='running'"),
    ):
        CheckpointerSuite().test_non_finite_or_bad_state_fields_are_refused(cp)


def test_bad_field_row_names_the_field_it_accepted() -> None:
    class _TakesStrKinds(InMemoryCheckpointer):
        def save_event(self, event: PAEvent) -> None:
            if (
                isinstance(event.kind, str)
                and event.kind == "custom"
                and not hasattr(event.kind, "name")
            ):
                return
            super().save_event(event)

    with _TakesStrKinds() as cp, pytest.raises(pytest.fail.Exception, match="kind='custom'"):
        CheckpointerSuite().test_non_finite_or_bad_fields_are_refused(cp)


class _ProtocolOnly:
    """A store with the Checkpointer protocol and nothing more, as a third party writes one."""

    def __init__(self) -> None:
        self._inner = InMemoryCheckpointer()

    def __getattr__(self, name: str) -> Any:
        if name in {
            "append",
            "last_seq",
            "event_by_key",
            "list_groups",
            "run_group",
            "compact",
            "delete_runs",
            "iter_keyed_events",
            "save_keyed_events",
        }:
            raise AttributeError(name)
        return getattr(self._inner, name)

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        return self._inner.list_events(run_id, since_seq, limit)

    def __enter__(self) -> _ProtocolOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        self._inner.close()


PROTOCOL_ONLY_SUITE = (
    GATED_SUITE.split("class TestBare", maxsplit=1)[0]
    + """
from tests.test_behaviour import _ProtocolOnly

class TestReadmeSnippet(CheckpointerSuite):
    @pytest.fixture
    def backend(self):
        return Backend("mine", _ProtocolOnly)   # as the README shows it: no capabilities
"""
)


def test_a_store_lacking_a_declared_capability_fails_naming_it(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(PROTOCOL_ONLY_SUITE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    # -rN: no short summary, which repeats each message whole where CI is set (and cut to
    # the terminal's width where it is not), so that each row's report holds it once.
    command = [sys.executable, "-m", "pytest", "-q", "-rN", "-p", "no:cacheprovider"]
    result = subprocess.run(
        [
            *command,
            "-c",
            str(tmp_path / "pytest.ini"),
            "-k",
            "unknown_run_reads_as_empty or every_call_after_close",
            "test_mine.py",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # Both rows say it: the one given a handle, and the one that opens its own.
    held = "mine is held to Capability.APPEND (append, last_seq, event_by_key)"
    assert result.stdout.count(held) == 2, result.stdout
    assert "Capability.BOUNDED_READS" in result.stdout
    assert "list the ones the store has" in result.stdout


class _NoAsyncWith(AsyncSQLCheckpointer):
    """An async store that cannot be used in ``async with``: not an AsyncCheckpointer."""

    __aenter__ = None  # type: ignore[assignment]
    __aexit__ = None  # type: ignore[assignment]


def test_the_async_adapter_refuses_a_store_that_is_not_an_async_checkpointer() -> None:
    """The adapter checked nothing: such a store passed every row it was put through."""

    async def open_it() -> Any:
        return _NoAsyncWith("sqlite://")

    with pytest.raises(
        TypeError, match="is not an AsyncCheckpointer: it lacks __aenter__, __aexit__"
    ):
        BlockingAdapter(open_it)


def test_the_async_adapter_enters_and_leaves_the_store_as_async_with_does() -> None:
    seen: list[str] = []

    class Watched(AsyncSQLCheckpointer):
        async def __aenter__(self) -> Self:
            seen.append("enter")
            return await super().__aenter__()

        async def __aexit__(self, *exc: object) -> None:
            seen.append("exit")
            await super().__aexit__(*exc)  # type: ignore[arg-type]

    async def open_it() -> Watched:
        return Watched("sqlite://")

    with BlockingAdapter(open_it) as store:
        store.save_event(ev("r", 1))
        assert store.list_events("r") == [ev("r", 1)]
    assert seen == ["enter", "exit"]
