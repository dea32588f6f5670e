"""Finding database servers for the tests, and giving each run its own throwaway database.

Where a server comes from (the first that applies):

1. ``PURPOSE_AGENT_TEST_<NAME>_URL``: the admin URL of a server someone else runs (CI does).
2. A testcontainers container, where Docker answers.
3. A private server started from the binaries installed on this machine, in a temporary
   directory, on a free loopback port, for this test session only, and stopped when the
   session ends: PostgreSQL from the directory ``pg_config --bindir`` names, MariaDB from
   ``mariadbd`` and ``mariadb-install-db``. As root, PostgreSQL runs as the ``postgres`` user
   (it refuses to run as root).

Which backends a run requires (a required backend whose server cannot be reached fails the
run instead of skipping its tests, see ``tests/conftest.py``):

- ``PURPOSE_AGENT_TEST_REQUIRE=postgres,mariadb`` names them exactly (an empty value: none).
- Unset, with ``CI`` set: every backend.
- Unset otherwise: every backend this machine can serve, i.e. its URL is set, Docker answers,
  or its server binaries are installed.

``PURPOSE_AGENT_TEST_SKIP=mariadb`` (comma-separated) opts out of a backend: its tests skip
without looking for a server, and the run may end green without it. It wins over REQUIRE.
``pgbouncer`` is accepted too, for the reliability tests that need PgBouncer.

The reliability suite (``tests/reliability``) uses :class:`LocalPostgres`, :class:`LocalMariaDB`
and :class:`LocalPgBouncer` directly, because it stops, restarts and kills its servers: those
must never be the shared ones that a URL names.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

SERVERS = ("postgres", "mariadb")
START_TIMEOUT = 60.0


def _names(raw: str) -> set[str]:
    return {name.strip() for name in raw.split(",") if name.strip()}


def skipped() -> set[str]:
    """The backends ``PURPOSE_AGENT_TEST_SKIP`` opts out of."""
    return _names(os.environ.get("PURPOSE_AGENT_TEST_SKIP", ""))


def required() -> set[str]:
    """The backends whose tests must run: a skip of one of them is a failure."""
    raw = os.environ.get("PURPOSE_AGENT_TEST_REQUIRE")
    if raw is not None:
        names = _names(raw)
    elif os.environ.get("CI"):
        names = set(SERVERS)
    else:
        names = {name for name in SERVERS if _servable(name)}
    return names - skipped()


def _servable(name: str) -> bool:
    if os.environ.get(f"PURPOSE_AGENT_TEST_{name.upper()}_URL"):
        return True
    return LOCAL[name].installed() or _docker_answers()


@functools.cache
def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception:
        return False
    return True


@contextlib.contextmanager
def server_url(name: str) -> Iterator[URL]:
    """Yield an admin URL for the named server, or skip (fail when required)."""
    if name in skipped():
        pytest.skip(f"PURPOSE_AGENT_TEST_SKIP names {name}")
    env = os.environ.get(f"PURPOSE_AGENT_TEST_{name.upper()}_URL")
    if env:
        yield make_url(env)
        return
    if _docker_answers():
        if name == "postgres":
            from testcontainers.postgres import PostgresContainer

            with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
                yield make_url(container.get_connection_url())
            return
        from testcontainers.mysql import MySqlContainer

        with MySqlContainer("mariadb:11", username="root", password="test") as container:
            yield make_url(container.get_connection_url()).set(drivername="mysql+pymysql")
        return
    if LOCAL[name].installed():
        yield session_server(name).url
        return
    reason = (
        f"no {name} server: set PURPOSE_AGENT_TEST_{name.upper()}_URL, make Docker available, "
        f"or install the {name} server binaries (or PURPOSE_AGENT_TEST_SKIP={name})"
    )
    if name in required():
        pytest.fail(f"{reason} (required: {sorted(required())})", pytrace=False)
    pytest.skip(reason)


_SESSION: dict[str, LocalServer] = {}


def session_server(name: str) -> LocalServer:
    """The private server of this test session, started on first use, stopped at exit."""
    server = _SESSION.get(name)
    if server is None:
        server = LOCAL[name]()
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        _SESSION[name] = server
        owner = os.getpid()
        # A forked child must not stop the parent's servers when it exits.
        atexit.register(lambda: server.close() if os.getpid() == owner else None)
    return server


@contextlib.contextmanager
def throwaway_database(admin: URL, prefix: str = "pa_test", options: str = "") -> Iterator[URL]:
    """Create a database no other run can see, yield its URL, and drop it afterwards.

    ``options`` follow ``CREATE DATABASE name`` (an encoding, say).
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quoted = engine.dialect.identifier_preparer.quote(name)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted} {options}".strip())
        yield admin.set(database=name)
    finally:
        with engine.connect() as conn:
            force = " WITH (FORCE)" if engine.dialect.name == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
        engine.dispose()


# -- private servers ----------------------------------------------------------------------


@contextlib.contextmanager
def admin_connection(admin: URL) -> Iterator[sa.Connection]:
    """One autocommit connection as ``admin`` (for roles, users and databases), closed after."""
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# Runs beside the test process and cleans up after it however it ends (SIGKILL included): it
# reads its stdin, a pipe only the test process holds, until EOF, then kills whatever server
# pid is still recorded and removes the directory.
_WATCHDOG = """
import os, pathlib, shutil, signal, sys
sys.stdin.read()
for pidfile in sys.argv[2:]:
    try:
        os.kill(int(pathlib.Path(pidfile).read_text().split()[0]), signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class Started:
    """A thing a test starts and must close whatever happens: ``with`` starts it, then closes it."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalServer(Started):
    """A throwaway server of our own, in a temporary directory, on a free loopback port.

    Tests may stop, restart and kill it; :meth:`close` stops it and removes its files.
    """

    name: ClassVar[str]

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"pa-{self.name}-"))
        self.port = free_port()
        self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.root), *map(str, self.pidfiles())],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    @classmethod
    def installed(cls) -> bool:
        """Whether this machine has the binaries to run the server."""
        raise NotImplementedError

    @property
    def url(self) -> URL:
        """An admin URL (superuser, no password) over TCP."""
        raise NotImplementedError

    def pidfiles(self) -> list[Path]:
        """Where the running processes' pids are recorded (for the watchdog)."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        raise NotImplementedError

    def stop(self) -> None:
        """Shut the server down cleanly (clients are disconnected)."""
        raise NotImplementedError

    def restart(self) -> None:
        """Stop and start again on the same port and data."""
        self.stop()
        self.start()

    def pid(self) -> int | None:
        """The main server process, or ``None`` when it is not running."""
        try:
            return int(self.pidfiles()[0].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; :meth:`start` recovers it."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def running(self) -> bool:
        """Whether the server process is alive."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for failure messages."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the server if it runs and remove its directory."""
        try:
            if self.running():
                self.stop()
        finally:
            if self._watchdog is not None:
                assert self._watchdog.stdin is not None
                self._watchdog.stdin.close()
                self._watchdog.wait(30)
                self._watchdog = None
            shutil.rmtree(self.root, ignore_errors=True)

    def _failed(self, what: str) -> RuntimeError:
        return RuntimeError(f"{what} ({self.root}):\n{self.log_tail()}")


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        time.sleep(0.02)


def _unprivileged() -> pwd.struct_passwd | None:
    """The account to run servers as that refuse to run as root; ``None`` when not root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


@functools.cache
def _pg_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    bindir = Path(found.stdout.strip())
    return bindir if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file() else None


class LocalPostgres(LocalServer):
    """PostgreSQL from ``pg_config --bindir``: ``initdb -A trust -U postgres``, ``pg_ctl``.

    ``fsync`` is off: these tests crash processes, never the machine, and the page cache
    survives a process crash, so what a commit wrote is still there after a SIGKILL.
    """

    name = "postgres"

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """``settings`` are given to the server as it starts (``max_connections``: ``"12"``)."""
        super().__init__()
        self._settings = dict(settings or {})
        self.data = self.root / "data"
        self._user = _unprivileged()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "initdb", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync", "-D", self.data
        )

    @classmethod
    def installed(cls) -> bool:
        return _pg_bindir() is not None

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg", "postgres", None, "127.0.0.1", self.port, "postgres"
        )

    def pidfiles(self) -> list[Path]:
        return [self.root / "data" / "postmaster.pid"]

    def _run(self, tool: str, *args: str | Path) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL binaries not found (pg_config --bindir)")
        # Output to a file, not a pipe: the server pg_ctl starts inherits it, and a pipe would
        # stay open for as long as the server runs.
        output = self.root / f"{tool}.out"
        with output.open("w+b") as sink:
            done = subprocess.run(
                [bindir / tool, *map(str, args)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                check=False,
                user=self._user.pw_uid if self._user else None,
                group=self._user.pw_gid if self._user else None,
                cwd=self.root,
                start_new_session=True,  # Ctrl-C in the terminal must not stop the server
            )
            sink.seek(0)
            text = sink.read().decode(errors="replace")
        if done.returncode != 0:
            raise self._failed(f"{tool} failed: {text}")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c max_connections=200 -c shared_buffers=32MB "
            # A deadlock costs its victim deadlock_timeout (1 s by default) before it is found.
            "-c deadlock_timeout=100ms"
        ) + "".join(f" -c {name}={value}" for name, value in self._settings.items())
        timeout = str(int(START_TIMEOUT))
        log = self.root / "postgres.log"
        self._run("pg_ctl", "start", "-w", "-t", timeout, "-D", self.data, "-l", log, "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """Shut down; ``fast`` disconnects clients, ``immediate`` skips the checkpoint."""
        self._run("pg_ctl", "stop", "-w", "-m", mode, "-D", self.data)

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is terminated."""
        log = self.root / "postgres.log"
        self._run("pg_ctl", "restart", "-w", "-m", "fast", "-D", self.data, "-l", log)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.root / "postgres.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""

    def query(self, sql: str) -> object:
        """The first value of one statement run as the superuser (autocommit, no pool)."""
        engine = sa.create_engine(
            self.url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT"
        )
        try:
            with engine.connect() as conn:
                result = conn.execute(sa.text(sql))
                return result.scalar() if result.returns_rows else None
        finally:
            engine.dispose()

    def require_synchronous(self, standby: str) -> None:
        """Make every commit wait until the standby named ``standby`` has flushed it.

        ``synchronous_standby_names`` is set with ``ALTER SYSTEM`` after the standby was
        cloned, so that the standby does not inherit it (once promoted, it would wait for a
        standby of its own that does not exist), and takes effect on reload.
        """
        self.query(f"ALTER SYSTEM SET synchronous_standby_names = '{standby}'")
        self.query("SELECT pg_reload_conf()")

    def wait_synchronous(
        self, standby: str, state: str = "sync", timeout: float = START_TIMEOUT
    ) -> None:
        """Wait until ``pg_stat_replication`` shows ``standby`` streaming in ``state``.

        A reload reaches the walsenders a moment after ``pg_reload_conf()`` returns: until
        then a standby taken out of ``synchronous_standby_names`` still confirms commits.
        """
        deadline = time.monotonic() + timeout
        check = (
            "SELECT sync_state FROM pg_stat_replication "
            f"WHERE application_name = '{standby}' AND state = 'streaming'"
        )
        while self.query(check) != state:
            if time.monotonic() > deadline:
                raise self._failed(f"{standby} did not become {state}")
            time.sleep(0.05)


def _binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")


class LocalPostgresStandby(LocalPostgres):
    """A hot standby of a :class:`LocalPostgres`, cloned with ``pg_basebackup -R``.

    It streams the primary's WAL over a replication connection (the primary's ``initdb -A
    trust`` lets loopback replication in, and ``wal_level=replica`` is the default) and serves
    reads. :meth:`delay` makes it apply each commit that much later, to test lagging reads.
    """

    def __init__(self, primary: LocalPostgres, application_name: str | None = None) -> None:
        LocalServer.__init__(self)
        self._settings = {}  # a standby starts with the primary's settings, copied with its data
        self.data = self.root / "data"
        self._user = _unprivileged()
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        self._run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            self.data,
            "-R",
            "-X",
            "stream",
            "--no-sync",
        )
        self.application_name = application_name
        if application_name is not None:
            self._name_in_conninfo(application_name)

    def _name_in_conninfo(self, name: str) -> None:
        """Add ``application_name`` to the ``primary_conninfo`` that ``-R`` wrote.

        The primary's ``synchronous_standby_names`` matches standbys by that name; without
        it the walreceiver connects as ``walreceiver``.
        """
        conf = self.data / "postgresql.auto.conf"
        lines = conf.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.startswith("primary_conninfo = '") and line.endswith("'"):
                lines[index] = f"{line[:-1]} application_name={name}'"
                break
        else:
            raise self._failed(f"no primary_conninfo in {conf}")
        conf.write_text("\n".join(lines) + "\n")

    def promote(self) -> None:
        """``pg_ctl promote -w``: end recovery and accept writes, as a failover does.

        ``pg_ctl`` returns once the control file says the server is in production, which is
        written just before sessions stop seeing recovery; this returns once a new session
        sees ``pg_is_in_recovery()`` false, so that a client told "promoted" can write.
        """
        self._run("pg_ctl", "promote", "-w", "-t", str(int(START_TIMEOUT)), "-D", self.data)
        deadline = time.monotonic() + START_TIMEOUT
        while self.query("SELECT pg_is_in_recovery()") is not False:
            if time.monotonic() > deadline:
                raise self._failed("the promoted standby is still in recovery")
            time.sleep(0.01)

    def delay(self, seconds: float) -> None:
        """Set ``recovery_min_apply_delay`` and reload (0 for none)."""
        conf = self.data / "postgresql.auto.conf"
        kept = [
            line
            for line in conf.read_text().splitlines()
            if not line.startswith("recovery_min_apply_delay")
        ]
        kept.append(f"recovery_min_apply_delay = '{int(seconds * 1000)}ms'")
        conf.write_text("\n".join(kept) + "\n")
        self._run("pg_ctl", "reload", "-D", self.data)


class LocalMariaDB(LocalServer):
    """MariaDB from ``mariadbd``, its data made by ``mariadb-install-db``.

    ``innodb_flush_log_at_trx_commit=2`` writes the log at each commit and flushes it once a
    second: a commit survives a crash of the server process, not of the machine, which is
    all these tests do.
    """

    name = "mariadb"

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        """``settings`` are given to the server as it starts (``max-connections``: ``"10"``)."""
        super().__init__()
        self._settings = dict(settings or {})
        self.data = self.root / "data"
        self.socket = self.root / "mariadb.sock"
        self.tmp = self.root / "tmp"
        self.tmp.mkdir()
        self._process: subprocess.Popen[bytes] | None = None
        install = _binary("mariadb-install-db") or _binary("mysql_install_db")
        if install is None:
            raise RuntimeError("mariadb-install-db not found")
        done = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--user=root" if os.geteuid() == 0 else f"--user={pwd.getpwuid(os.geteuid())[0]}",
                "--skip-test-db",
                "--skip-name-resolve",
                f"--tmpdir={self.tmp}",
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
        )
        if done.returncode != 0:
            raise self._failed(f"mariadb-install-db failed: {done.stdout}{done.stderr}")

    @classmethod
    def installed(cls) -> bool:
        return (
            _binary("mariadbd") is not None
            and (_binary("mariadb-install-db") or _binary("mysql_install_db")) is not None
        )

    @property
    def url(self) -> URL:
        return URL.create("mariadb+pymysql", "root", None, "127.0.0.1", self.port, "mysql")

    def pidfiles(self) -> list[Path]:
        return [self.root / "mariadb.pid"]

    def start(self) -> None:
        server = _binary("mariadbd")
        assert server is not None
        self._process = subprocess.Popen(
            [
                server,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                f"--pid-file={self.pidfiles()[0]}",
                f"--log-error={self.root / 'mariadb.log'}",
                # A server deletes every ``#sql*`` file in its tmpdir as it starts: in the
                # shared /tmp those are the temporary tables other servers are using.
                f"--tmpdir={self.tmp}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
                "--max-connections=200",
                *(f"--{name}={value}" for name, value in self._settings.items()),
                *(["--user=root"] if os.geteuid() == 0 else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._failed(f"mariadbd exited with {self._process.returncode}")
            if self.pid() is not None and _listening(self.port) and self._answers():
                return
            time.sleep(0.1)
        raise self._failed("mariadbd did not come up")

    def _answers(self) -> bool:
        import pymysql

        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", connect_timeout=2
            ).close()
        except pymysql.MySQLError:
            return False
        return True

    def stop(self) -> None:
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, START_TIMEOUT)
        self._reap()

    def kill(self) -> None:
        super().kill()
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(START_TIMEOUT)
            self._process = None
        # A killed server leaves its pid file behind; the next start writes a new one.
        self.pidfiles()[0].unlink(missing_ok=True)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.root / "mariadb.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""


LOCAL: dict[str, type[LocalServer]] = {"postgres": LocalPostgres, "mariadb": LocalMariaDB}


class LocalPgBouncer(LocalServer):
    """Debian's ``pgbouncer`` in front of a :class:`LocalPostgres`, in transaction pooling mode.

    Its configuration is PgBouncer's defaults apart from the pool mode, the addresses and
    trust authentication: what a user of a hosted PgBouncer gets, so that the store is tested
    against the proxy as people deploy it, not one configured to suit the store.
    """

    name = "pgbouncer"

    def __init__(
        self,
        backend: LocalPostgres,
        pool_mode: str = "transaction",
        settings: dict[str, str] | None = None,
    ) -> None:
        """Configure PgBouncer in front of ``backend``.

        Args:
            backend: The server it pools connections to.
            pool_mode: ``transaction``, ``session`` or ``statement``.
            settings: More ``[pgbouncer]`` settings, for a test that needs a deployment's
                choice (a failover test shortens ``server_login_retry``).

        """
        super().__init__()
        self._settings = dict(settings or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._user = _unprivileged()  # pgbouncer refuses to run as root
        (self.root / "users.txt").write_text('"postgres" ""\n')
        self._pool_mode = pool_mode
        self._write_config(backend)
        if self._user is not None:
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _write_config(self, backend: LocalPostgres) -> None:
        pool_mode = self._pool_mode
        (self.root / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={backend.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            f"pool_mode = {pool_mode}\n"
            "max_client_conn = 500\n"
            "default_pool_size = 20\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            f"pidfile = {self.pidfiles()[0]}\n"
            + "".join(f"{name} = {value}\n" for name, value in self._settings.items())
        )

    def repoint(self, backend: LocalPostgres) -> None:
        """Send new server connections to ``backend``, as failover tooling does after a promotion.

        The configuration is rewritten and reloaded (SIGHUP): PgBouncer closes its server
        connections to the old address and opens new ones to the new one; clients stay
        connected to PgBouncer.
        """
        self._write_config(backend)
        if self._process is not None:
            self._process.send_signal(signal.SIGHUP)

    @classmethod
    def installed(cls) -> bool:
        return _binary("pgbouncer") is not None

    @property
    def url(self) -> URL:
        return URL.create(
            "postgresql+psycopg", "postgres", None, "127.0.0.1", self.port, "postgres"
        )

    def pidfiles(self) -> list[Path]:
        return [self.root / "pgbouncer.pid"]

    def start(self) -> None:
        binary = _binary("pgbouncer")
        if binary is None:
            raise RuntimeError("pgbouncer not found: apt-get install -y pgbouncer")
        self._process = subprocess.Popen(
            [binary, str(self.root / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise self._failed(f"pgbouncer exited with {self._process.returncode}")
            if _listening(self.port):
                return
            time.sleep(0.05)
        raise self._failed("pgbouncer did not come up")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(START_TIMEOUT)
            self._process = None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(
                (self.root / "pgbouncer.log").read_text(errors="replace").splitlines()[-lines:]
            )
        return ""


class SynchronousPair(Started):
    """A private primary whose commits wait for a hot standby, which a failover promotes.

    The standby is cloned with ``pg_basebackup -R`` and connects as ``application_name``
    ``standby1``; the primary names it in ``synchronous_standby_names``, so a commit returns
    only once the standby has flushed its WAL (``synchronous_commit = on``). Clients reach
    whichever of the two accepts writes through one multi-host URL (:meth:`url`).
    """

    STANDBY = "standby1"

    def __init__(self) -> None:
        self.primary = LocalPostgres()
        self.standby: LocalPostgresStandby | None = None

    def start(self) -> None:
        """Start the primary, clone and start the standby, and make replication synchronous."""
        self.primary.start()
        self.standby = LocalPostgresStandby(self.primary, self.STANDBY)
        self.standby.start()
        self.primary.require_synchronous(self.STANDBY)
        self.primary.wait_synchronous(self.STANDBY)

    def url(self, database: str) -> URL:
        """A URL over both servers that connects to the one accepting writes.

        SQLAlchemy's psycopg form of libpq's ``host=a,b port=p,q``: each ``host`` carries
        its port, and ``target_session_attrs=read-write`` skips a standby.
        """
        assert self.standby is not None
        return URL.create(
            "postgresql+psycopg",
            "postgres",
            database=database,
            query={
                "host": (f"127.0.0.1:{self.primary.port}", f"127.0.0.1:{self.standby.port}"),
                "target_session_attrs": "read-write",
            },
        )

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster, as a crash of its machine would end it."""
        self.primary.kill()

    def promote(self) -> None:
        """Promote the standby: from now on it is the server that accepts writes."""
        assert self.standby is not None
        self.standby.promote()

    def close(self) -> None:
        """Stop both servers and remove their files."""
        try:
            if self.standby is not None:
                self.standby.close()
        finally:
            self.primary.close()
