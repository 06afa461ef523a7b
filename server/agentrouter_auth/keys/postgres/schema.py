"""The PostgreSQL store's schema: its names, its statements, and its migrations.

The schema lives in its own PostgreSQL schema, `agentrouter_auth`, built by the versioned steps
in `migrations/NNNN_name.sql` (applied in order, each once, recorded in `schema_migrations`).
Every statement the store makes is written out here, the schema name included, so that no SQL is
built from strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, LiteralString

import psycopg

from agentrouter_auth.keys.store import KeyStoreError

SCHEMA = "agentrouter_auth"
CHANNEL = "agentrouter_auth_keys"
"""NOTIFY channel: every transaction that changes a key notifies it with the new generation."""
MIGRATION_LOCK = 0x6172_6175_7468_0001
"""Session advisory lock held while migrations are applied."""
RING_LOCK = 0x6172_6175_7468_0002
"""Transaction advisory lock held by every transaction that may change the keys."""
SEALED_SINCE = 2
"""The migration that adds the ring state: whoever applies it seals the rows it finds."""
_MIGRATION_FILE = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql")
# The statements, written out (the schema name included) so that no SQL is built from strings.
SELECT_KEYS = (
    "SELECT kid, alg, state, origin, created, activated, retired, public_jwk, private_jwk, kek_id, "
    "mac_kek_id, mac FROM agentrouter_auth.keys ORDER BY kid"
)
INSERT_KEY = (
    "INSERT INTO agentrouter_auth.keys (kid, alg, state, origin, created, activated, retired, "
    "public_jwk, private_jwk, kek_id, mac_kek_id, mac) VALUES (%(kid)s, %(alg)s, %(state)s, "
    "%(origin)s, %(created)s, %(activated)s, %(retired)s, %(public_jwk)s, %(private_jwk)s, "
    "%(kek_id)s, %(mac_kek_id)s, %(mac)s)"
)
UPDATE_KEY = (
    "UPDATE agentrouter_auth.keys SET alg = %(alg)s, state = %(state)s, origin = %(origin)s, "
    "created = %(created)s, activated = %(activated)s, retired = %(retired)s, "
    "public_jwk = %(public_jwk)s, private_jwk = %(private_jwk)s, kek_id = %(kek_id)s, "
    "mac_kek_id = %(mac_kek_id)s, mac = %(mac)s WHERE kid = %(kid)s"
)
DELETE_KEYS = "DELETE FROM agentrouter_auth.keys WHERE kid = ANY(%s)"
SELECT_RING = "SELECT generation, stamp FROM agentrouter_auth.ring"
SELECT_FINGERPRINT = (
    "SELECT (SELECT generation FROM agentrouter_auth.ring), (SELECT stamp FROM "
    "agentrouter_auth.ring), (SELECT generation FROM agentrouter_auth.ring_state), (SELECT mac "
    "FROM agentrouter_auth.ring_state)"
)
"""The ring row (bumped by the triggers) and the sealed ring state's generation and MAC (written
by every change agentrouter-auth makes, triggers or not), in one cheap read."""
SELECT_STATE = "SELECT generation, document, mac_kek_id, mac FROM agentrouter_auth.ring_state"
WRITE_STATE = (
    "INSERT INTO agentrouter_auth.ring_state (one, generation, document, mac_kek_id, mac) "
    "VALUES (true, %s, %s, %s, %s) ON CONFLICT (one) DO UPDATE SET generation = "
    "EXCLUDED.generation, document = EXCLUDED.document, mac_kek_id = EXCLUDED.mac_kek_id, "
    "mac = EXCLUDED.mac"
)
PROBE_WRITES: tuple[LiteralString, ...] = (
    "UPDATE agentrouter_auth.keys SET kid = kid WHERE false",
    "INSERT INTO agentrouter_auth.keys SELECT * FROM agentrouter_auth.keys WHERE false",
    "DELETE FROM agentrouter_auth.keys WHERE false",
    "INSERT INTO agentrouter_auth.ring_state SELECT * FROM agentrouter_auth.ring_state "
    "WHERE false ON CONFLICT (one) DO UPDATE SET one = EXCLUDED.one",
    "INSERT INTO agentrouter_auth.ring SELECT * FROM agentrouter_auth.ring WHERE false "
    "ON CONFLICT (one) DO UPDATE SET one = EXCLUDED.one",
)
"""A write of nothing to each table a change writes (the ring's through the trigger too): each
fails on a missing privilege and in a read-only transaction, as the real write would."""
HAS_MIGRATIONS = "SELECT to_regclass('agentrouter_auth.schema_migrations') IS NOT NULL"
SELECT_VERSION = "SELECT coalesce(max(version), 0) FROM agentrouter_auth.schema_migrations"
INSERT_VERSION = "INSERT INTO agentrouter_auth.schema_migrations (version, name) VALUES (%s, %s)"


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
    for item in (
        resources.files(__package__ or "agentrouter_auth.keys.postgres")
        .joinpath("migrations")
        .iterdir()
    ):
        match = _MIGRATION_FILE.fullmatch(item.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], item.read_text()))
    return tuple(sorted(found, key=lambda migration: migration.version))


def latest_version() -> int:
    """The schema version this code knows."""
    return migrations()[-1].version


def version(conn: psycopg.Connection[Any]) -> int:
    """The version of the database's schema (0: none yet)."""
    exists = conn.execute(HAS_MIGRATIONS).fetchone()
    if not exists or not exists[0]:
        return 0
    found = conn.execute(SELECT_VERSION).fetchone()
    return int(found[0]) if found else 0


def refuse_newer(current: int, description: str) -> None:
    """KeyStoreError if the schema is newer than this code knows."""
    if current > latest_version():
        raise KeyStoreError(
            description,
            f"the database schema is at version {current}, newer than this agentrouter-auth "
            f"knows ({latest_version()}): run a newer agentrouter-auth",
        )


def probe_writes(conn: psycopg.Connection[Any]) -> None:
    """Prove (in the caller's transaction) that this session may write every table a change
    writes, and leave nothing: each statement writes no row, and the savepoint they run in is
    rolled back (the trigger's bump and NOTIFY with it). psycopg.Error if one is refused."""
    with conn.transaction(force_rollback=True):
        for statement in PROBE_WRITES:
            conn.execute(statement)


def apply_after(
    conn: psycopg.Connection[Any],
    current: int,
    adopt: Callable[[psycopg.Connection[Any]], None],
) -> list[Migration]:
    """Apply every migration past `current`, each in its own transaction (`adopt` seals the
    rows found when the ring state arrives); return those applied."""
    applied = []
    for migration in migrations():
        if migration.version <= current:
            continue
        with conn.transaction():
            conn.execute(migration.sql.encode())  # several statements: no parameters
            conn.execute(INSERT_VERSION, [migration.version, migration.name])
            if migration.version == SEALED_SINCE:
                adopt(conn)
        applied.append(migration)
    return applied
