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
is checked as a key file is, by the shared check of a stored key (kid is the thumbprint, alg
matches, the private half belongs to the public one, no private member in the public JWK, legal
states): a damaged row is a KeyStoreError
naming its kid, and the ring keeps serving its last good set. Write access to the database is
not enough to publish a key, revive one or age one: every row carries an HMAC under a KEK over
all of its columns (`row_mac_message`), and a row whose MAC is missing or wrong is refused the
same way. A row MAC binds a row to itself only, so the rows must also agree exactly with the
sealed ring state, which every change rewrites in its own transaction: a row deleted, added or
written back from an earlier state (even the same kid's older row) is refused naming its kid,
and a process (every worker of one `serve`) never accepts the ring state's generation going
backwards (a whole earlier state written back). A change is one database transaction under a
transaction-scoped advisory lock that re-reads the rows first, so replicas, workers and the CLI
never take the same lifecycle step twice. The commit notifies `CHANNEL` with the new
generation; `fingerprint()` reads the generation and the sealed ring state's (triggers or not),
which is what the ring polls, and changes every `VERIFY_EVERY` polls so that every row is
verified anyway.

The database is touched only by `fingerprint()`, `read()`, `transaction()` (from the key ring's
upkeep and the CLI), `migrate()`, `rekey()` and `seal()`; the request path serves the ring's
snapshot.

One job per module, as Dex splits its SQL storage: `schema` (names, statements, the migrations
in `migrations/`), `session` (the pool, every deadline, what a driver error means), `rows` (a
key's row and its checks, the row MAC, the sealed ring state), `store` (the `KeyStore` methods
and the store's own commands), `feed` (LISTEN), `memory` (the newest ring state seen, shared by
the workers of one `serve`). This module is their public face.
"""

from agentrouter_auth.keys.postgres.feed import PostgresChangeFeed
from agentrouter_auth.keys.postgres.rows import (
    ADOPTABLE_MAC_FORMAT,
    MAC_FORMAT,
    RING_STATE_FORMAT,
    Listed,
    RingState,
    row_digest,
    row_mac_message,
)
from agentrouter_auth.keys.postgres.schema import (
    CHANNEL,
    MIGRATION_LOCK,
    RING_LOCK,
    SCHEMA,
    Migration,
    latest_version,
    migrations,
)
from agentrouter_auth.keys.postgres.session import (
    APPLICATION_NAME,
    DEFAULT_TIMEOUT,
    LOCK_TIMEOUT,
    MIGRATION_LOCK_TIMEOUT,
    check_url,
    unavailable,
)
from agentrouter_auth.keys.postgres.store import VERIFY_EVERY, PostgresStore

SCHEMES = ("postgresql", "postgres")
"""The URL schemes of this store (a libpq key=value DSN is one too)."""

__all__ = [
    "ADOPTABLE_MAC_FORMAT",
    "APPLICATION_NAME",
    "CHANNEL",
    "DEFAULT_TIMEOUT",
    "LOCK_TIMEOUT",
    "MAC_FORMAT",
    "MIGRATION_LOCK",
    "MIGRATION_LOCK_TIMEOUT",
    "RING_LOCK",
    "RING_STATE_FORMAT",
    "SCHEMA",
    "SCHEMES",
    "VERIFY_EVERY",
    "Listed",
    "Migration",
    "PostgresChangeFeed",
    "PostgresStore",
    "RingState",
    "check_url",
    "latest_version",
    "migrations",
    "row_digest",
    "row_mac_message",
    "unavailable",
]
