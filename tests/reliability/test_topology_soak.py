"""The fleet soak on the production topology: nothing acknowledged is lost.

The topology: a primary whose commits wait for a synchronous hot standby; PgBouncer in
transaction pooling mode in front of the primary; the event log in hash partitions by run
(``purpose-agent db partition``); the standby also serving reads (``read_url``). The fleet:
writer processes, each on its own run, SIGKILLed at random moments and replaced by a process
that recovers the run (a replica may serve the recovery) and goes on from there. Half-way, the
primary is SIGKILLed, the standby promoted and PgBouncer repointed at it, as failover tooling
does, while the fleet keeps writing.

At the end every step any process acknowledged is stored whole on the new primary, the
standby served recoveries, the only errors the processes met were ``StoreUnavailable``, and
the log is still partitioned.

``PURPOSE_AGENT_SOAK_SECONDS`` sets the length (default 16 s, which with the servers' start
keeps the test under a minute); ``benchmarks/`` is where a long run's figures go.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa

from purpose_agent import SQLCheckpointer
from purpose_agent.db.partitions import events_layout
from tests.reliability.processes import Writer, resuming_steps
from tests.reliability.workload import JOIN_TIMEOUT, check_steps
from tests.servers import LocalPgBouncer, SynchronousPair, skipped

pytestmark = [pytest.mark.reliability, pytest.mark.postgres]

SECONDS = float(os.environ.get("PURPOSE_AGENT_SOAK_SECONDS", "16"))
WRITERS = 4
SIZE = 4
PARTITIONS = 8
DATABASE = "pa_soak"
PARTITION_COMMAND = (sys.executable, "-m", "purpose_agent", "db", "partition")
# PgBouncer waits server_login_retry (15 s by default) after a failed server login before it
# tries again, even once repointed: a deployment that fails over shortens it.
BOUNCER = {"server_login_retry": "1"}


@dataclass
class Fleet:
    """The writer processes: one live process per run, the lines of every process so far."""

    url: str
    read_url: str
    live: dict[str, Writer] = field(default_factory=dict)
    lines: dict[str, list[str]] = field(default_factory=dict)
    readers: list[threading.Thread] = field(default_factory=list)
    kills: int = 0

    def spawn(self, run_id: str) -> None:
        writer = Writer(resuming_steps, self.url, self.read_url, run_id, SIZE)
        self.live[run_id] = writer
        said = self.lines.setdefault(run_id, [])
        # Read as the process writes, so that a full pipe never blocks it.
        reader = threading.Thread(target=lambda: said.extend(writer.lines()), daemon=True)
        reader.start()
        self.readers.append(reader)

    def kill(self, run_id: str) -> None:
        writer = self.live.pop(run_id)
        assert writer.process.pid is not None
        os.kill(writer.process.pid, signal.SIGKILL)
        writer.process.join(JOIN_TIMEOUT)
        self.kills += 1

    def stop(self) -> None:
        for run_id in list(self.live):
            self.kill(run_id)
        for reader in self.readers:
            reader.join(JOIN_TIMEOUT)

    def stale_recoveries(self) -> int:
        """Recoveries that resumed at or before a step an earlier process had acknowledged.

        The standby confirms a commit once it has flushed it, and applies it a little later
        (``synchronous_commit = on``, not ``remote_apply``): a recovery it serves may miss the
        last steps, which the new process then saves again, identical.
        """
        stale = 0
        for lines in self.lines.values():
            done = 0
            for words in (line.split() for line in lines):
                if words[0] == "ack":
                    done = max(done, int(words[1]))
                elif words[0] == "resume" and int(words[1]) <= done:
                    stale += 1
        return stale

    def said(self, word: str) -> list[tuple[str, list[str]]]:
        return [
            (run_id, line.split())
            for run_id, lines in self.lines.items()
            for line in lines
            if line.startswith(word + " ")
        ]


def test_a_fleet_of_killed_writers_through_pgbouncer_loses_nothing_across_a_failover(
    sync_pair: SynchronousPair,
) -> None:
    if "pgbouncer" in skipped():
        pytest.skip("PURPOSE_AGENT_TEST_SKIP names pgbouncer")
    if not LocalPgBouncer.installed():
        pytest.fail("pgbouncer is not installed: apt-get install -y pgbouncer", pytrace=False)
    assert sync_pair.standby is not None
    sync_pair.primary.query(f"CREATE DATABASE {DATABASE}")
    direct = sync_pair.primary.url.set(database=DATABASE).render_as_string(hide_password=False)
    SQLCheckpointer(direct).close()
    partitioned = subprocess.run(
        [*PARTITION_COMMAND, "--partitions", str(PARTITIONS), "--url", direct],
        capture_output=True,
        text=True,
        check=False,
    )
    assert partitioned.returncode == 0, partitioned.stderr
    replica = sync_pair.standby.url.set(database=DATABASE).render_as_string(hide_password=False)

    with LocalPgBouncer(sync_pair.primary, settings=BOUNCER) as bouncer:
        url = bouncer.url.set(database=DATABASE).render_as_string(hide_password=False)
        fleet = Fleet(url, replica)
        runs = [f"fleet-{index}" for index in range(WRITERS)]
        pick = random.Random(11)  # fixed: the same kills on every run
        for run_id in runs:
            fleet.spawn(run_id)
        started = time.monotonic()
        killed_at: float | None = None
        repointed_at = 0.0
        try:
            while time.monotonic() - started < SECONDS:
                time.sleep(pick.uniform(0.1, 0.4))
                victim = pick.choice(runs)
                fleet.kill(victim)
                fleet.spawn(victim)
                if killed_at is None and time.monotonic() - started > SECONDS / 2:
                    killed_at = time.time()
                    sync_pair.kill_primary()
                    sync_pair.promote()
                    bouncer.repoint(sync_pair.standby)
                    repointed_at = time.time()
        finally:
            fleet.stop()
        assert killed_at is not None

        retries = fleet.said("retry")
        causes = {" ".join(words[2:]).split(":")[0] for _, words in retries}
        assert causes <= {"purpose_agent.errors.StoreUnavailable"}, causes
        others = [
            line
            for lines in fleet.lines.values()
            for line in lines
            if line.split()[0] not in ("resume", "ack", "retry")
        ]
        assert others == [], others
        acks = fleet.said("ack")
        resumes = fleet.said("resume")
        acknowledged = {run_id: {int(w[1]) for r, w in acks if r == run_id} for run_id in runs}
        after = [float(words[2]) for _, words in acks if float(words[2]) > repointed_at]
        assert after, "nothing was acknowledged after the failover"
        served = sum(1 for _, words in resumes if words[2] == "replica")
        assert served > 0, "the standby served no recovery"

        with SQLCheckpointer(url) as store:
            for run_id in runs:
                assert acknowledged[run_id], f"{run_id} acknowledged nothing"
                check_steps(store, run_id, acknowledged[run_id], SIZE)
            with store.reading("reading the layout") as conn:
                layout = events_layout(conn)
                port = conn.execute(sa.text("SELECT inet_server_port()")).scalar()
        assert layout is not None
        assert layout.partitions == PARTITIONS
        assert port == sync_pair.standby.port

    figures = {
        "seconds": SECONDS,
        "writer processes SIGKILLed": fleet.kills,
        "steps acknowledged": sum(len(steps) for steps in acknowledged.values()),
        "recoveries": len(resumes),
        "recoveries served by the standby": served,
        "recoveries behind the last acknowledged step": fleet.stale_recoveries(),
        "calls retried after StoreUnavailable": len(retries),
        "kill to promoted and repointed (s)": round(repointed_at - killed_at, 2),
        "first acknowledgement after that (s)": round(min(after) - repointed_at, 2),
        "acknowledged steps lost": 0,
    }
    print(f"\nfleet soak: {figures}")
