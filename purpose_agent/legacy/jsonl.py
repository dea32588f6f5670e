"""A read-only view of a JSONL folder that also reads the snapshots the seed wrote there.

:class:`~purpose_agent.stores.jsonl.JSONLCheckpointer` reads the seed's layout (one event per
line, a bare state in ``snapshot.json``) as it is, but decodes a state strictly: a seed
snapshot with fields this package does not know, or without a ``status``, is a
``CorruptRecord`` there. For reading old folders (``purpose-agent copy jsonl:./checkpoints
...``, ``purpose-agent runs``) this reader falls back to
:func:`~purpose_agent.legacy.mapping.map_seed_state` for such a snapshot, and counts what it
mapped in :attr:`notes`. Every other read is the JSONL store's; writes go to the JSONL store
itself, never through this view.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from purpose_agent.codec import decode
from purpose_agent.errors import CorruptRecord, InvalidRunId, translated
from purpose_agent.legacy.mapping import map_seed_state
from purpose_agent.legacy.read_only import LegacyReader
from purpose_agent.protocol import Recovery
from purpose_agent.records import check_run_id
from purpose_agent.runtime.events import PAEvent
from purpose_agent.runtime.state import RunState
from purpose_agent.stores.jsonl import JSONLCheckpointer

SEED_SNAPSHOT_FILE = "snapshot.json"
SEED_FILES = ("events.jsonl", SEED_SNAPSHOT_FILE)


class SeedJSONLReader(LegacyReader):
    """The reads of a :class:`JSONLCheckpointer`, accepting the seed's snapshots.

    Args:
        base_dir: The folder of runs.

    """

    def __init__(self, base_dir: str | Path) -> None:
        super().__init__()
        self.base_dir = Path(base_dir)
        # A read-only view: seed-named folders are reported (unread_runs), not renamed.
        self.store = JSONLCheckpointer(self.base_dir, adopt_seed_folders=False)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.base_dir)!r})"

    def _seed_snapshot(self, run_id: str) -> RunState | None:
        path = self.store.run_path(run_id) / SEED_SNAPSHOT_FILE
        try:
            record = decode(path.read_bytes())
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        if (
            not isinstance(record, dict)
            or "log_end" in record
            or ("state" in record and "run_id" not in record)
        ):
            return None  # the store's own snapshot, not the seed's bare state: its error stands
        return map_seed_state(run_id, record, self.notes)

    def unread_runs(self) -> list[tuple[str, str]]:
        """Find run folders the JSONL store does not read, and say how to make it read them.

        The seed named a run's folder after the run id as it was; the store escapes upper-case
        letters, dots and other characters, so a seed folder such as ``Run.1`` is not a run to
        it. Rather than let a copy skip such runs silently, they are listed here.

        Returns:
            ``(folder name, what to do)`` for each folder with a seed log or snapshot that
            :meth:`list_runs` does not return.

        Raises:
            StoreUnavailable: The folder cannot be listed.
        """
        read = {self.store.run_path(run_id).name for run_id in self.store.list_runs()}
        unread: list[tuple[str, str]] = []
        with translated("listing run folders", str(self.base_dir), OSError):
            entries = sorted(self.base_dir.iterdir())
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name in read or not entry.is_dir():
                continue
            if not any((entry / file).is_file() for file in SEED_FILES):
                continue
            try:
                hint = (
                    f"open the folder once with JSONLCheckpointer, which renames it to "
                    f"{self.store.run_path(name).name!r}, or rename it so, to copy it"
                )
            except InvalidRunId:
                hint = "its name is not a valid run id"
            unread.append((name, f"folder {name!r} is not read by the JSONL store; {hint}"))
        return unread

    # -- reads that tolerate seed snapshots -----------------------------------------------

    def load_latest(self, run_id: str) -> RunState | None:
        """Return the latest snapshot, mapping a seed snapshot the store cannot decode."""
        check_run_id(run_id)
        try:
            return self.store.load_latest(run_id)
        except CorruptRecord:
            state = self._seed_snapshot(run_id)
            if state is None:
                raise
            return state

    def recover(self, run_id: str) -> Recovery | None:
        """Return the latest snapshot and the events after it, as :meth:`load_latest` maps it."""
        check_run_id(run_id)
        try:
            return self.store.recover(run_id)
        except CorruptRecord:
            state = self._seed_snapshot(run_id)
            if state is None:
                raise
            return Recovery(state, self.store.list_events(run_id, state.seq))

    # -- the other reads are the JSONL store's -------------------------------------------

    def list_events(
        self, run_id: str, since_seq: int = 0, limit: int | None = None
    ) -> list[PAEvent]:
        """Return events after ``since_seq`` (see :class:`JSONLCheckpointer`)."""
        return self.store.list_events(run_id, since_seq, limit)

    def iter_events(self, run_id: str, since_seq: int = 0) -> Iterator[PAEvent]:
        """Stream events after ``since_seq`` (see :class:`JSONLCheckpointer`)."""
        return self.store.iter_events(run_id, since_seq)

    def list_runs(
        self,
        limit: int | None = None,
        *,
        offset: int = 0,
        group: str | None = None,
        prefix: str | None = None,
    ) -> list[str]:
        """Return run ids, most recently written first (see :class:`JSONLCheckpointer`)."""
        return self.store.list_runs(limit, offset=offset, group=group, prefix=prefix)

    def list_groups(self, limit: int | None = None, *, offset: int = 0) -> list[str]:
        """Return the folder's groups (see :class:`JSONLCheckpointer`).

        The folder is the JSONL store's, groups included: without them, ``purpose-agent runs``
        would list every run as ungrouped and refuse ``--group`` on a store that keeps groups.
        """
        return self.store.list_groups(limit, offset=offset)

    def run_group(self, run_id: str) -> str | None:
        """Return the run's group (see :class:`JSONLCheckpointer`)."""
        return self.store.run_group(run_id)

    def write_refusal(self) -> str:
        """Point at the store that writes this folder."""
        return (
            f"jsonl:{self.base_dir} was opened read-only, to read seed-era data; write to it "
            f"through JSONLCheckpointer({str(self.base_dir)!r})"
        )

    def close(self) -> None:
        """Release the store's handles."""
        self.store.close()
