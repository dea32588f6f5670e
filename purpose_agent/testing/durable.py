"""Capability.DURABLE: what one handle saved, a handle opened after it was closed still reads."""

from __future__ import annotations

from typing import ClassVar

from purpose_agent import Checkpointer, EventKind, PAEvent, Recovery, SequenceConflict
from purpose_agent.testing.capabilities import Backend, Capability
from purpose_agent.testing.harness import Rows
from purpose_agent.testing.needs_pytest import pytest
from purpose_agent.testing.samples import ev, st


class DurableSuite(Rows):
    """Rows that write through one handle, close it, and read through a new one.

    A handle that still holds the data in its own memory would pass every BASE row; only a
    second handle shows that the write reached the storage.
    """

    capability: ClassVar[Capability] = Capability.DURABLE

    def test_saved_event_is_visible_to_a_new_handle(self, backend: Backend) -> None:
        event = PAEvent(run_id="r1", seq=1, kind=EventKind.RUN_STARTED)
        with backend.open() as first:
            first.save_event(event)
        with backend.open() as second:
            assert second.list_events("r1") == [event]
            assert second.list_runs() == ["r1"]

    def test_save_is_visible_to_a_handle_open_at_the_same_time(
        self, backend: Backend, cp: Checkpointer
    ) -> None:
        with backend.open() as other:
            assert other.recover("r") is None
            cp.save_events([ev("r", 1)], snapshot=st("r", 1))
            assert other.recover("r") == Recovery(st("r", 1), [])

    def test_batch_with_snapshot_is_read_whole_by_a_new_handle(self, backend: Backend) -> None:
        with backend.open() as first:
            first.save_events([ev("r", 1), ev("r", 2)], snapshot=st("r", 2, step=2))
            first.save_events([ev("r", 3)])
        with backend.open() as second:
            assert second.load_latest("r") == st("r", 2, step=2)
            assert second.recover("r") == Recovery(st("r", 2, step=2), [ev("r", 3)])

    def test_deleted_run_stays_deleted_for_a_new_handle(self, backend: Backend) -> None:
        with backend.open() as first:
            first.save_events([ev("gone", 1), ev("kept", 1)], snapshot=st("gone", 1))
            first.delete_run("gone")
        with backend.open() as second:
            assert second.list_events("gone") == []
            assert second.load_latest("gone") is None
            assert second.recover("gone") is None
            assert second.list_runs() == ["kept"]
            assert second.list_events("kept") == [ev("kept", 1)]

    def test_conflict_is_detected_against_what_another_handle_saved(self, backend: Backend) -> None:
        with backend.open() as first:
            first.save_event(ev("r", 1, v="first"))
        with backend.open() as second:
            second.save_event(ev("r", 1, v="first"))
            with pytest.raises(SequenceConflict):
                second.save_event(ev("r", 1, v="second"))
            assert second.list_events("r") == [ev("r", 1, v="first")]
