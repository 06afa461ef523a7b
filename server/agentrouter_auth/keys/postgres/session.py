"""Sessions with the PostgreSQL store's database: the pool, every deadline, and what a driver
error means.

A session is bounded everywhere a database can stall a replica: the wait for a session, TCP
keepalives and a user timeout for a vanished peer, a statement timeout, a lock timeout, an idle
transaction timeout, and a deadline that cuts a session whose backend stopped answering while
its host's TCP still does. A driver error becomes one line (any password scrubbed), a
`KeyStoreUnavailableError` when the database cannot be reached now (it may pass by itself),
else a `KeyStoreError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, LiteralString

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from agentrouter_auth.keys.location import scrub
from agentrouter_auth.keys.store import KeyStoreError, KeyStoreUnavailableError

APPLICATION_NAME = "agentrouter-auth"
"""`application_name` of the store's sessions (unless the URL sets one): find them in
pg_stat_activity."""
DEFAULT_TIMEOUT = 5.0
"""Seconds the store waits for a session (from the pool, or a new one) or for one answer."""
LOCK_TIMEOUT = 10.0
"""Seconds a change waits for the ring's lock before it gives up (and is retried later)."""
MIGRATION_LOCK_TIMEOUT = 30.0
"""Seconds a migration waits for another process's to finish before it gives up."""
IDLE_TRANSACTION_TIMEOUT = 60.0
"""Seconds a changing transaction may sit idle before the server ends it and frees the lock (a
step's slowest part, an RSA key's generation, takes a few seconds at most)."""
STATEMENT_TIMEOUT = 30.0
"""Seconds the server lets one statement run (`statement_timeout`, unless the URL sets it):
longer than any lock wait, far longer than any statement the store makes."""
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
              "keepalives_count": 3, "tcp_user_timeout": 30_000}  # fmt: skip
"""TCP keepalives and the longest unacknowledged send (ms), unless the URL sets them: a
session whose peer vanished (a half-open connection) fails in about half a minute, not hours."""
SET_CONFIG = "SELECT set_config(%s, %s, %s)"

# SQLSTATEs of a server that is there but cannot serve now: shutting down, starting up,
# restarting, too many connections (classes 08 and 57P, and 53300).
_UNAVAILABLE_STATES = ("08", "57P", "53300")
# libpq reports a refusal while connecting as text with no SQLSTATE ("FATAL:  password
# authentication failed …"); these FATAL messages are the ones that pass by themselves.
_PASSING_FATAL = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
    "terminating connection",
)


def unavailable(err: psycopg.Error) -> bool:
    """Whether `err` says the database cannot be reached now (no server answered, the session
    was lost, the server is starting or stopping), as opposed to refusing us (a wrong password,
    no such database, a denied privilege): the first may pass by itself, the second will not."""
    if not isinstance(err, psycopg.OperationalError):
        return False
    state = err.sqlstate
    if state is not None:
        return state.startswith(_UNAVAILABLE_STATES)
    text = str(err)
    if "FATAL:" not in text:
        return True  # refused, timed out, reset, no route: nobody answered
    return any(phrase in text for phrase in _PASSING_FATAL)


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def libpq_parameters(location: str) -> dict[str, Any]:
    """The libpq parameters of a URL; ProgrammingError if libpq cannot parse it."""
    return conninfo_to_dict(location)


def check_url(location: str, description: str) -> None:
    """Raise KeyStoreError (naming `description`) unless libpq can parse `location`."""
    try:
        libpq_parameters(location)
    except psycopg.Error as err:
        # libpq quotes what it cannot parse, which may be the password (a bad %-escape in it).
        reason = f"not a PostgreSQL URL libpq accepts: {scrub(location, first_line(err))}"
        raise KeyStoreError(description, reason) from None


class Sessions:
    """The store's sessions with one database: a small pool, and sessions of one's own."""

    def __init__(self, location: str, description: str, timeout: float) -> None:
        """`location` is the libpq URL (with any password), `description` the same without it;
        `timeout` bounds the wait for a session and for each answer (`deadline`)."""
        self.location = location
        self.description = description
        self.timeout = timeout
        self._pool: ConnectionPool | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        # The pool retries a lost connection with backoff and would log every attempt; the
        # ring reports the store's failures once per state change instead.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    def connection_parameters(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect(store.location, **…)` as the store connects:
        for a session of one's own (a LISTEN connection)."""
        given = libpq_parameters(self.location)
        extra: dict[str, Any] = {"autocommit": True}
        extra.update({name: value for name, value in KEEPALIVES.items() if name not in given})
        options = str(given.get("options") or "")
        if "statement_timeout" not in options:
            timeout = f"-c statement_timeout={round(STATEMENT_TIMEOUT * 1000)}"
            extra["options"] = f"{options} {timeout}".strip()
        if "connect_timeout" not in given:
            extra["connect_timeout"] = max(1, round(self.timeout))
        if "application_name" not in given:
            extra["application_name"] = APPLICATION_NAME
        return extra

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit session outside the pool (the caller closes it);
        KeyStoreUnavailableError if the database cannot be reached."""
        try:
            return psycopg.connect(self.location, **self.connection_parameters())
        except psycopg.Error as err:
            error = KeyStoreUnavailableError if unavailable(err) else KeyStoreError
            raise error(self.description, f"cannot connect: {self.reason(err)}") from err

    def _open_pool(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is not None and self._pool_pid != os.getpid():
                # Inherited across fork: its threads did not come along, and closing its
                # sessions here would close the parent's. Forget it; open our own.
                self._pool = None
            if self._pool is None:
                # One direct session first: a database that cannot be reached (or refuses us)
                # is reported at once with libpq's reason, and no pool retries in the
                # background for a process that may never reach it.
                self.connect().close()
                self._pool = ConnectionPool(
                    self.location,
                    min_size=1,
                    max_size=2,
                    kwargs=self.connection_parameters(),
                    open=False,
                    timeout=self.timeout,
                    check=self._check,
                    name="agentrouter-auth-keys",
                )
                self._pool.open(wait=False)
                self._pool_pid = os.getpid()
            return self._pool

    def close(self) -> None:
        """Close the pooled sessions. They are reopened if used again."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close(timeout=self.timeout)

    @contextlib.contextmanager
    def session(
        self, prepare: Callable[[psycopg.Connection[Any]], None] | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit session, first handed to `prepare` (the schema's check) if given;
        every database error becomes a one-line KeyStoreError."""
        pool = None
        try:
            pool = self._open_pool()
            with pool.connection(timeout=self.timeout) as conn:
                if prepare is not None:
                    prepare(conn)
                yield conn
        except PoolTimeout as err:
            self._discard(pool)
            raise KeyStoreUnavailableError(self.description, self._unreachable()) from err
        except psycopg.Error as err:
            error = KeyStoreUnavailableError if unavailable(err) else KeyStoreError
            raise error(self.description, self.reason(err)) from err

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of a session before handing it out, bounded by `_deadline`."""
        with self.deadline(conn):
            ConnectionPool.check_connection(conn)

    @contextlib.contextmanager
    def deadline(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
        """Cut the session if what runs inside takes over `timeout`: a backend that stopped
        answering while its host's TCP still does (a stopped process, a frozen VM) is noticed
        by neither keepalives nor statement_timeout, and would hold the ring's upkeep for good.
        Raises KeyStoreUnavailableError when it cut."""
        sock = socket.socket(fileno=os.dup(conn.fileno()))  # the same socket, our own fd
        guard = threading.Lock()
        state = {"cut": False, "done": False}

        def expire() -> None:
            with guard:
                if not state["done"]:
                    state["cut"] = True
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        except psycopg.Error as err:
            if state["cut"]:
                reason = f"the database did not answer within {self.timeout:g}s"
                raise KeyStoreUnavailableError(self.description, reason) from err
            raise
        finally:
            timer.cancel()
            with guard:
                state["done"] = True
                sock.close()

    def _discard(self, pool: ConnectionPool | None) -> None:
        """Forget a pool that gave no session in time; the next use opens another.

        The pool retries a lost database with a backoff that doubles up to minutes, so one left
        to itself would answer late after the database returns (and the reason the ring reports
        would change meanwhile). A new pool starts with one direct connection, which fails at
        once while the database is away and succeeds as soon as it is back."""
        with self._pool_lock:
            if pool is None or self._pool is not pool:
                return
            self._pool = None
        pool.close(timeout=1.0)

    def _unreachable(self) -> str:
        """Why no session could be had: a direct attempt tells what the pool does not."""
        try:
            with psycopg.connect(self.location, **self.connection_parameters()):
                pass
        except psycopg.Error as err:
            return f"cannot connect: {self.reason(err)}"
        return f"no database session within {self.timeout:g}s"

    def reason(self, err: BaseException) -> str:
        """The first line of a driver error, any password in it replaced."""
        text = first_line(err)
        password = str(libpq_parameters(self.location).get("password") or "")
        return scrub(self.location, text.replace(password, "***") if password else text)

    def wait_for_lock(
        self,
        conn: psycopg.Connection[Any],
        statement: LiteralString,
        key: int,
        seconds: float,
        *,
        local: bool,
        refusal: str,
    ) -> None:
        """Take an advisory lock with `statement`, waiting at most `seconds` (`local`: the
        limit lasts the transaction; else it is reset after); KeyStoreError `refusal` when the
        wait runs out."""
        conn.execute(SET_CONFIG, ["lock_timeout", f"{round(seconds * 1000)}ms", local])
        try:
            conn.execute(statement, [key])
        except psycopg.errors.LockNotAvailable as err:
            raise KeyStoreError(self.description, refusal) from err
        finally:
            if not local:
                conn.execute("RESET lock_timeout")
