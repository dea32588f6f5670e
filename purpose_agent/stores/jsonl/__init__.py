"""The JSONL store: plain files that survive crashes, readable with any text tool.

Layout::

    base_dir/
        .locks/<run dir>.lock   one lock file per run, outside the run's directory, so that
                                deleting a run never deletes a lock somebody holds
        .locks/.wide.lock       held by a batch across more runs than may be locked at once
        .journal/<stamp>-<id>.entry
                                a batch that spans several runs, until every run has it
        .journal/.wide.claim    the runs of such a wide batch, while it is at work
        <run dir>/
            events.jsonl        the run's log, one line per write; after a compaction, its
                                first line is a header with the covering snapshot
            snapshot.json       the latest snapshot saved on its own
            meta.json           the run's group, if it has one
            run_id              the real run id, only in directories with a hashed name

Damage is reported, never repaired away. The one thing the store repairs is a torn append: a
last line without its newline that is the start of a line the store writes, left by a crash in
the middle of a write that was never acknowledged; readers leave it out and the next writer
cuts it off. Anything else raises ``CorruptRecord`` naming the run and, where the bytes still
show it, the seq, and no write goes over it: a line that cannot be decoded, a last line that no
write starts with (a zero-filled tail, a complete line whose newline was changed), a log whose
complete lines end before the ``log_end`` that ``snapshot.json`` recorded (or that is missing,
or lost the compaction header ``snapshot.json`` names), a ``snapshot.json`` that cannot be
decoded, and a ``meta.json`` that names no valid group. Other runs in the folder are not
affected.

A folder this process may read but not write (another user's, a read-only mount) is served
for reading: reads that take a run's lock read without it where the lock file cannot be opened,
consistently still (see :mod:`.locks`), and writes fail with ``StoreUnavailable``.

A held lock is an open file, and a process may open only so many (``RLIMIT_NOFILE``), so no
operation holds more than :data:`~.locks.LOCKS_AT_ONCE` run locks at once. A batch across more
runs takes the wide lock, claims its runs (a writer that meets the claim under a run's lock
lets go and waits for the wide lock), then checks and writes them a group at a time: all or
nothing and rolled forward after a crash, as a batch across a few runs (see :mod:`.journal`).

Appends take their seqs under the run's lock, from the index of its log (which also maps event
keys to seqs) and the snapshot's seq. A compaction rewrites the log without the events its
snapshot covers and renames it into place, so a crash leaves the old log or the new one.

Each concern has its module: :mod:`.naming` (run ids to directory names), :mod:`.lines` (the
log's line format), :mod:`.torn` (what a crash mid-append leaves), :mod:`.files` (durable
writes), :mod:`.index` (what a handle knows about a log), :mod:`.long_lines` (lines too long to
decode whole, read a record at a time), :mod:`.snapshots`
(``snapshot.json``), :mod:`.meta` (``meta.json``), :mod:`.compaction` (the rewritten log),
:mod:`.locks` (one lock per run), :mod:`.journal` (batches across runs), :mod:`.faults` (where
crash tests stop a writer) and :mod:`.store` (the checkpointer that ties them together).
"""

from .faults import FaultPoint, Faults, no_faults
from .naming import EVENTS_FILE, RUN_ID_FILE, SNAPSHOT_FILE
from .store import JSONLCheckpointer

__all__ = [
    "EVENTS_FILE",
    "RUN_ID_FILE",
    "SNAPSHOT_FILE",
    "FaultPoint",
    "Faults",
    "JSONLCheckpointer",
    "no_faults",
]
