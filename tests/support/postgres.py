"""A real PostgreSQL server for the tests, started by the suite itself.

Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, installed by `make test` when
missing) run a throw-away cluster on a temporary data folder and a random loopback port, with
fsync off: nothing here needs to survive a crash of the machine. initdb and postgres refuse to
run as root, so when the suite runs as root they run as an unprivileged user (Debian's
`postgres`, or `agentrouter-pg`, created when neither exists) that owns the data folder. The
system's own cluster, if any, is neither used nor started.

Authentication: the superuser `postgres` is trusted on 127.0.0.1; any other role must give its
password (scram-sha-256), so a test can prove that a password or a password file is honoured.

Fault tests use `stop`, `start`, `restart`, `terminate` and `execute` (SQL as superuser).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from tests.support.ports import free_port

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
RUN_AS = ("postgres", "agentrouter-pg")
"""The users the server may run as when the suite runs as root, in order of preference."""
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",  # TCP on loopback only: no socket file to own or clean
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_connections": "off",
}
HBA = f"host all {SUPERUSER} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"


class PostgresUnavailableError(RuntimeError):
    """The server binaries are missing, or the server cannot be started."""


def server_binaries() -> Path:
    """The newest `bin` folder that holds initdb and postgres."""
    found = sorted(
        (
            path.parent
            for path in PG_ROOT.glob("*/bin/initdb")
            if (path.parent / "postgres").is_file()
        ),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    if not found:
        raise PostgresUnavailableError(
            f"no PostgreSQL server binaries under {PG_ROOT}: run `make test` (it installs "
            "Debian's postgresql package), or `apt-get install postgresql`"
        )
    return found[-1]


def _run_as_user() -> pwd.struct_passwd | None:
    """The unprivileged user to run the server as, created if need be; None when not root."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    name = RUN_AS[-1]
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", name],
        capture_output=True, check=False,
    )  # fmt: skip
    return pwd.getpwnam(name)  # made now, or by a suite that raced us


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder; `create()` makes and starts one."""

    def __init__(self, root: Path, bin_dir: Path, user: pwd.struct_passwd | None) -> None:
        self.root = root
        self.bin_dir = bin_dir
        self.user = user
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = 0

    @classmethod
    def create(cls) -> PostgresServer:
        """initdb a new cluster and start it on a free loopback port."""
        bin_dir = server_binaries()
        user = _run_as_user()
        root = Path(tempfile.mkdtemp(prefix="agentrouter-pg-"))
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        server = cls(root, bin_dir, user)
        try:
            server._initdb()
            server.start()
        except BaseException:
            server.destroy()
            raise
        return server

    # -- running the binaries ----------------------------------------------------------------

    def bin(self, tool: str) -> Path:
        """A tool of the same version as the server (pg_dump, psql, …)."""
        return self.bin_dir / tool

    def _run(self, argv: Sequence[str], *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin(argv[0])), *argv[1:]]
        if self.user is not None:
            command = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                       "--clear-groups", "--", *command]  # fmt: skip
        return subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )

    def _initdb(self) -> None:
        result = self._run(
            ["initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "--no-sync",
             "--no-locale", "-E", "UTF8"]
        )  # fmt: skip
        if result.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {result.stderr.strip()}")
        (self.data / "pg_hba.conf").write_text(HBA)

    def _configure(self) -> None:
        lines = [f"{name} = {value}" for name, value in SETTINGS.items()]
        lines.append(f"port = {self.port}")
        path = self.data / "postgresql.auto.conf"
        path.write_text("\n".join(lines) + "\n")
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, *, attempts: int = 3) -> None:
        """Start the server and wait until it accepts connections. The first start picks a free
        port; later starts (after `stop`) keep it, so DSNs handed out stay valid."""
        failure = ""
        for _ in range(attempts if not self.port else 1):
            if not self.port or failure:
                self.port = free_port()
            self._configure()
            result = self._run(
                ["pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log)],
                timeout=90,
            )
            if result.returncode == 0:
                return
            failure = f"{result.stderr.strip()} {self._log_tail()}"
        raise PostgresUnavailableError(f"postgres did not start: {failure}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: `fast` (sessions disconnected, clean shutdown) or `immediate` (as
        if it crashed)."""
        result = self._run(["pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data)])
        if result.returncode != 0 and self.running:
            raise PostgresUnavailableError(f"pg_ctl stop failed: {result.stderr.strip()}")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port."""
        self.stop(mode)
        self.start()

    @property
    def running(self) -> bool:
        """Whether the server is up (`pg_ctl status`)."""
        return self._run(["pg_ctl", "status", "-D", str(self.data)]).returncode == 0

    def destroy(self) -> None:
        """Stop the server at once and remove its folder."""
        if (self.data / "postmaster.pid").exists():
            self._run(["pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data)])
        shutil.rmtree(self.root, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return " | ".join(self.log.read_text().strip().splitlines()[-5:])
        except OSError:
            return ""

    # -- databases and SQL ---------------------------------------------------------------------

    def dsn(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """A libpq URL of `dbname` on this server."""
        secret = f":{quote(password, safe='')}" if password is not None else ""
        return f"postgresql://{quote(user, safe='')}{secret}@127.0.0.1:{self.port}/{dbname}"

    def execute(
        self, sql: str, params: Sequence[Any] = (), *, dbname: str = "postgres"
    ) -> list[tuple[Any, ...]]:
        """Run one statement as superuser in `dbname` (autocommit); return its rows, if any."""
        with psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}")
        self.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop `name`, ending the sessions still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate(self, dbname: str) -> int:
        """`pg_terminate_backend` every other session connected to `dbname`; how many."""
        rows = self.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        )
        return int(rows[0][0])
