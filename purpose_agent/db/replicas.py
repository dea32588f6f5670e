"""Reading from Postgres streaming replicas without a writer ever missing its own writes.

A replica replays the primary's WAL some time after each commit, so a read sent there right
after a save could miss it. The store therefore remembers, per run, that it wrote, and turns
that into an LSN the first time the run is read afterwards: the primary's WAL insert position
then is past the commit. A read of that run goes to a replica only once the replica has
replayed past that position, and to the primary until then. Writes cost nothing extra; a read
after a write costs one small query on the primary (once per write) and, while the replica
lags, a replay check on the replica (cached for a few milliseconds).

A replica that fails (down, restarting, a query cancelled by recovery) is set aside for a
second and the read runs on the primary: a replica never turns a read into an error.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from purpose_agent.db.dialects import flavor_for
from purpose_agent.db.engine import make_engine, parse_url, shown_url
from purpose_agent.db.forks import keep_apart
from purpose_agent.db.queries import Queries
from purpose_agent.db.transactions import Transactions
from purpose_agent.errors import InvalidInput

T = TypeVar("T")

# Runs whose writes are remembered one by one; older ones are folded into one shared mark.
MAX_TRACKED_RUNS = 10_000
# How long a replica's replay position is trusted before it is asked again.
REPLAY_CACHE_SECONDS = 0.005
# How long a replica that failed is left alone.
RETRY_AFTER_SECONDS = 1.0
# Seconds to wait for a replica's connection (unless its URL says): a read that cannot reach
# one goes to the primary, so waiting the system's TCP timeout for a lost host helps no one.
CONNECT_TIMEOUT_SECONDS = 5

# The keys of the shared marks: a write anywhere (for list_runs) and forgotten runs.
_ANY = "\x00any"
_FORGOTTEN = "\x00forgotten"

Fetch = Callable[[Transactions, Queries], T]


def parse_lsn(value: str | None) -> int | None:
    """A Postgres LSN (``16/B374D848``) as an integer, ``None`` for ``None``."""
    if value is None:
        return None
    high, _, low = value.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass
class _Mark:
    """What the store wrote under one key: ``lsn`` 0 means nothing unseen, ``None`` unknown."""

    generation: int = 0
    lsn: int | None = 0

    def bump(self) -> None:
        self.generation += 1
        self.lsn = None


@dataclass
class Replica:
    """One read replica: its engine, statements, and what is known of its progress."""

    url: str
    engine: Engine
    units: Transactions
    queries: Queries
    replayed: int | None = None
    checked_at: float = -1.0
    down_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Replicas:
    """The read replicas of one store, and the bookkeeping that keeps its reads its own.

    Args:
        urls: One URL or several; each gets one engine, built like the primary's.
        primary: The primary's engine, asked for its WAL position after this store wrote.
        sizing: The pool sizes the store was given, for each replica's engine too.

    Raises:
        InvalidInput: No URL, a malformed one, or a backend other than Postgres.

    """

    def __init__(
        self,
        urls: str | URL | Sequence[str | URL],
        *,
        primary: Engine,
        sizing: Mapping[str, int] | None = None,
    ) -> None:
        given = [urls] if isinstance(urls, str | URL) else list(urls)
        if not given:
            raise InvalidInput("read_url needs at least one URL")
        if primary.dialect.name != "postgresql":
            raise InvalidInput(
                f"read_url is for Postgres streaming replicas; this store is on "
                f"{primary.dialect.name}"
            )
        self._primary = primary
        parsed: dict[str, URL] = {}
        for raw in given:
            url = parse_url(raw)
            if url.get_backend_name() != "postgresql":
                raise InvalidInput(f"read_url {shown_url(url)} is not a Postgres URL")
            parsed.setdefault(url.render_as_string(hide_password=False), url)
        self.replicas: list[Replica] = []
        try:
            for url in parsed.values():
                options: dict[str, Any] = {**(sizing or {})}
                if "connect_timeout" not in url.query:
                    options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
                engine = make_engine(url, **options)
                keep_apart(engine)
                flavor = flavor_for(engine)
                self.replicas.append(
                    Replica(
                        shown_url(url),
                        engine,
                        Transactions(engine, flavor, owns_engine=True),
                        Queries(engine, flavor),
                    )
                )
        except BaseException:
            self.close()
            raise
        self._lock = threading.Lock()
        self._marks: OrderedDict[str, _Mark] = OrderedDict()
        self._shared = {_ANY: _Mark(), _FORGOTTEN: _Mark()}
        self._next = 0

    # -- writes ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self, run_ids: Iterable[str] | None) -> Iterator[None]:
        """Remember, when the block ends (with or without error), that these runs changed.

        ``None`` stands for runs not known in advance (a delete by filter): every run.
        """
        try:
            yield
        finally:
            self._wrote(run_ids)

    def _wrote(self, run_ids: Iterable[str] | None) -> None:
        with self._lock:
            self._shared[_ANY].bump()
            if run_ids is None:
                self._shared[_FORGOTTEN].bump()
                for every in self._marks.values():
                    every.bump()
                return
            for run_id in run_ids:
                mark = self._marks.get(run_id)
                if mark is None:
                    mark = self._marks[run_id] = _Mark()
                else:
                    self._marks.move_to_end(run_id)
                mark.bump()
            while len(self._marks) > MAX_TRACKED_RUNS:
                _, oldest = self._marks.popitem(last=False)
                forgotten = self._shared[_FORGOTTEN]
                if oldest.lsn is None or forgotten.lsn is None:
                    # An unknown shared position may be being asked for right now, by a
                    # read that started before this run's write: bumped, it is asked again.
                    forgotten.bump()
                else:
                    forgotten.lsn = max(forgotten.lsn, oldest.lsn)

    # -- reads ----------------------------------------------------------------------------

    def read(self, run_id: str | None, fetch: Fetch[T]) -> tuple[bool, T | None]:
        """Run ``fetch`` on a replica that has everything this store wrote to the run.

        Args:
            run_id: The run read, or ``None`` for a read across runs.
            fetch: The read, given a replica's units and statements.

        Returns:
            ``(True, result)``, or ``(False, None)`` when the read must go to the primary:
            no replica is up, or none has replayed this store's last write to the run yet.

        """
        key = _ANY if run_id is None else run_id
        need = self._needed(key)
        if need is None:
            return False, None
        for replica in self._candidates():
            if not self._caught_up(replica, need):
                continue
            try:
                return True, fetch(replica.units, replica.queries)
            except (SQLAlchemyError, replica.engine.dialect.loaded_dbapi.Error):
                self._set_aside(replica)
        return False, None

    def _needed(self, key: str) -> int | None:
        """The WAL position a replica must have replayed; ``None``: ask the primary."""
        with self._lock:
            mark = self._marks.get(key) or self._shared.get(key) or self._shared[_FORGOTTEN]
            if mark.lsn is not None:
                return mark.lsn
            generation = mark.generation
        try:
            with self._primary.connect() as conn:
                raw = conn.execute(text("SELECT pg_current_wal_insert_lsn()::text")).scalar()
        except (SQLAlchemyError, self._primary.dialect.loaded_dbapi.Error):
            return None  # the primary's own read reports the trouble
        lsn = parse_lsn(raw)
        with self._lock:
            if mark.generation == generation:
                mark.lsn = lsn
        return lsn

    def _candidates(self) -> list[Replica]:
        now = time.monotonic()
        with self._lock:
            start = self._next
            self._next = (start + 1) % len(self.replicas)
        ordered = self.replicas[start:] + self.replicas[:start]
        return [replica for replica in ordered if replica.down_until <= now]

    def _caught_up(self, replica: Replica, need: int) -> bool:
        if need == 0:
            return True
        if replica.replayed is not None and replica.replayed >= need:
            return True
        now = time.monotonic()
        with replica.lock:
            if now - replica.checked_at >= REPLAY_CACHE_SECONDS:
                try:
                    with replica.units.single() as conn:
                        raw = conn.execute(text("SELECT pg_last_wal_replay_lsn()::text")).scalar()
                except (SQLAlchemyError, replica.engine.dialect.loaded_dbapi.Error):
                    self._set_aside(replica)
                    return False
                # NULL: not a standby, so no replay position to trust.
                replica.replayed = parse_lsn(raw)
                replica.checked_at = time.monotonic()
        return replica.replayed is not None and replica.replayed >= need

    def _set_aside(self, replica: Replica) -> None:
        replica.down_until = time.monotonic() + RETRY_AFTER_SECONDS
        replica.replayed = None
        replica.checked_at = -1.0
        with contextlib.suppress(Exception):
            replica.engine.pool.dispose()

    def close(self) -> None:
        """Release every replica's connections."""
        for replica in self.replicas:
            replica.engine.dispose()

    def describe(self) -> list[str]:
        """The replicas' URLs, passwords hidden."""
        return [replica.url for replica in self.replicas]


def run_ids_of(rows: Iterable[Any], snap: Any) -> set[str]:
    """The runs a batch of rows and a snapshot row touch."""
    ids = {row.run_id for row in rows}
    if snap is not None:
        ids.add(snap.run_id)
    return ids
