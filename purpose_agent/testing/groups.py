"""Capability.GROUPS: runs kept together in a group, and runs listed by group and id prefix.

The rows follow :class:`purpose_agent.protocol.RunGroups`. A run joins a group only through
``append(group=...)``, so these rows need Capability.APPEND as well.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from purpose_agent import Checkpointer, InvalidInput, InvalidRunId, SequenceConflict
from purpose_agent.protocol import Appending, RunGroups
from purpose_agent.testing.capabilities import Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.samples import BAD_RUN_IDS, ev, new, st


class GroupedStore(RunGroups, Appending, Checkpointer, Protocol):
    """A checkpointer with the methods of :class:`RunGroups` and :class:`Appending`.

    The rows take the ``cp`` fixture under this type; the capability gate has made sure the
    backend declares Capability.GROUPS and Capability.APPEND before a row runs.
    """


# Ids that a prefix read as a LIKE pattern, or compared without case, would mix up.
PREFIX_RUNS = [
    "thread-1",
    "thread-10",
    "thread-2",
    "Thread-3",
    "threads",
    "a%b",
    "a%%",
    "a_b",
    "axb",
    "ab",
    "ünï",
    "unx",
]


class GroupsSuite(Rows):
    """Runs in groups, listed newest first and paged, and runs listed by an exact id prefix."""

    capability: ClassVar[Capability] = Capability.GROUPS
    also_needs: ClassVar[frozenset[Capability]] = frozenset({Capability.APPEND})

    # -- joining a group -----------------------------------------------------------------------

    def test_append_with_a_group_puts_the_run_in_it(self, cp: GroupedStore) -> None:
        cp.append("r", [new()], group="conversation-1")
        cp.save_event(ev("plain", 1))
        cp.append("appended", [new()])
        assert cp.run_group("r") == "conversation-1"
        assert cp.run_group("plain") is None
        assert cp.run_group("appended") is None
        assert cp.run_group("unknown") is None
        assert cp.list_runs(group="conversation-1") == ["r"]
        assert cp.list_groups() == ["conversation-1"]

    def test_later_writes_keep_the_group_and_another_group_moves_the_run(
        self, cp: GroupedStore
    ) -> None:
        cp.append("r", [new()], group="g")
        cp.append("r", [new()])
        cp.save_event(ev("r", 10))
        cp.save_events([ev("r", 11)], snapshot=st("r", 11))
        cp.save_snapshot("r", st("r", 11))
        assert cp.run_group("r") == "g"
        cp.append("r", [new()], group="h")
        assert cp.run_group("r") == "h"
        assert cp.list_runs(group="g") == []
        assert cp.list_runs(group="h") == ["r"]
        assert cp.list_groups() == ["h"]

    def test_a_failed_append_leaves_the_group_as_it_was(self, cp: GroupedStore) -> None:
        with pytest.raises(SequenceConflict):
            cp.append("new", [new()], expected_last_seq=5, group="g")
        with pytest.raises(InvalidInput):
            cp.append("new", [], group="g")
        assert cp.run_group("new") is None
        assert cp.list_groups() == []
        cp.append("r", [new()], group="g")
        with pytest.raises(SequenceConflict):
            cp.append("r", [new()], expected_last_seq=0, group="h")
        with pytest.raises(InvalidInput):
            cp.append("r", [new(bad={1})], group="h")
        assert cp.run_group("r") == "g"
        assert cp.list_groups() == ["g"]
        assert cp.list_runs(group="h") == []

    @pytest.mark.parametrize("group", ["a\x00b", "g" * 256, 7, b"g"], ids=repr)
    def test_a_group_that_cannot_be_stored_is_refused(self, cp: GroupedStore, group: Any) -> None:
        with pytest.raises(InvalidInput):
            cp.append("r", [new()], group=group)
        assert cp.recover("r") is None
        assert cp.list_runs() == []
        assert cp.list_groups() == []

    def test_group_names_at_the_limits_are_kept_exactly(self, cp: GroupedStore) -> None:
        names = ["g" * 255, "G", "g", "ünï 🙂", "%", "_", "a/b"]
        for index, name in enumerate(names):
            cp.append(f"r{index}", [new()], group=name)
        for index, name in enumerate(names):
            assert cp.run_group(f"r{index}") == name
            assert cp.list_runs(group=name) == [f"r{index}"]
        assert cp.list_runs(group="ü") == []
        assert sorted(cp.list_groups()) == sorted(names)

    @pytest.mark.parametrize("name", list(BAD_RUN_IDS))
    def test_run_group_refuses_a_bad_run_id(self, cp: GroupedStore, name: str) -> None:
        with pytest.raises(InvalidRunId):
            cp.run_group(BAD_RUN_IDS[name])
        with pytest.raises(InvalidRunId):
            cp.append(BAD_RUN_IDS[name], [new()], group="g")
        assert cp.list_groups() == []

    def test_deleted_run_leaves_its_group(self, cp: GroupedStore) -> None:
        cp.append("a", [new()], group="g")
        cp.append("b", [new()], group="g")
        cp.append("c", [new()], group="only-c")
        cp.delete_run("a")
        cp.delete_run("c")
        assert cp.run_group("a") is None
        assert cp.list_runs(group="g") == ["b"]
        assert cp.list_groups() == ["g"]
        cp.append("a", [new()])  # written again from scratch: no group comes back
        assert cp.run_group("a") is None
        assert cp.list_runs(group="g") == ["b"]

    # -- listing runs of a group ---------------------------------------------------------------

    def test_list_runs_of_a_group_most_recently_written_first(self, cp: GroupedStore) -> None:
        for index in range(5):
            cp.append(f"c{index}", [new()], group="conv")
            cp.append(f"o{index}", [new()], group="other")
            cp.save_event(ev(f"plain{index}", 1))
        assert cp.list_runs(group="conv") == ["c4", "c3", "c2", "c1", "c0"]
        cp.save_event(ev("c1", 5))
        cp.save_snapshot("c3", st("c3", 1))
        cp.append("c0", [new()])
        assert cp.list_runs(group="conv") == ["c0", "c3", "c1", "c4", "c2"]
        assert cp.list_runs(group="other") == ["o4", "o3", "o2", "o1", "o0"]
        assert cp.list_runs(group="nobody") == []
        assert len(cp.list_runs()) == 15

    def test_list_runs_of_a_group_pages(self, cp: GroupedStore) -> None:
        for index in range(7):
            cp.append(f"c{index}", [new()], group="conv")
            cp.append(f"o{index}", [new()], group="other")
        everything = cp.list_runs(group="conv")
        assert everything == [f"c{index}" for index in range(6, -1, -1)]
        pages = [cp.list_runs(3, offset=offset, group="conv") for offset in (0, 3, 6, 9)]
        assert pages == [everything[:3], everything[3:6], everything[6:], []]
        assert cp.list_runs(0, group="conv") == []
        assert cp.list_runs(group="conv", offset=5) == everything[5:]
        with pytest.raises(InvalidInput):
            cp.list_runs(-1, group="conv")

    # -- listing runs by prefix ----------------------------------------------------------------

    def test_list_runs_by_prefix_is_exact(self, cp: GroupedStore) -> None:
        for run_id in PREFIX_RUNS:
            cp.save_event(ev(run_id, 1))
        newest_first = PREFIX_RUNS[::-1]

        def starting(prefix: str) -> list[str]:
            return [run_id for run_id in newest_first if run_id.startswith(prefix)]

        cases = {
            "thread-": ["thread-2", "thread-10", "thread-1"],
            "thread-1": ["thread-10", "thread-1"],
            "T": ["Thread-3"],
            "t": ["threads", "thread-2", "thread-10", "thread-1"],
            "a%": ["a%%", "a%b"],
            "a%%": ["a%%"],
            "a_": ["a_b"],
            "%": [],
            "_": [],
            "a\\": [],
            "a/": [],
            "u": ["unx"],
            "ü": ["ünï"],
            "thread-10x": [],
        }
        for prefix, expected in cases.items():
            assert expected == starting(prefix)  # the table itself is right
            assert cp.list_runs(prefix=prefix) == expected, prefix
        assert cp.list_runs(prefix="") == newest_first

    def test_a_prefix_no_run_id_can_start_with_lists_no_run(self, cp: GroupedStore) -> None:
        # Characters no run id holds, some of which no database takes as text: nothing starts
        # with them, on every store.
        cp.append("a", [new()], group="g")
        for prefix in ("\ud800", "a\x00", "\ud83d\ude00", "a/", "a\\", "\x7f"):
            assert cp.list_runs(prefix=prefix) == [], repr(prefix)
            assert cp.list_runs(group="g", prefix=prefix) == [], repr(prefix)
        assert cp.list_runs(prefix="a") == ["a"]

    def test_list_runs_by_prefix_pages(self, cp: GroupedStore) -> None:
        for index in range(6):
            cp.save_event(ev(f"job-{index}", 1))
            cp.save_event(ev(f"other-{index}", 1))
        everything = [f"job-{index}" for index in range(5, -1, -1)]
        assert cp.list_runs(prefix="job-") == everything
        assert cp.list_runs(4, prefix="job-") == everything[:4]
        assert cp.list_runs(4, offset=4, prefix="job-") == everything[4:]
        assert cp.list_runs(prefix="job-", offset=6) == []

    def test_group_and_prefix_together(self, cp: GroupedStore) -> None:
        cp.append("x-1", [new()], group="g")
        cp.append("y-1", [new()], group="g")
        cp.append("x-2", [new()], group="h")
        cp.append("x-3", [new()], group="g")
        cp.save_event(ev("x-4", 1))
        assert cp.list_runs(group="g", prefix="x-") == ["x-3", "x-1"]
        assert cp.list_runs(1, offset=1, group="g", prefix="x-") == ["x-1"]
        assert cp.list_runs(group="h", prefix="y") == []
        assert cp.list_runs(group="g", prefix="") == ["x-3", "y-1", "x-1"]

    # -- listing groups ------------------------------------------------------------------------

    def test_list_groups_puts_the_group_with_the_newest_run_first(self, cp: GroupedStore) -> None:
        assert cp.list_groups() == []
        cp.append("a1", [new()], group="ga")
        cp.append("b1", [new()], group="gb")
        cp.append("a2", [new()], group="ga")
        cp.append("c1", [new()], group="gc")
        assert cp.list_groups() == ["gc", "ga", "gb"]
        cp.append("b1", [new()])
        assert cp.list_groups() == ["gb", "gc", "ga"]
        cp.save_event(ev("a1", 9))
        assert cp.list_groups() == ["ga", "gb", "gc"]
        cp.save_snapshot("c1", st("c1", 1))
        assert cp.list_groups() == ["gc", "ga", "gb"]
        cp.save_event(ev("ungrouped", 1))
        assert cp.list_groups() == ["gc", "ga", "gb"]
        assert cp.list_groups(2) == ["gc", "ga"]
        assert cp.list_groups(2, offset=2) == ["gb"]
        assert cp.list_groups(offset=1) == ["ga", "gb"]
        assert cp.list_groups(0) == []
        cp.delete_run("c1")
        assert cp.list_groups() == ["ga", "gb"]
        with pytest.raises(InvalidInput):
            cp.list_groups(-1)
