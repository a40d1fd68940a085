"""A private PostgreSQL cluster for tests: Debian's server binaries, a temp dir, loopback.

``initdb`` then ``pg_ctl start`` on a free port of 127.0.0.1 with trust authentication and
no Unix socket; stopped and removed at the end of the session.  Run as root (CI), the
server cannot run as root, so every command runs as the ``postgres`` user through
``runuser`` and the directory belongs to that user.

Without the binaries the PostgreSQL tests are skipped, except on CI (``CI`` set), where
that is an error: CI installs ``postgresql`` (``make system-deps``).
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["PostgresCluster", "find_bindir", "postgres_cluster", "postgres_dsn"]

SERVER_USER = "postgres"
"""The account the server runs as when the tests run as root."""


def find_bindir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: ``$PG_BINDIR``, Debian's newest
    ``/usr/lib/postgresql/N/bin``, or the ``PATH``."""
    explicit = os.environ.get("PG_BINDIR")
    if explicit:
        return Path(explicit) if (Path(explicit) / "initdb").exists() else None
    versions = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        if (candidate / "initdb").exists() and re.fullmatch(r"\d+", candidate.parent.name):
            versions.append((int(candidate.parent.name), candidate))
    if versions:
        return max(versions)[1]
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresCluster:
    """One throw-away cluster: ``start()``, ``dsn(db)``, ``create_database()``, ``stop()``."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.logfile = root / "server.log"
        self.port = 0
        self.as_root = os.geteuid() == 0
        self.user = SERVER_USER if self.as_root else pwd.getpwuid(os.geteuid()).pw_name
        self._names = itertools.count(1)

    # -- commands ----------------------------------------------------------------------
    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                stdin=subprocess.DEVNULL, cwd=self.root)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n"
                               f"{result.stdout}{result.stderr}{self.log_tail()}")
        return result

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- life --------------------------------------------------------------------------
    def init(self) -> None:
        if self.as_root:
            shutil.chown(self.root, user=SERVER_USER, group=SERVER_USER)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")

    def start(self) -> None:
        """Start the server (on the port it had, or a free one the first time)."""
        for attempt in range(5):
            port = self.port or _free_port()
            # Settings go on the command line: a restart keeps them, postgresql.conf stays stock.
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories= "
                       f"-c max_connections=200")
            result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile),
                               "-o", options, "-w", "-t", "90", "start", check=False)
            if result.returncode == 0:
                self.port = port
                return
            if self.port:  # a restart on our own port: no other port will do
                break
        raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}{result.stderr}{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``fast`` (clean), ``immediate`` (as if the server crashed)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "90", "stop")

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def destroy(self) -> None:
        if self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases ---------------------------------------------------------------------
    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its DSN."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return self.dsn(name)


def start_cluster() -> PostgresCluster:
    """A started cluster in a new temp dir (``tempfile``: a path the server user can reach,
    unlike pytest's per-user ``tmp_path`` base)."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
    cluster = PostgresCluster(bindir, root)
    try:
        cluster.init()
        cluster.start()
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries not found on CI: `make system-deps` installs postgresql")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                    "install Debian's postgresql package (make system-deps) to run these tests")
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> str:
    """A fresh database on the session's cluster (restarted if a test left it stopped)."""
    postgres_cluster.ensure_running()
    return postgres_cluster.create_database()
