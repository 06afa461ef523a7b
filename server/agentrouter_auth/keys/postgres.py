"""The PostgreSQL key store: one key ring shared by replicas on many machines.

Selected by a libpq URL (`postgresql://user@db.internal/auth?sslmode=verify-full`, `postgres://…`;
every libpq parameter works, `passfile` and `sslmode` included). The schema lives in its own
PostgreSQL schema, `agentrouter_auth`:

    keys               one row per key: kid (primary key), alg, state, origin, times, the public
                       JWK, the private JWK sealed under a key-encryption key (`kek`), or NULL
                       for an imported public key, and the row's integrity MAC under a KEK
    ring               one row: `generation`, bumped once by every transaction that changes a key
                       or the ring state (a trigger does it, so a change made by hand counts
                       too), and `stamp`
    ring_state         one row: the sealed ring state (`RingState`), the commit point: a
                       generation, every key's kid, state and row digest, and the ring's rotation
                       policy, under an HMAC of a KEK
    schema_migrations  the versions applied from `migrations/NNNN_name.sql`

The store keeps the directory store's promises. Only what the rows say is loaded, and every row
is checked as a key file is (kid is the thumbprint, alg matches, the private half belongs to the
public one, no private member in the public JWK, legal states): a damaged row is a KeyStoreError
naming its kid, and the ring keeps serving its last good set. Write access to the database is
not enough to publish a key, revive one or age one: every row carries an HMAC under a KEK over
all of its columns (`row_mac_message`), and a row whose MAC is missing or wrong is refused the
same way. A row MAC binds a row to itself only, so the rows must also agree exactly with the
sealed ring state, which every change rewrites in its own transaction: a row deleted, added or
written back from an earlier state (even the same kid's older row) is refused naming its kid,
and a process never accepts the ring state's generation going backwards (a whole earlier state
written back). A change is one database transaction under a transaction-scoped advisory lock
that re-reads the rows first, so replicas, workers and the CLI never take the same lifecycle
step twice. The commit notifies `CHANNEL` with the new generation; `fingerprint()` reads the
generation, which is what the ring polls.

The database is touched only by `fingerprint()`, `read()`, `transaction()` (from the key ring's
upkeep and the CLI), `migrate()`, `rekey()` and `seal()`; the request path serves the ring's
snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any, LiteralString

import psycopg
from jwcrypto import jwk
from jwcrypto.common import JWException
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from agentrouter_auth.keys.kek import Envelope, EnvelopeError, Kek
from agentrouter_auth.keys.material import InvalidKeyError, validate
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStoreError,
    KeyStoreUnavailableError,
    RecordedPolicy,
    State,
    StoredKey,
    Transaction,
    check_one_active_per_alg,
)
from agentrouter_auth.keys.stores import scrub
from agentrouter_auth.snapshot import PRIVATE_MEMBERS

SCHEMES = ("postgresql", "postgres")
SCHEMA = "agentrouter_auth"
CHANNEL = "agentrouter_auth_keys"
"""NOTIFY channel: every transaction that changes a key notifies it with the new generation."""
APPLICATION_NAME = "agentrouter-auth"
"""`application_name` of the store's sessions (unless the URL sets one): find them in
pg_stat_activity."""
MIGRATION_LOCK = 0x6172_6175_7468_0001
"""Session advisory lock held while migrations are applied."""
RING_LOCK = 0x6172_6175_7468_0002
"""Transaction advisory lock held by every transaction that may change the keys."""
SIGNING_STATES = frozenset({State.PENDING, State.ACTIVE})
"""States whose key signs, or will once promoted: such a row must hold its private half."""
MAC_FORMAT = 1
"""The version of the encoding a row's MAC covers (`row_mac_message`)."""
RING_STATE_FORMAT = 1
"""The version of the sealed ring state's document (`RingState.document`)."""
SEALED_SINCE = 2
"""The migration that adds the ring state: whoever applies it seals the rows it finds."""
DEFAULT_TIMEOUT = 5.0
LOCK_TIMEOUT = 10.0
MIGRATION_LOCK_TIMEOUT = 30.0
"""Seconds a migration waits for another process's to finish before it gives up."""
"""Seconds a change waits for the ring's lock before it gives up (and is retried later)."""
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
_SET_CONFIG = "SELECT set_config(%s, %s, %s)"
_MIGRATION_FILE = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")
# The statements, written out (the schema name included) so that no SQL is built from strings.
_SELECT_KEYS = (
    "SELECT kid, alg, state, origin, created, activated, retired, public_jwk, private_jwk, kek_id, "
    "mac_kek_id, mac FROM agentrouter_auth.keys ORDER BY kid"
)
_INSERT_KEY = (
    "INSERT INTO agentrouter_auth.keys (kid, alg, state, origin, created, activated, retired, "
    "public_jwk, private_jwk, kek_id, mac_kek_id, mac) VALUES (%(kid)s, %(alg)s, %(state)s, "
    "%(origin)s, %(created)s, %(activated)s, %(retired)s, %(public_jwk)s, %(private_jwk)s, "
    "%(kek_id)s, %(mac_kek_id)s, %(mac)s)"
)
_UPDATE_KEY = (
    "UPDATE agentrouter_auth.keys SET alg = %(alg)s, state = %(state)s, origin = %(origin)s, "
    "created = %(created)s, activated = %(activated)s, retired = %(retired)s, "
    "public_jwk = %(public_jwk)s, private_jwk = %(private_jwk)s, kek_id = %(kek_id)s, "
    "mac_kek_id = %(mac_kek_id)s, mac = %(mac)s WHERE kid = %(kid)s"
)
_DELETE_KEYS = "DELETE FROM agentrouter_auth.keys WHERE kid = ANY(%s)"
_SELECT_RING = "SELECT generation, stamp FROM agentrouter_auth.ring"
_SELECT_STATE = "SELECT generation, document, mac_kek_id, mac FROM agentrouter_auth.ring_state"
_WRITE_STATE = (
    "INSERT INTO agentrouter_auth.ring_state (one, generation, document, mac_kek_id, mac) "
    "VALUES (true, %s, %s, %s, %s) ON CONFLICT (one) DO UPDATE SET generation = "
    "EXCLUDED.generation, document = EXCLUDED.document, mac_kek_id = EXCLUDED.mac_kek_id, "
    "mac = EXCLUDED.mac"
)
_HAS_MIGRATIONS = "SELECT to_regclass('agentrouter_auth.schema_migrations') IS NOT NULL"
_SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM agentrouter_auth.schema_migrations"
_INSERT_VERSION = "INSERT INTO agentrouter_auth.schema_migrations (version, name) VALUES (%s, %s)"


@dataclass(frozen=True, slots=True)
class Migration:
    """One versioned step of the schema: `migrations/NNNN_name.sql`."""

    version: int
    name: str
    sql: str


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped in the package, in version order."""
    found = []
    for item in resources.files("agentrouter_auth.keys").joinpath("migrations").iterdir():
        match = _MIGRATION_FILE.fullmatch(item.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], item.read_text()))
    return tuple(sorted(found, key=lambda migration: migration.version))


def latest_version() -> int:
    """The schema version this code knows."""
    return migrations()[-1].version


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


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _libpq_parameters(location: str) -> dict[str, Any]:
    """The libpq parameters of a URL; ProgrammingError if libpq cannot parse it."""
    return conninfo_to_dict(location)


def check_url(location: str, description: str) -> None:
    """Raise KeyStoreError (naming `description`) unless libpq can parse `location`."""
    try:
        _libpq_parameters(location)
    except psycopg.Error as err:
        # libpq quotes what it cannot parse, which may be the password (a bad %-escape in it).
        reason = f"not a PostgreSQL URL libpq accepts: {scrub(location, _first_line(err))}"
        raise KeyStoreError(description, reason) from None


def row_mac_message(columns: Sequence[Any]) -> bytes:
    """What a row's MAC covers, canonically encoded (a JSON array; the public JWK with sorted
    members) of `columns`, the first ten of `_SELECT_KEYS` (kid … kek_id): every column but the
    MAC's own, the sealed private half by its KEK and SHA-256."""
    kid, alg, state, origin, created, activated, retired, public, sealed, kek_id = columns
    sealed_by = None if kek_id is None else bytes(kek_id).hex()
    sealed_hash = None if sealed is None else hashlib.sha256(bytes(sealed)).hexdigest()
    record = ["agentrouter-auth key row", MAC_FORMAT, kid, alg, state, origin, created,
              activated, retired, public, sealed_by, sealed_hash]  # fmt: skip
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def row_digest(columns: Sequence[Any]) -> str:
    """The digest the ring state lists for a row: SHA-256 of its MAC message (every column but
    the MAC; a private half is sealed with a fresh nonce at every write, so a row written back
    from an earlier state differs even when its state and times do not)."""
    return hashlib.sha256(row_mac_message(columns[:10])).hexdigest()


@dataclass(frozen=True, slots=True)
class Listed:
    """A key as the ring state lists it."""

    kid: str
    state: str
    row: str
    """`row_digest` of its row."""


@dataclass(frozen=True, slots=True)
class RingState:
    """The sealed ring state: what the key rows must be, exactly, and the rotation policy."""

    generation: int
    keys: tuple[Listed, ...]
    policy: RecordedPolicy | None

    def document(self) -> str:
        """The canonical JSON the MAC covers (a JSON object, where a row's MAC message is an
        array, so neither can pass for the other)."""
        record = {
            "what": "agentrouter-auth ring state",
            "format": RING_STATE_FORMAT,
            "generation": self.generation,
            "keys": [[key.kid, key.state, key.row] for key in self.keys],
            "policy": None if self.policy is None else self.policy.to_json(),
        }
        return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def parse(cls, document: str) -> RingState:
        """The state a document describes; ValueError if it is not one."""
        record = json.loads(document)
        if not isinstance(record, dict) or record.get("format") != RING_STATE_FORMAT:
            raise ValueError(f"not a format {RING_STATE_FORMAT} ring state")
        generation, keys = record.get("generation"), record.get("keys")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise ValueError("the generation is not a positive integer")
        if not isinstance(keys, list) or not all(
            isinstance(key, list) and len(key) == 3 and all(isinstance(v, str) for v in key)
            for key in keys
        ):
            raise ValueError("keys is not a list of [kid, state, digest]")
        policy = record.get("policy")
        recorded = None if policy is None else RecordedPolicy.from_json(policy)
        return cls(generation, tuple(Listed(*key) for key in keys), recorded)

    def differences(self, other: RingState) -> list[str]:
        """The kids whose listing differs between the two states: first those this state lists
        and `other` does not (what it would bring back), then the others; sorted."""
        mine = {key.kid: key for key in self.keys}
        theirs = {key.kid: key for key in other.keys}
        differ = {kid for kid in mine.keys() | theirs.keys() if mine.get(kid) != theirs.get(kid)}
        return sorted(differ, key=lambda kid: (kid in theirs, kid))


class PostgresStore:
    """Keys in PostgreSQL rows, private halves sealed under the KEKs given."""

    def __init__(
        self,
        location: str,
        keks: Sequence[Kek],
        *,
        description: str,
        timeout: float = DEFAULT_TIMEOUT,
        auto_migrate: bool = True,
        lock_timeout: float = LOCK_TIMEOUT,
        migration_lock_timeout: float = MIGRATION_LOCK_TIMEOUT,
    ) -> None:
        """`location` is the libpq URL (with any password), `description` the same without it.

        `timeout` bounds the wait for a connection (from the pool, or a new one); with
        `auto_migrate` the first use applies any migration the database lacks; `lock_timeout`
        bounds a change's wait for the ring's lock, `migration_lock_timeout` a migration's.
        """
        self.location = location
        self._description = description
        if not keks:
            raise KeyStoreError(
                description,
                "a PostgreSQL key store needs --kek-file: private keys are kept encrypted under "
                "a key-encryption key (make one with `openssl rand -base64 32`)",
            )
        check_url(location, description)
        self.envelope = Envelope(keks)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.migration_lock_timeout = migration_lock_timeout
        self.auto_migrate = auto_migrate
        self._pool: ConnectionPool | None = None
        self._pool_pid = 0
        self._pool_lock = threading.Lock()
        self._schema_ready = False
        self._seen: RingState | None = None
        """The newest ring state this process accepted: it never accepts an older one."""
        self._seen_lock = threading.Lock()
        # The pool retries a lost connection with backoff and would log every attempt; the
        # ring reports the store's failures once per state change instead.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

    @property
    def description(self) -> str:
        """The URL without its password."""
        return self._description

    # -- connections ---------------------------------------------------------------------------

    def connection_parameters(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect(store.location, **…)` as the store connects:
        for a session of one's own (a LISTEN connection)."""
        given = _libpq_parameters(self.location)
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
            raise error(self.description, f"cannot connect: {self._reason(err)}") from err

    def change_feed(self) -> PostgresChangeFeed:
        """LISTEN on `CHANNEL` in a session of its own: the commit of every change notifies."""
        return PostgresChangeFeed(self)

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
        """Close the store's sessions. The store reopens them if used again."""
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.close(timeout=self.timeout)

    @contextlib.contextmanager
    def _session(self, *, prepare: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit session, the schema checked (and migrated) when `prepare`;
        every database error becomes a one-line KeyStoreError."""
        pool = None
        try:
            pool = self._open_pool()
            with pool.connection(timeout=self.timeout) as conn:
                if prepare:
                    self._prepare(conn)
                yield conn
        except PoolTimeout as err:
            self._discard(pool)
            raise KeyStoreUnavailableError(self.description, self._unreachable()) from err
        except psycopg.Error as err:
            error = KeyStoreUnavailableError if unavailable(err) else KeyStoreError
            raise error(self.description, self._reason(err)) from err

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of a session before handing it out, bounded by `_deadline`."""
        with self._deadline(conn):
            ConnectionPool.check_connection(conn)

    @contextlib.contextmanager
    def _deadline(self, conn: psycopg.Connection[Any]) -> Iterator[None]:
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
            return f"cannot connect: {self._reason(err)}"
        return f"no database session within {self.timeout:g}s"

    def _reason(self, err: BaseException) -> str:
        """The first line of a driver error, any password in it replaced."""
        text = _first_line(err)
        password = str(_libpq_parameters(self.location).get("password") or "")
        return scrub(self.location, text.replace(password, "***") if password else text)

    # -- schema --------------------------------------------------------------------------------

    def _version(self, conn: psycopg.Connection[Any]) -> int:
        exists = conn.execute(_HAS_MIGRATIONS).fetchone()
        if not exists or not exists[0]:
            return 0
        found = conn.execute(_SELECT_VERSION).fetchone()
        return int(found[0]) if found else 0

    def _refuse_newer(self, version: int) -> None:
        if version > latest_version():
            raise KeyStoreError(
                self.description,
                f"the database schema is at version {version}, newer than this agentrouter-auth "
                f"knows ({latest_version()}): run a newer agentrouter-auth",
            )

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse a newer schema; apply missing migrations (or refuse without auto_migrate)."""
        version = self._version(conn)
        self._refuse_newer(version)
        if version < latest_version():
            if not self.auto_migrate:
                raise KeyStoreError(
                    self.description,
                    f"the database schema is at version {version}; this agentrouter-auth needs "
                    f"{latest_version()}: run `agentrouter-auth store migrate`",
                )
            self._migrate(conn)
        self._schema_ready = True

    def migrate(self) -> list[Migration]:
        """Apply the migrations the database lacks, under a session advisory lock (so
        processes migrating at once apply each one once); return those applied here."""
        with self._session(prepare=False) as conn:
            applied = self._migrate(conn)
        self._schema_ready = True
        return applied

    def schema_version(self) -> int:
        """The version of the database's schema (0: none yet). Migrates nothing."""
        with self._session(prepare=False) as conn:
            return self._version(conn)

    def _migrate(self, conn: psycopg.Connection[Any]) -> list[Migration]:
        self._wait_for_lock(
            conn,
            "SELECT pg_advisory_lock(%s)",
            MIGRATION_LOCK,
            self.migration_lock_timeout,
            local=False,
            refusal=f"another session has been migrating the schema for over "
            f"{self.migration_lock_timeout:g}s (or holds its lock): try again later",
        )
        try:
            version = self._version(conn)  # again, under the lock
            self._refuse_newer(version)
            applied = []
            for migration in migrations():
                if migration.version <= version:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())  # several statements: no parameters
                    conn.execute(_INSERT_VERSION, [migration.version, migration.name])
                    if migration.version == SEALED_SINCE:
                        self._adopt(conn)
                applied.append(migration)
            return applied
        finally:
            with contextlib.suppress(psycopg.Error):  # a lost session has released it already
                conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])

    # -- the KeyStore protocol -----------------------------------------------------------------

    def fingerprint(self) -> object:
        """The ring row's generation and stamp: one primary-key read. Never raises: a store
        that cannot be read gives a value naming why, which changes when it recovers."""
        try:
            with self._session(prepare=not self._schema_ready) as conn, self._deadline(conn):
                row = conn.execute(_SELECT_RING).fetchone()
        except KeyStoreError as err:
            return ("unreachable", err.reason)
        if row is None:
            return ("missing",)  # read() says so; the next change to a key makes it again
        return ("generation", int(row[0]), str(row[1]))

    def generation(self) -> int:
        """The ring's generation now (KeyStoreError if unreachable)."""
        with self._session() as conn:
            row = conn.execute(_SELECT_RING).fetchone()
        if row is None:
            raise self._ring_missing()
        return int(row[0])

    def read(self) -> KeySet:
        """Every row, checked, and checked against the sealed ring state; KeyStoreError naming
        the first bad kid, or saying that the ring row is missing (then no change would be
        noticed: nothing bumps the generation)."""
        with self._session() as conn, self._deadline(conn):
            rows = conn.execute(_SELECT_KEYS).fetchall()
            ring = conn.execute(_SELECT_RING).fetchone()
            sealed = conn.execute(_SELECT_STATE).fetchone()
        if ring is None:
            raise self._ring_missing()
        key_set, state = self._verified(rows, sealed)
        self._accept(state)
        return key_set

    def ring_state(self) -> RingState:
        """The sealed ring state now, its MAC checked (KeyStoreError if missing or forged)."""
        with self._session() as conn:
            return self._open_state(conn.execute(_SELECT_STATE).fetchone())

    def _verified(
        self, rows: Sequence[tuple[Any, ...]], sealed: tuple[Any, ...] | None
    ) -> tuple[KeySet, RingState]:
        """The rows as a key set, once each is checked by itself and all of them against the
        sealed ring state, and the state is no older than one this process accepted."""
        key_set = self._key_set(rows)
        state = self._open_state(sealed)
        self._check_rows(rows, state)
        self._check_generation(state)
        return replace(key_set, policy=state.policy), state

    def _open_state(self, sealed: tuple[Any, ...] | None) -> RingState:
        if sealed is None:
            raise KeyStoreError(
                self.description,
                "the row of agentrouter_auth.ring_state is missing (deleted by hand?): the key "
                "rows cannot be checked against it, so none is used; restore it from a backup, "
                "or check the keys and run `agentrouter-auth store seal` to accept them as they "
                "are",
            )
        generation, document, mac_kek_id, mac = sealed
        try:
            self.envelope.verify(bytes(mac_kek_id), str(document).encode(), bytes(mac))
        except EnvelopeError as err:
            raise KeyStoreError(
                self.description,
                f"the ring state's integrity MAC {err}: it was edited or written by hand, or "
                "copied from a database under another KEK; refused",
            ) from err
        try:
            state = RingState.parse(str(document))
        except ValueError as err:
            raise KeyStoreError(self.description, f"corrupt ring state: {err}") from err
        if state.generation != generation:
            raise KeyStoreError(
                self.description,
                f"corrupt ring state: generation {generation} but its document says "
                f"{state.generation}",
            )
        return state

    def _check_rows(self, rows: Sequence[tuple[Any, ...]], state: RingState) -> None:
        """Refuse rows that are not exactly those the state lists: an extra row first (it would
        publish a key), then a missing one, then one that differs."""
        found = {str(row[0]): row for row in rows}
        listed = {key.kid: key for key in state.keys}
        at = f"the ring state (generation {state.generation})"
        for kid in sorted(found.keys() - listed.keys()):
            raise self._refuse(
                kid,
                f"its row is not in {at}: written back from an earlier state, or added by hand; "
                "refused",
            )
        for kid in sorted(listed.keys() - found.keys()):
            raise self._refuse(
                kid,
                f"{at} lists it as {listed[kid].state}, but its row is missing (deleted by "
                "hand?); restore the row from a backup",
            )
        for kid, row in sorted(found.items()):
            if row_digest(row) != listed[kid].row:
                raise self._refuse(
                    kid,
                    f"its row ({row[2]}) is not the one {at} lists ({listed[kid].state}): "
                    "written back from an earlier state; refused",
                )

    def _check_generation(self, state: RingState) -> None:
        """Refuse a state older than the newest this process accepted, or another at its
        generation: the database was written back to an earlier state (a replay, or a restore
        from a backup, which is accepted by restarting)."""
        seen = self._seen
        if seen is None or state.generation > seen.generation or state == seen:
            return
        kids = state.differences(seen)
        what = (
            f"older than generation {seen.generation}"
            if state.generation < seen.generation
            else "but another state than the one"
        )
        reason = (
            f"the ring state is at generation {state.generation}, {what} this process already "
            "loaded: the database was written back to an earlier state (a replay, or a restore "
            "from a backup); refused, the last good set stays (restart to accept a restore)"
        )
        if kids:
            raise self._refuse(kids[0], reason)
        raise KeyStoreError(self.description, reason)

    def _accept(self, state: RingState) -> None:
        with self._seen_lock:
            if self._seen is None or state.generation > self._seen.generation:
                self._seen = state

    def _write_state(
        self,
        conn: psycopg.Connection[Any],
        generation: int,
        keys: Sequence[Listed],
        policy: RecordedPolicy | None,
    ) -> RingState:
        """Seal the ring state (in the caller's transaction)."""
        state = RingState(generation, tuple(sorted(keys, key=lambda key: key.kid)), policy)
        document = state.document()
        mac_kek_id, mac = self.envelope.mac(document.encode())
        conn.execute(_WRITE_STATE, [generation, document, mac_kek_id, mac])
        return state

    def _adopt(self, conn: psycopg.Connection[Any]) -> None:
        """Seal the rows of a database written before the ring state existed (each row
        checked by itself first: a bad row stops the migration, naming its kid)."""
        self._lock_ring(conn)
        rows = conn.execute(_SELECT_KEYS).fetchall()
        self._key_set(rows)
        self._write_state(conn, 1, _listing(rows), None)

    def seal(self) -> tuple[RingState | None, RingState]:
        """Accept the key rows as they are now (after a restore or a repair by hand): seal
        them, each checked by itself, as the next generation. Returns the state replaced (None
        if it was missing or did not verify) and the new one."""
        with self._session() as conn:
            with conn.transaction():
                self._lock_ring(conn)
                rows = conn.execute(_SELECT_KEYS).fetchall()
                self._key_set(rows)
                old: RingState | None
                try:
                    old = self._open_state(conn.execute(_SELECT_STATE).fetchone())
                except KeyStoreError:
                    old = None
                newest = max((s.generation for s in (old, self._seen) if s is not None), default=0)
                policy = old.policy if old is not None else None
                state = self._write_state(conn, newest + 1, _listing(rows), policy)
            self._accept(state)
        return old, state

    def _ring_missing(self) -> KeyStoreError:
        return KeyStoreError(
            self.description,
            "the row of agentrouter_auth.ring is missing (deleted by hand?), so replicas cannot "
            "see changes: the next change to a key makes it again, or run "
            "`INSERT INTO agentrouter_auth.ring DEFAULT VALUES`",
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One database transaction under the ring's advisory lock: read the rows, yield them,
        apply the changes on clean exit (one generation bump and NOTIFY at commit); roll back
        on an exception."""
        with self._session() as conn:
            with conn.transaction():
                self._lock_ring(conn)
                rows = conn.execute(_SELECT_KEYS).fetchall()
                key_set, state = self._verified(rows, conn.execute(_SELECT_STATE).fetchone())
                tx = Transaction(key_set)
                yield tx
                written = self._apply(conn, tx, rows, state)
            self._accept(written or state)

    def _lock_ring(self, conn: psycopg.Connection[Any]) -> None:
        """Take the ring's transaction lock, waiting at most `lock_timeout`: a session that holds
        it and stopped answering (its client lost power mid-transaction) would otherwise stop
        every replica's steps and reloads until TCP gives up on it, hours later. The holder's
        own transaction is ended by the server once it idles IDLE_TRANSACTION_TIMEOUT."""
        idle = f"{round(IDLE_TRANSACTION_TIMEOUT * 1000)}ms"
        conn.execute(_SET_CONFIG, ["idle_in_transaction_session_timeout", idle, True])
        self._wait_for_lock(
            conn,
            "SELECT pg_advisory_xact_lock(%s)",
            RING_LOCK,
            self.lock_timeout,
            local=True,
            refusal=f"another session has held the key ring's lock for over "
            f"{self.lock_timeout:g}s; the step is retried at the next reload",
        )

    def _wait_for_lock(
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
        conn.execute(_SET_CONFIG, ["lock_timeout", f"{round(seconds * 1000)}ms", local])
        try:
            conn.execute(statement, [key])
        except psycopg.errors.LockNotAvailable as err:
            raise KeyStoreError(self.description, refusal) from err
        finally:
            if not local:
                conn.execute("RESET lock_timeout")

    def rekey(self) -> tuple[int, int]:
        """Seal every private key again under the first KEK and MAC every row under it, in one
        transaction under the ring's lock; return (keys sealed, of which were under another
        KEK)."""
        sealing = self.envelope.sealing.id
        with self._session() as conn:
            with conn.transaction():
                self._lock_ring(conn)
                rows = conn.execute(_SELECT_KEYS).fetchall()
                # every row opens and checks, and agrees with the ring state, or nothing changes
                key_set, state = self._verified(rows, conn.execute(_SELECT_STATE).fetchone())
                moved = sum(1 for row in rows if row[9] is not None and bytes(row[9]) != sealing)
                listing = []
                for stored in key_set.keys:
                    columns, digest = self._row(stored)
                    conn.execute(_UPDATE_KEY, columns)
                    listing.append(Listed(stored.kid, stored.entry.state.value, digest))
                written = self._write_state(conn, state.generation + 1, listing, state.policy)
            self._accept(written)
        return sum(1 for stored in key_set.keys if stored.key.has_private), moved

    # -- rows ----------------------------------------------------------------------------------

    def _key_set(self, rows: Sequence[tuple[Any, ...]]) -> KeySet:
        key_set = KeySet(tuple(self._stored(row) for row in rows))
        check_one_active_per_alg(key_set, self.description)
        return key_set

    def _refuse(self, kid: object, reason: str) -> KeyStoreError:
        return KeyStoreError(self.description, f"key {kid}: {reason}")

    def _stored(self, row: tuple[Any, ...]) -> StoredKey:
        """A row as a checked key: every check a key file gets, and the envelope's."""
        kid, alg, state, origin, created, activated, retired, public, sealed, kek_id = row[:10]
        record = {"kid": kid, "alg": alg, "state": state, "origin": origin, "created": created,
                  "activated": activated, "retired": retired}  # fmt: skip
        try:
            entry = Entry.from_json(record)
        except ValueError as err:
            raise self._refuse(kid, f"corrupt row: {err}") from err
        if not isinstance(public, dict):
            raise self._refuse(kid, "the public JWK is not a JSON object")
        if public.get("kty") == "oct":
            raise self._refuse(
                kid, "symmetric (oct) keys are refused: a shared secret is never published"
            )
        leaked = sorted(PRIVATE_MEMBERS & set(public))
        if leaked:
            raise self._refuse(kid, f"the public JWK holds private member(s) {', '.join(leaked)}")
        public_key = self._jwk(kid, public, "the public JWK")
        if public_key.get("kid") != kid:
            raise self._refuse(kid, f"the public JWK is key {public_key.get('kid')}, not {kid}")
        if public_key.get("alg") != entry.alg:
            raise self._refuse(kid, f"alg {public_key.get('alg')} but the row says {entry.alg}")
        if sealed is None:
            if entry.state in SIGNING_STATES:
                raise self._refuse(kid, f"{entry.state.value} key has no private half to sign with")
            key = public_key
        else:
            key = self._private(entry, public_key, bytes(kek_id or b""), sealed)
        self._verify_mac(kid, row)
        return StoredKey(entry, key)

    def _verify_mac(self, kid: object, row: tuple[Any, ...]) -> None:
        """Refuse a row whose MAC is missing or is not that of its values under a KEK given:
        one written by hand, edited, or copied from a database under another KEK."""
        mac_kek_id, mac = row[10], row[11]
        if mac_kek_id is None or mac is None:
            raise self._refuse(
                kid,
                "the row has no integrity MAC: it was not written by agentrouter-auth with the "
                "KEK (added by hand?); refused",
            )
        try:
            self.envelope.verify(bytes(mac_kek_id), row_mac_message(row[:10]), bytes(mac))
        except EnvelopeError as err:
            raise self._refuse(
                kid,
                f"the row's integrity MAC {err}: the row was edited, added by hand, or copied "
                "from a database under another KEK; refused",
            ) from err

    def _private(self, entry: Entry, public_key: jwk.JWK, kek_id: bytes, sealed: bytes) -> jwk.JWK:
        """The sealed private key of a row, opened and checked against its public JWK."""
        kid = entry.kid
        try:
            plaintext = self.envelope.open(kid, entry.alg, kek_id, bytes(sealed))
        except EnvelopeError as err:
            raise self._refuse(kid, f"the private key {err}") from err
        try:
            members = json.loads(plaintext)
        except (ValueError, UnicodeDecodeError) as err:
            raise self._refuse(kid, "the private key is not a valid JWK (not JSON)") from err
        if not isinstance(members, dict):
            raise self._refuse(kid, "the private key is not a valid JWK (not an object)")
        private = self._jwk(kid, members, "the private key")
        if not private.has_private:
            raise self._refuse(kid, "the sealed private key has no private member")
        if private.export_public(as_dict=True) != public_key.export_public(as_dict=True):
            raise self._refuse(kid, "the private key's public members differ from the public JWK")
        return private

    def _jwk(self, kid: object, members: dict[str, Any], what: str) -> jwk.JWK:
        try:
            key = jwk.JWK(**members)
        except (ValueError, KeyError, TypeError, JWException) as err:
            reason = f"{what} is not a valid JWK ({type(err).__name__}: {err})"
            raise self._refuse(kid, reason) from err
        try:
            validate(key)
        except InvalidKeyError as err:
            raise self._refuse(kid, str(err)) from err
        return key

    def _row(self, stored: StoredKey) -> tuple[dict[str, Any], str]:
        """The columns of a key's row (its private half sealed afresh, and the row's MAC), and
        the row's digest."""
        entry = stored.entry
        sealed: tuple[bytes | None, bytes | None] = (None, None)
        if stored.key.has_private:
            plaintext = stored.key.export(private_key=True).encode()
            sealed = self.envelope.seal(stored.kid, entry.alg, plaintext)
        public = stored.key.export_public(as_dict=True)
        values = (entry.kid, entry.alg, entry.state.value, entry.origin.value, entry.created,
                  entry.activated, entry.retired, public, sealed[1], sealed[0])  # fmt: skip
        mac_kek_id, mac = self.envelope.mac(row_mac_message(values))
        names = ("kid", "alg", "state", "origin", "created", "activated", "retired")
        columns: dict[str, Any] = dict(zip(names, values, strict=False))
        columns.update(public_jwk=Jsonb(public), private_jwk=sealed[1], kek_id=sealed[0],
                       mac_kek_id=mac_kek_id, mac=mac)  # fmt: skip
        return columns, row_digest(values)

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        tx: Transaction,
        rows: Sequence[tuple[Any, ...]],
        state: RingState,
    ) -> RingState | None:
        """Deletions, then rows that do not sign, then signing ones (the unique index allows
        one active key per algorithm at every statement), then the ring state listing the
        result as the next generation, which it returns (None when nothing changes)."""
        if not tx.changed:
            return None
        result = tx.result()
        check_one_active_per_alg(result, self.description)
        for stored in result.keys:  # a state that every read would refuse is never written
            if stored.entry.state in SIGNING_STATES and not stored.key.has_private:
                raise self._refuse(
                    stored.kid,
                    f"{stored.entry.state.value} key has no private half to sign with; "
                    "nothing was written",
                )
        before = {stored.kid for stored in tx.current.keys}
        after = {stored.kid: stored for stored in result.keys}
        gone = sorted((before - set(after)) | (before & set(tx.added)))
        if gone:
            conn.execute(_DELETE_KEYS, [gone])
        writes = [after[kid] for kid in sorted(set(tx.added) | set(tx.updated)) if kid in after]
        writes.sort(key=lambda stored: stored.entry.state is State.ACTIVE)
        digests = {str(row[0]): row_digest(row) for row in rows}
        for stored in writes:
            columns, digests[stored.kid] = self._row(stored)
            conn.execute(_INSERT_KEY if stored.kid in tx.added else _UPDATE_KEY, columns)
        listing = [Listed(kid, key.entry.state.value, digests[kid]) for kid, key in after.items()]
        return self._write_state(conn, state.generation + 1, listing, result.policy)


def _listing(rows: Sequence[tuple[Any, ...]]) -> list[Listed]:
    return [Listed(str(row[0]), str(row[2]), row_digest(row)) for row in rows]


class PostgresChangeFeed:
    """The store's change announcements: LISTEN on `CHANNEL` in an async session of its own.

    A lost session is opened again on the next wait, and that wait reports a change: anything
    committed meanwhile was announced to nobody. While the database cannot be reached, a wait
    sleeps its timeout and reports none, and the ring's polling carries on alone.
    """

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def wait(self, timeout: float) -> bool:
        """True on a notification (or a new session), False after `timeout` without one."""
        if self._conn is None or self._conn.closed:
            started = asyncio.get_running_loop().time()
            if await self._listen():
                return True
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, timeout - elapsed))
            return False
        try:
            async for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                return True
        except psycopg.Error:
            await self.close()
            return True  # changes may have gone unannounced: look
        return False

    async def _listen(self) -> bool:
        parameters = self._store.connection_parameters()
        try:
            conn = await psycopg.AsyncConnection.connect(self._store.location, **parameters)
        except psycopg.Error:
            return False
        try:
            await conn.execute("LISTEN " + CHANNEL)  # a constant identifier
        except psycopg.Error:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def close(self) -> None:
        """Close the session (a new wait opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
