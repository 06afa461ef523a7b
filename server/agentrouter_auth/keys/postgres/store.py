"""The PostgreSQL store's `KeyStore` methods, and its own commands (migrate, rekey, seal).

A change is one database transaction under a transaction-scoped advisory lock (`RING_LOCK`) that
re-reads the rows first, so replicas, workers and the CLI never take the same lifecycle step
twice; it rewrites the sealed ring state as the next generation, and a trigger bumps the ring's
generation, which `fingerprint()` reads and the commit announces on `CHANNEL`. A process never
accepts the ring state's generation going backwards (a whole earlier state written back).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import psycopg

from agentrouter_auth.keys.kek import Envelope, Kek
from agentrouter_auth.keys.postgres import schema
from agentrouter_auth.keys.postgres.feed import PostgresChangeFeed
from agentrouter_auth.keys.postgres.memory import SeenStates
from agentrouter_auth.keys.postgres.rows import Listed, RingState, RowCodec, listing_of, row_digest
from agentrouter_auth.keys.postgres.schema import (
    MIGRATION_LOCK,
    RING_LOCK,
    Migration,
    latest_version,
)
from agentrouter_auth.keys.postgres.session import (
    DEFAULT_TIMEOUT,
    IDLE_TRANSACTION_TIMEOUT,
    LOCK_TIMEOUT,
    MIGRATION_LOCK_TIMEOUT,
    SET_CONFIG,
    Sessions,
    check_url,
)
from agentrouter_auth.keys.store import (
    SIGNING_STATES,
    KeySet,
    KeyStoreError,
    RecordedPolicy,
    State,
    Transaction,
    check_one_active_per_alg,
)

VERIFY_EVERY = 15
"""A reload reads and verifies every row at least once in this many fingerprints (reload
intervals), changed or not: 30 s at the default 2 s. A full read of three keys (ES256, EdDSA,
RS256) takes about 40 ms here (the fingerprint 1 ms), too dear for every interval of every
worker."""


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
        if not keks:
            raise KeyStoreError(
                description,
                "a PostgreSQL key store needs --kek-file: private keys are kept encrypted under "
                "a key-encryption key (make one with `openssl rand -base64 32`)",
            )
        check_url(location, description)
        self.envelope = Envelope(keks)
        self.sessions = Sessions(location, description, timeout)
        self.rows = RowCodec(self.envelope, description)
        self.timeout = timeout
        self.lock_timeout = lock_timeout
        self.migration_lock_timeout = migration_lock_timeout
        self.auto_migrate = auto_migrate
        self._schema_ready = False
        self._seen = SeenStates.from_environment()
        """The newest ring state this process (and its sibling workers) accepted: it never
        accepts an older one."""
        self._adopt_any = False  # `seal()`: migration 2 adopts rows written under a ring state
        self._fingerprints = 0  # calls of fingerprint(): a full read every VERIFY_EVERY

    @property
    def description(self) -> str:
        """The URL without its password."""
        return self.sessions.description

    @property
    def sealing_kek(self) -> Kek:
        """The KEK that seals private keys and MACs rows (the first --kek-file)."""
        return self.envelope.sealing

    # -- connections ---------------------------------------------------------------------------

    def connection_parameters(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect(store.location, **…)` as the store connects:
        for a session of one's own (a LISTEN connection)."""
        return self.sessions.connection_parameters()

    def connect(self) -> psycopg.Connection[Any]:
        """A new autocommit session outside the pool (the caller closes it);
        KeyStoreUnavailableError if the database cannot be reached."""
        return self.sessions.connect()

    def change_feed(self) -> PostgresChangeFeed:
        """LISTEN on `CHANNEL` in a session of its own: the commit of every change notifies."""
        return PostgresChangeFeed(self.sessions)

    def close(self) -> None:
        """Close the store's sessions. The store reopens them if used again."""
        self.sessions.close()

    def _session(
        self, *, prepare: bool = True
    ) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        """A pooled session, the schema checked (and migrated) first when `prepare`."""
        return self.sessions.session(self._prepare if prepare else None)

    # -- schema --------------------------------------------------------------------------------

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Refuse a newer schema; apply missing migrations (or refuse without auto_migrate)."""
        version = schema.version(conn)
        schema.refuse_newer(version, self.description)
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
            return schema.version(conn)

    def _migrate(self, conn: psycopg.Connection[Any]) -> list[Migration]:
        self.sessions.wait_for_lock(
            conn,
            "SELECT pg_advisory_lock(%s)",
            MIGRATION_LOCK,
            self.migration_lock_timeout,
            local=False,
            refusal=f"another session has been migrating the schema for over "
            f"{self.migration_lock_timeout:g}s (or holds its lock): try again later",
        )
        try:
            version = schema.version(conn)  # again, under the lock
            schema.refuse_newer(version, self.description)
            return schema.apply_after(conn, version, self._adopt)
        finally:
            with contextlib.suppress(psycopg.Error):  # a lost session has released it already
                conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])

    # -- the KeyStore protocol -----------------------------------------------------------------

    def fingerprint(self) -> object:
        """The ring row's generation and stamp, and the sealed ring state's generation and
        MAC (which every change rewrites, so one is seen with the triggers disabled), in one
        read; and every `VERIFY_EVERY` calls a new value, so that the ring reads and verifies
        every row anyway (a row edited with the triggers disabled changes neither). Never
        raises: a store that cannot be read gives a value naming why, which changes when it
        recovers."""
        self._fingerprints += 1
        sweep = self._fingerprints // VERIFY_EVERY
        try:
            with (
                self._session(prepare=not self._schema_ready) as conn,
                self.sessions.deadline(conn),
            ):
                row = conn.execute(schema.SELECT_FINGERPRINT).fetchone()
        except KeyStoreError as err:
            return ("unreachable", err.reason)
        if row is None or row[0] is None:
            return ("missing", sweep)  # read() says so; the next change to a key makes it again
        mac = None if row[3] is None else bytes(row[3]).hex()
        return ("generation", int(row[0]), str(row[1]), row[2], mac, sweep)

    def generation(self) -> int:
        """The ring's generation now (KeyStoreError if unreachable)."""
        with self._session() as conn:
            row = conn.execute(schema.SELECT_RING).fetchone()
        if row is None:
            raise self._ring_missing()
        return int(row[0])

    def read(self) -> KeySet:
        """Every row, checked, and checked against the sealed ring state; KeyStoreError naming
        the first bad kid, or saying that the ring row is missing (then no change would be
        noticed: nothing bumps the generation)."""
        with self._session() as conn, self.sessions.deadline(conn):
            rows = conn.execute(schema.SELECT_KEYS).fetchall()
            ring = conn.execute(schema.SELECT_RING).fetchone()
            sealed = conn.execute(schema.SELECT_STATE).fetchone()
        if ring is None:
            raise self._ring_missing()
        key_set, state = self._verified(rows, sealed)
        self._accept(state)
        return key_set

    def ring_state(self) -> RingState:
        """The sealed ring state now, its MAC checked (KeyStoreError if missing or forged)."""
        with self._session() as conn:
            return self.rows.open_state(conn.execute(schema.SELECT_STATE).fetchone())

    def _verified(
        self, rows: Sequence[tuple[Any, ...]], sealed: tuple[Any, ...] | None
    ) -> tuple[KeySet, RingState]:
        """The rows as a key set, once each is checked by itself and all of them against the
        sealed ring state, and the state is no older than one this process accepted."""
        key_set = self.rows.key_set(rows)
        state = self.rows.open_state(sealed)
        self.rows.check_rows(rows, state)
        self._seen.check(state, self.rows)
        return replace(key_set, policy=state.policy), state

    def _accept(self, state: RingState) -> None:
        self._seen.accept(state)

    def _write_state(
        self,
        conn: psycopg.Connection[Any],
        generation: int,
        keys: Sequence[Listed],
        policy: RecordedPolicy | None,
    ) -> RingState:
        """Seal the ring state (in the caller's transaction)."""
        state, parameters = self.rows.seal_state(generation, keys, policy)
        conn.execute(schema.WRITE_STATE, parameters)
        return state

    def _adopt(self, conn: psycopg.Connection[Any]) -> None:
        """Seal the rows of a database written before the ring state existed (each row
        checked by itself first: a bad row, or one written under a ring state, stops the
        migration, naming its kid; `seal()` adopts any)."""
        self._lock_ring(conn)
        rows = conn.execute(schema.SELECT_KEYS).fetchall()
        self.rows.key_set(rows)
        if not self._adopt_any:
            self.rows.check_adoptable(rows)
        self._write_state(conn, 1, listing_of(rows), None)

    def seal(self) -> tuple[RingState | None, RingState]:
        """Accept the key rows as they are now (after a restore or a repair by hand): seal
        them, each checked by itself, as the next generation. Returns the state replaced (None
        if it was missing or did not verify) and the new one. A schema rolled back to before
        the ring state is migrated first, its rows adopted whenever they were written."""
        self._adopt_any = True
        try:
            return self._seal()
        finally:
            self._adopt_any = False

    def _seal(self) -> tuple[RingState | None, RingState]:
        with self._session() as conn:
            with conn.transaction():
                self._lock_ring(conn)
                rows = conn.execute(schema.SELECT_KEYS).fetchall()
                self.rows.key_set(rows)
                old: RingState | None
                try:
                    old = self.rows.open_state(conn.execute(schema.SELECT_STATE).fetchone())
                except KeyStoreError:
                    old = None
                seen = self._seen.newest()
                newest = max((s.generation for s in (old, seen) if s is not None), default=0)
                policy = old.policy if old is not None else None
                state = self._write_state(conn, newest + 1, listing_of(rows), policy)
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
                schema.probe_writes(conn)  # a read-only role or transaction fails here, at once
                rows = conn.execute(schema.SELECT_KEYS).fetchall()
                key_set, state = self._verified(rows, conn.execute(schema.SELECT_STATE).fetchone())
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
        conn.execute(SET_CONFIG, ["idle_in_transaction_session_timeout", idle, True])
        self.sessions.wait_for_lock(
            conn,
            "SELECT pg_advisory_xact_lock(%s)",
            RING_LOCK,
            self.lock_timeout,
            local=True,
            refusal=f"another session has held the key ring's lock for over "
            f"{self.lock_timeout:g}s; the step is retried at the next reload",
        )

    def rekey(self) -> tuple[int, int]:
        """Seal every private key again under the first KEK and MAC every row under it, in one
        transaction under the ring's lock; return (keys sealed, of which were under another
        KEK)."""
        sealing = self.envelope.sealing.id
        with self._session() as conn:
            with conn.transaction():
                self._lock_ring(conn)
                rows = conn.execute(schema.SELECT_KEYS).fetchall()
                # every row opens and checks, and agrees with the ring state, or nothing changes
                key_set, state = self._verified(rows, conn.execute(schema.SELECT_STATE).fetchone())
                moved = sum(1 for row in rows if row[9] is not None and bytes(row[9]) != sealing)
                listing = []
                for stored in key_set.keys:
                    columns, digest = self.rows.encode(stored)
                    conn.execute(schema.UPDATE_KEY, columns)
                    listing.append(Listed(stored.kid, stored.entry.state.value, digest))
                written = self._write_state(conn, state.generation + 1, listing, state.policy)
            self._accept(written)
        return sum(1 for stored in key_set.keys if stored.key.has_private), moved

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
                raise self.rows.refuse(
                    stored.kid,
                    f"{stored.entry.state.value} key has no private half to sign with; "
                    "nothing was written",
                )
        before = {stored.kid for stored in tx.current.keys}
        after = {stored.kid: stored for stored in result.keys}
        gone = sorted((before - set(after)) | (before & set(tx.added)))
        if gone:
            conn.execute(schema.DELETE_KEYS, [gone])
        writes = [after[kid] for kid in sorted(set(tx.added) | set(tx.updated)) if kid in after]
        writes.sort(key=lambda stored: stored.entry.state is State.ACTIVE)
        digests = {str(row[0]): row_digest(row) for row in rows}
        for stored in writes:
            columns, digests[stored.kid] = self.rows.encode(stored)
            conn.execute(
                schema.INSERT_KEY if stored.kid in tx.added else schema.UPDATE_KEY, columns
            )
        listing = [Listed(kid, key.entry.state.value, digests[kid]) for kid, key in after.items()]
        return self._write_state(conn, state.generation + 1, listing, result.policy)
