"""A server that stops answering without closing its connections.

A failover that moves an address, a host that loses power, a load balancer or NAT that forgets
a connection, a partition: the client's packets go unanswered and nothing tells the driver.
Here a firewall rule drops every packet sent to the private server's port, so the store's
pooled connections and its new ones meet silence. Each call must end with
``StoreUnavailable`` instead of waiting out the kernel's retransmissions (about 15 minutes for
a sent statement, 2 for a connect): without the store's limits, every call below still hung
when its thread was given up on. Once the server answers again, the same stores work, and a
keyed step retried after its failure is stored once.

This needs ``iptables`` and the right to change the firewall (root, or ``CAP_NET_ADMIN``).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import URL

from purpose_agent import (
    AsyncSQLCheckpointer,
    EventKind,
    NewEvent,
    SQLCheckpointer,
    StoreUnavailable,
)
from tests.servers import LocalServer, skipped

pytestmark = pytest.mark.reliability

# Far above the store's bound (a 30 s unacknowledged send, then two 10 s connects), far
# below the kernel's: a call still alive after this hung.
HUNG_AFTER_SECONDS = 150


def _iptables() -> str:
    if "network" in skipped():
        pytest.skip("PURPOSE_AGENT_TEST_SKIP names network")
    found = shutil.which("iptables")
    if found is None:
        pytest.fail(
            "iptables is not installed: apt-get install -y iptables "
            "(or PURPOSE_AGENT_TEST_SKIP=network)",
            pytrace=False,
        )
    listed = subprocess.run([found, "-S", "INPUT"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.fail(
            f"iptables cannot be used here ({listed.stderr.strip()}): run as root "
            "(or PURPOSE_AGENT_TEST_SKIP=network)",
            pytrace=False,
        )
    return found


@contextlib.contextmanager
def silenced(port: int) -> Iterator[None]:
    """Drop every packet sent to ``port`` on this machine until the block ends."""
    iptables = _iptables()
    rule = ["INPUT", "-p", "tcp", "--dport", str(port), "-j", "DROP"]
    subprocess.run([iptables, "-I", *rule], check=True)
    try:
        yield
    finally:
        subprocess.run([iptables, "-D", *rule], check=True)


def step(key: str) -> list[NewEvent]:
    return [NewEvent(kind=EventKind.CUSTOM, key=key, data={"key": key})]


def _in_threads(calls: dict[str, Callable[[], object]]) -> dict[str, BaseException | None]:
    """Run the calls at once; what each raised (``None``: it returned). Fails if one hung."""
    outcomes: dict[str, BaseException | None] = {}

    def run(name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except BaseException as exc:
            outcomes[name] = exc
        else:
            outcomes[name] = None

    threads = [
        threading.Thread(target=run, args=item, daemon=True, name=item[0]) for item in calls.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HUNG_AFTER_SECONDS)
    hung = [thread.name for thread in threads if thread.is_alive()]
    assert hung == [], f"hung: {hung}; ended: {outcomes}"
    return outcomes


class _LoopThread:
    """An event loop in a thread of its own, so that a sync thread can wait on its calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coroutine: object) -> object:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


def _list_runs(url: URL) -> object:
    with SQLCheckpointer(url) as store:
        return store.list_runs()


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_calls_to_a_server_gone_silent_fail_and_the_stores_work_once_it_answers(
    backend: str, request: pytest.FixtureRequest
) -> None:
    server: LocalServer = request.getfixturevalue(f"private_{backend}")
    url: URL = request.getfixturevalue(f"{backend}_db")
    _iptables()
    loop = _LoopThread()
    store = SQLCheckpointer(url)
    astore = loop.call(AsyncSQLCheckpointer.open(url))
    assert isinstance(astore, AsyncSQLCheckpointer)
    try:
        store.append("sync", step("1"))
        loop.call(astore.append("async", step("1")))
        unkeyed = NewEvent(kind=EventKind.CUSTOM)
        with silenced(server.port):
            outcomes = _in_threads(
                {
                    "keyed append": lambda: store.append("sync", step("2")),
                    "unkeyed append": lambda: store.append("sync", [unkeyed]),
                    "read": lambda: store.list_events("sync"),
                    "async keyed append": lambda: loop.call(astore.append("async", step("2"))),
                    "async read": lambda: loop.call(astore.list_events("async")),
                    "new store": lambda: _list_runs(url),
                }
            )
        wrong = {
            name: repr(error)
            for name, error in outcomes.items()
            if not isinstance(error, StoreUnavailable)
        }
        assert wrong == {}

        # The same stores, never reopened, once the server answers again.
        store.append("sync", step("2"))
        loop.call(astore.append("async", step("2")))
        keys = [event.data.get("key") for event in store.list_events("sync")]
        assert keys in (["1", "2"], ["1", None, "2"], ["1", "2", None])
        async_events = loop.call(astore.list_events("async"))
        assert [event.data["key"] for event in async_events] == ["1", "2"]  # type: ignore[attr-defined]
    finally:
        store.close()
        loop.call(astore.close())
        loop.close()
