"""The PostgreSQL key store against a real server: migrations, encryption at rest, rows refused
by kid, the generation and its NOTIFY, the advisory lock, passwords kept out of messages."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.kek import read_kek
from agentrouter_auth.keys.location import redacted
from agentrouter_auth.keys.material import generate_key
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.postgres import (
    CHANNEL,
    MIGRATION_LOCK,
    RING_LOCK,
    PostgresStore,
    latest_version,
    migrations,
    row_mac_message,
)
from agentrouter_auth.keys.registry import check_location, open_store
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import Entry, KeyStoreError, State
from agentrouter_auth.keys.transfer import copy_keys
from tests.keystores import PRIVATE
from tests.support import PostgresServer, write_kek

T0 = 1_700_000_000


def _store(dsn: str, *kek_files: Path, **options: Any) -> PostgresStore:
    keks = [read_kek(str(path)) for path in kek_files]
    return PostgresStore(dsn, keks, description=redacted(dsn), **options)


def _db(dsn: str) -> str:
    return dsn.rsplit("/", 1)[1]


@pytest.fixture
def store(pg_dsn: str, kek_file: Path) -> Any:
    store = _store(pg_dsn, kek_file)
    yield store
    store.close()


# -- migrations --------------------------------------------------------------------------------


def test_the_shipped_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [migration.version for migration in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert latest_version() == versions[-1]


def test_a_fresh_database_is_migrated_once_and_migrate_is_idempotent(
    postgres: PostgresServer, store: PostgresStore
) -> None:
    assert store.schema_version() == 0
    applied = store.migrate()
    assert [m.version for m in applied] == [m.version for m in migrations()]
    assert store.migrate() == []
    rows = postgres.execute(
        "SELECT version, name FROM agentrouter_auth.schema_migrations", dbname=_db(store.location)
    )
    assert rows == [(m.version, m.name) for m in migrations()]
    assert store.read().keys == ()


def test_the_first_use_migrates_unless_told_not_to(pg_dsn: str, kek_file: Path) -> None:
    manual = _store(pg_dsn, kek_file, auto_migrate=False)
    with pytest.raises(
        KeyStoreError, match="schema is at version 0; .* run `agentrouter-auth store migrate`"
    ):
        manual.read()
    automatic = _store(pg_dsn, kek_file)
    assert automatic.read().keys == ()
    assert automatic.schema_version() == latest_version()
    assert manual.read().keys == ()
    manual.close()
    automatic.close()


def _migrate(dsn: str, kek: str, barrier: Any, out: Any) -> None:
    store = PostgresStore(dsn, [read_kek(kek)], description="db")
    barrier.wait()
    out.put(len(store.migrate()))
    store.close()


def test_processes_migrating_at_once_apply_each_migration_once(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=_migrate, args=(pg_dsn, str(kek_file), barrier, out))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(out.get(timeout=5) for _ in workers) == [0, 0, len(migrations())]
    rows = postgres.execute(
        "SELECT count(*) FROM agentrouter_auth.schema_migrations", dbname=_db(pg_dsn)
    )
    assert rows == [(len(migrations()),)]


def test_a_schema_newer_than_the_code_is_refused_in_one_line(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK]
) -> None:
    ring = KeyRing(store, Policy())
    ring.init(["ES256"])
    good = ring.load()
    postgres.execute(
        "INSERT INTO agentrouter_auth.schema_migrations (version, name) VALUES (999, 'future')",
        dbname=_db(store.location),
    )
    expected = (
        f"schema is at version 999, newer than this agentrouter-auth knows ({latest_version()})"
    )
    for attempt in (store.read, store.migrate, ring.rotate):
        with pytest.raises(KeyStoreError, match=re.escape(expected)) as failure:
            attempt()
        assert "\n" not in str(failure.value)
    assert ring.refresh() is False  # the ring keeps its last good set
    assert ring.snapshot() is good


# -- encryption at rest --------------------------------------------------------------------------


def _kids_and_private_values(keys: list[jwk.JWK]) -> list[str]:
    values = []
    for key in keys:
        members = json.loads(key.export(private_key=True))
        values += [str(v) for m, v in members.items() if m in PRIVATE]
    return values


def test_a_dump_of_the_database_never_yields_a_private_key(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK]
) -> None:
    ring = KeyRing(store, Policy())
    ring.init(["RS256", "ES256", "EdDSA"])
    ring.rotate()
    ring.import_key(key_pool[0])  # imported with its private half: only the public is kept
    secrets = _kids_and_private_values([k.key for k in store.read().keys if k.key.has_private])
    secrets += _kids_and_private_values([key_pool[0]])
    assert len(secrets) > 20
    db = _db(store.location)
    member = re.compile(r'"(?:d|p|q|dp|dq|qi|oth|k)"\s*:')
    rows = postgres.execute(
        "SELECT to_jsonb(k)::text, public_jwk, encode(private_jwk, 'escape') "
        "FROM agentrouter_auth.keys k",
        dbname=db,
    )
    assert len(rows) == 7
    for as_json, public, sealed in rows:
        assert not PRIVATE & set(public)
        assert not member.search(as_json)
        for text in (as_json, sealed or ""):
            assert not any(secret in text for secret in secrets)
    dump = subprocess.run(
        [str(postgres.bin("pg_dump")), "--data-only", "--inserts", store.location],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "agentrouter_auth.keys" in dump
    assert not member.search(dump)
    assert not any(secret in dump for secret in secrets)


def test_keys_sealed_under_one_kek_do_not_open_under_another(
    pg_dsn: str, tmp_path: Path, store: PostgresStore
) -> None:
    KeyRing(store, Policy()).init(["ES256"])
    other = _store(pg_dsn, write_kek(tmp_path / "other"))
    expected = r"key \S+: the private key sealed under KEK [0-9a-f]{16}, which is not among"
    with pytest.raises(KeyStoreError, match=expected):
        other.read()
    other.close()


def _row(postgres: PostgresServer, db: str, kid: str) -> tuple[bytes, bytes]:
    ((sealed, kek_id),) = postgres.execute(
        "SELECT private_jwk, kek_id FROM agentrouter_auth.keys WHERE kid = %s", [kid], dbname=db
    )
    return bytes(sealed), bytes(kek_id)


def test_a_sealed_key_swapped_between_rows_or_edited_fails_naming_the_kid(
    postgres: PostgresServer, store: PostgresStore
) -> None:
    ring = KeyRing(store, Policy())
    ring.init(["ES256", "EdDSA"])
    ring.rotate(["ES256"])
    es256 = sorted((k for k in store.read().keys if k.entry.alg == "ES256"), key=lambda k: k.kid)
    first, second = (k.kid for k in es256)
    db = _db(store.location)
    sealed_first, kek_id = _row(postgres, db, first)
    sealed_second, _ = _row(postgres, db, second)
    update = "UPDATE agentrouter_auth.keys SET private_jwk = %s WHERE kid = %s"
    postgres.execute(update, [sealed_second, first], dbname=db)
    postgres.execute(update, [sealed_first, second], dbname=db)
    with pytest.raises(KeyStoreError, match=f"key {first}: the private key does not decrypt under "
                       f"KEK {kek_id.hex()}") as failure:  # fmt: skip
        store.read()
    assert "edited, or copied from another key's row" in str(failure.value)
    postgres.execute(update, [sealed_first, first], dbname=db)
    postgres.execute(update, [sealed_second, second], dbname=db)
    assert len(store.read().keys) == 3
    edited = bytearray(sealed_second)
    edited[20] ^= 0x01
    postgres.execute(update, [bytes(edited), second], dbname=db)
    with pytest.raises(KeyStoreError, match=f"key {second}: the private key does not decrypt"):
        store.read()


def test_rekey_moves_every_private_key_to_the_first_kek(
    postgres: PostgresServer, pg_dsn: str, tmp_path: Path, kek_file: Path
) -> None:
    old_store = _store(pg_dsn, kek_file)
    ring = KeyRing(old_store, Policy())
    ring.init(["ES256", "EdDSA"])
    ring.import_key(generate_key("ES256"))
    before = {k.kid: k.key.export(private_key=k.key.has_private) for k in old_store.read().keys}
    new_kek = write_kek(tmp_path / "new")
    both = _store(pg_dsn, new_kek, kek_file)
    generation = both.generation()
    assert both.rekey() == (2, 2)  # two private keys; the import has none
    assert both.generation() == generation + 1  # one transaction
    new_id = read_kek(str(new_kek)).id
    rows = postgres.execute(
        "SELECT kek_id FROM agentrouter_auth.keys WHERE private_jwk IS NOT NULL", dbname=_db(pg_dsn)
    )
    assert [bytes(row[0]) for row in rows] == [new_id, new_id]
    macs = postgres.execute("SELECT mac_kek_id FROM agentrouter_auth.keys", dbname=_db(pg_dsn))
    assert [bytes(row[0]) for row in macs] == [new_id] * 3  # every row re-MACed, the import too
    only_new = _store(pg_dsn, new_kek)
    after = {k.kid: k.key.export(private_key=k.key.has_private) for k in only_new.read().keys}
    assert after == before
    assert both.rekey() == (2, 0)
    with pytest.raises(KeyStoreError, match="not among the KEKs given"):
        old_store.read()
    for opened in (old_store, both, only_new):
        opened.close()


def test_without_a_kek_the_store_is_refused_before_any_connection(pg_dsn: str) -> None:
    with pytest.raises(KeyStoreError, match="a PostgreSQL key store needs --kek-file") as failure:
        open_store(pg_dsn)
    assert failure.value.location == pg_dsn  # no password to hide here


# -- rows refused by kid -------------------------------------------------------------------------


def _seed(store: PostgresStore, keys: list[jwk.JWK]) -> None:
    with store.transaction() as tx:
        for index, key in enumerate(keys):
            state = State.ACTIVE if index == 0 else State.PENDING
            tx.add(
                key, Entry(key["kid"], key["alg"], state, T0, activated=T0 if index == 0 else None)
            )


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("UPDATE agentrouter_auth.keys SET alg = 'ES384' WHERE kid = %s",
         "alg ES256 but the row says ES384"),
        ("UPDATE agentrouter_auth.keys SET public_jwk = public_jwk || '{\"kid\": \"other\"}' "
         "WHERE kid = %s", "is not the key's RFC 7638 thumbprint"),
        ("UPDATE agentrouter_auth.keys SET public_jwk = public_jwk || '{\"d\": \"AAAA\"}' "
         "WHERE kid = %s", "the public JWK holds private member(s) d"),
        ("UPDATE agentrouter_auth.keys SET private_jwk = NULL, kek_id = NULL WHERE kid = %s",
         "active key has no private half to sign with"),
        ("UPDATE agentrouter_auth.keys SET kek_id = '\\x0000000000000000' WHERE kid = %s",
         "sealed under KEK 0000000000000000, which is not among the KEKs given"),
    ],
)  # fmt: skip
def test_a_damaged_row_is_refused_naming_its_kid(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK], sql: str, reason: str
) -> None:
    key = key_pool[2]
    _seed(store, [key])
    ring = KeyRing(store, Policy())
    good = ring.load()
    postgres.execute(sql, [key["kid"]], dbname=_db(store.location))
    with pytest.raises(KeyStoreError) as failure:
        store.read()
    assert str(failure.value).startswith(f"{store.description}: key {key['kid']}: ")
    assert reason in str(failure.value)
    assert "\n" not in str(failure.value)
    assert ring.refresh() is False
    assert ring.snapshot() is good  # still serving the last good set
    assert not ring.status().healthy


def test_a_private_member_in_the_public_column_is_never_published(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK]
) -> None:
    key = key_pool[4]
    _seed(store, [key])
    private = json.loads(key.export(private_key=True))
    postgres.execute(
        "UPDATE agentrouter_auth.keys SET public_jwk = %s WHERE kid = %s",
        [json.dumps(private), key["kid"]],
        dbname=_db(store.location),
    )
    with pytest.raises(
        KeyStoreError, match=f"key {key['kid']}: the public JWK holds private member"
    ):
        store.read()


def test_a_private_half_of_another_key_is_refused(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK]
) -> None:
    first, second = key_pool[2], key_pool[3]
    _seed(store, [first])
    members = json.loads(first.export(private_key=True))
    members["d"] = json.loads(second.export(private_key=True))["d"]
    kek_id, sealed = store.envelope.seal(first["kid"], "ES256", json.dumps(members).encode())
    postgres.execute(
        "UPDATE agentrouter_auth.keys SET private_jwk = %s, kek_id = %s WHERE kid = %s",
        [sealed, kek_id, first["kid"]],
        dbname=_db(store.location),
    )
    with pytest.raises(
        KeyStoreError, match=f"key {first['kid']}: the private half does not belong"
    ):
        store.read()


def test_the_database_refuses_two_active_keys_of_one_algorithm(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK]
) -> None:
    _seed(store, key_pool[2:4])
    with pytest.raises(psycopg.errors.UniqueViolation):
        postgres.execute(
            "UPDATE agentrouter_auth.keys SET state = 'active'", dbname=_db(store.location)
        )


# -- the generation, its NOTIFY, and the lock -----------------------------------------------------


def test_every_changing_transaction_bumps_the_generation_once_and_notifies_it(
    postgres: PostgresServer, store: PostgresStore, key_pool: list[jwk.JWK]
) -> None:
    start = store.generation()  # migrates first: sealing the ring state notifies too
    listener = psycopg.connect(store.location, **store.connection_parameters())
    listener.execute(f"LISTEN {CHANNEL}")
    fingerprint = store.fingerprint()
    _seed(store, key_pool[2:4])  # two inserts, one transaction
    assert store.generation() == start + 1
    assert store.fingerprint() != fingerprint
    fingerprint = store.fingerprint()
    with store.transaction():
        pass  # nothing changed: nothing written
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.delete(key_pool[3]["kid"])
        raise RuntimeError("rolled back")
    assert store.fingerprint() == fingerprint
    postgres.execute(  # a change by hand counts too
        "UPDATE agentrouter_auth.keys SET state = 'retired', retired = 1 WHERE state = 'pending'",
        dbname=_db(store.location),
    )
    assert store.generation() == start + 2
    assert store.fingerprint() != fingerprint
    payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]
    assert payloads == [str(start + 1), str(start + 2)]
    listener.close()


def test_a_second_store_waits_for_the_lock_and_sees_the_step_already_taken(
    pg_dsn: str, kek_file: Path
) -> None:
    """Two replicas take a due step at once: the second waits for the first's transaction,
    then re-reads, finds nothing due, and writes nothing."""
    policy = Policy()
    first, second = _store(pg_dsn, kek_file), _store(pg_dsn, kek_file)
    KeyRing(first, policy, clock=lambda: T0).init(["ES256"])
    due = int(T0 + policy.rotation_period - policy.publish_ahead)
    ring_a = KeyRing(first, policy, clock=lambda: due)
    ring_b = KeyRing(second, policy, clock=lambda: due)
    results: list[int] = []
    with first.transaction() as tx:  # replica A holds the lock, mid-step
        thread = threading.Thread(target=lambda: results.append(len(ring_b.step())))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # B waits on the advisory lock
        key = generate_key("ES256")
        tx.add(key, Entry(key["kid"], "ES256", State.PENDING, due))  # A's step
    thread.join(timeout=30)
    assert results == [0]  # B re-read under the lock: the successor exists
    assert ring_a.step() == []
    assert sorted(k.entry.state.value for k in second.read().keys) == ["active", "pending"]
    first.close()
    second.close()


# -- connections, passwords --------------------------------------------------------------------


def test_a_password_and_a_password_file_are_honoured_and_never_shown(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, tmp_path: Path
) -> None:
    db = _db(pg_dsn)
    postgres.execute("DROP ROLE IF EXISTS keyring_user")
    postgres.execute("CREATE ROLE keyring_user LOGIN PASSWORD 'hunter2-s3cret'")
    postgres.execute(f"ALTER DATABASE {db} OWNER TO keyring_user")
    with_password = postgres.dsn(db, user="keyring_user", password="hunter2-s3cret")
    store = _store(with_password, kek_file)
    KeyRing(store, Policy()).init(["EdDSA"])
    assert store.description == with_password.replace("hunter2-s3cret", "***")
    store.close()

    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres.port}:{db}:keyring_user:hunter2-s3cret\n")
    passfile.chmod(0o600)
    by_file = postgres.dsn(db, user="keyring_user") + f"?passfile={passfile}&sslmode=disable"
    store = _store(by_file, kek_file)
    assert len(store.read().keys) == 1
    store.close()

    wrong = postgres.dsn(db, user="keyring_user", password="wrong-guess") + "?sslmode=disable"
    with pytest.raises(KeyStoreError, match="password authentication failed") as failure:
        _store(wrong, kek_file).read()
    assert "wrong-guess" not in str(failure.value)
    assert "\n" not in str(failure.value)
    postgres.execute(f"ALTER DATABASE {db} OWNER TO postgres")
    postgres.execute("REASSIGN OWNED BY keyring_user TO postgres", dbname=db)
    postgres.execute("DROP OWNED BY keyring_user", dbname=db)


@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgres://u:p%40ss@h:5432/db?sslmode=require", "postgres://u:***@h:5432/db?sslmode=require"),
        ("postgresql://u@h/db?password=pw&sslmode=verify-full",
         "postgresql://u@h/db?password=***&sslmode=verify-full"),
        ("postgresql://u@h/db?sslpassword=pw&passfile=/run/pgpass",
         "postgresql://u@h/db?sslpassword=***&passfile=/run/pgpass"),
        ("postgresql://h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"),
        # Typos (attack F8c): a broken scheme separator makes a path of the URL, a misspelled
        # keyword or an encoded '=' a DSN or query libpq cannot parse; no value of it shows.
        ("postgresql:/u:SECRET@h/db", "postgresql:/u:***@h/db"),
        ("postgresql//u:SECRET@h/db", "postgresql//u:***@h/db"),
        ("postgres:u:SECRET@h/db", "postgres:u:***@h/db"),
        ("host=h passwd=SECRET", "host=*** passwd=***"),
        ("host=h pasword='SEC RET' dbname=d", "host=*** pasword=*** dbname=***"),
        ("postgresql://u@h/db?user=u&password%3DSECRET", "postgresql://u@h/db?user=***&***"),
        ("postgresql://u@h/db?sslmode=require&passwd=SECRET",
         "postgresql://u@h/db?sslmode=***&passwd=***"),
        ("/var/lib/keys@2026", "/var/lib/keys@2026"),
    ],
)  # fmt: skip
def test_redacted_hides_every_password_form(location: str, shown: str) -> None:
    assert redacted(location) == shown


@pytest.mark.parametrize(
    "location",
    ["host=h user=u passwd=SECRET", "host=h pasword=SECRET",
     "postgresql://u@h/db?user=u&password%3DSECRET"],
)  # fmt: skip
def test_a_refusal_of_a_mistyped_location_shows_no_value_and_stays_legible(
    location: str, kek_file: Path
) -> None:
    with pytest.raises(KeyStoreError, match="not a PostgreSQL URL libpq accepts") as refused:
        open_store(location, keks=[read_kek(str(kek_file))])
    assert "SECRET" not in str(refused.value)
    assert "=u" not in str(refused.value)
    said = str(refused.value).rsplit("accepts: ", 1)[1]
    assert "connection option" in said or "key/value separator" in said, said  # legible


def test_an_unreachable_database_is_one_line_and_the_fingerprint_says_so(
    postgres: PostgresServer, kek_file: Path
) -> None:
    closed = postgres.dsn("nowhere").replace(f":{postgres.port}/", ":1/")
    store = _store(closed, kek_file, timeout=2)
    with pytest.raises(KeyStoreError, match=r"cannot connect: .*Connection refused") as failure:
        store.read()
    assert "\n" not in str(failure.value)
    found = store.fingerprint()
    assert isinstance(found, tuple)
    kind, reason = found
    assert kind == "unreachable"
    assert "Connection refused" in reason
    with pytest.raises(KeyStoreError, match="not a PostgreSQL URL libpq accepts: invalid URI"):
        open_store("postgresql://h/db?no_such_parameter=1", keks=store.envelope.keks)


def test_a_change_waits_for_the_rings_lock_only_so_long(pg_dsn: str, kek_file: Path) -> None:
    """A session that holds the ring's lock and stops answering must not stop every replica:
    a change gives up after `lock_timeout` with a one-line reason, and works once it is free."""
    store = _store(pg_dsn, kek_file, lock_timeout=0.5)
    store.migrate()
    with psycopg.connect(pg_dsn) as holder:  # not autocommit: the lock lasts its transaction
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [RING_LOCK])
        started = time.monotonic()
        refused = pytest.raises(KeyStoreError, match="held the key ring's lock for over 0.5s")
        with refused, store.transaction():
            pass
        waited = time.monotonic() - started
        holder.rollback()
    assert waited < 5  # gave up, rather than waiting for the holder
    key = generate_key("EdDSA")
    with store.transaction() as tx:
        tx.add(key, Entry(key["kid"], "EdDSA", State.ACTIVE, T0, activated=T0))
    assert [k.kid for k in store.read().keys] == [key["kid"]]
    store.close()


# -- the rows' integrity MAC ---------------------------------------------------------------------


def _attacker_row(alg: str = "ES256") -> tuple[str, str]:
    """An attacker's own key as an imported, published row: kid and public JWK (JSON)."""
    key = generate_key(alg)
    return key["kid"], key.export_public()


_INSERT_BY_HAND = (
    "INSERT INTO agentrouter_auth.keys (kid, alg, state, origin, created, public_jwk, mac_kek_id, "
    "mac) VALUES (%s, 'ES256', 'published', 'imported', 1, %s, %s, %s)"
)


@pytest.mark.parametrize("mac", ["none", "forged"])
def test_a_row_added_by_hand_is_never_published(
    postgres: PostgresServer, store: PostgresStore, mac: str
) -> None:
    ring = KeyRing(store, Policy())
    ring.init(["ES256"])
    good = ring.load()
    kid, public = _attacker_row()
    forged = (store.envelope.sealing.id, bytes(32)) if mac == "forged" else (None, None)
    postgres.execute(_INSERT_BY_HAND, [kid, public, *forged], dbname=_db(store.location))
    reason = "has no integrity MAC" if mac == "none" else "integrity MAC does not verify"
    with pytest.raises(KeyStoreError, match=f"key {kid}: the row('s)? {reason}") as failure:
        store.read()
    assert "\n" not in str(failure.value)
    assert ring.refresh() is False
    assert ring.snapshot() is good  # the last good set, without the attacker's key
    assert kid.encode() not in ring.snapshot().json
    assert not ring.status().healthy
    with pytest.raises(KeyStoreError, match=f"key {kid}: "):
        KeyRing(store, Policy()).load()  # a replica starting now serves nothing rather than it


def _execute_together(dsn: str, *statements: str) -> None:
    """Statements in one transaction, as a superuser would type them into psql."""
    with psycopg.connect(dsn) as conn:
        for statement in statements:
            conn.execute(statement.encode())


@pytest.mark.parametrize(
    ("edit", "victim"),
    [
        # A retired key brought back to sign (the active one retired to make room).
        (["UPDATE agentrouter_auth.keys SET state = 'retired', retired = 1 WHERE state = 'active'",
          "UPDATE agentrouter_auth.keys SET state = 'active', retired = NULL "
          "WHERE state = 'retired' AND retired <> 1"], "either"),
        # A retired key aged so that it is deleted early (its tokens then fail to verify).
        (["UPDATE agentrouter_auth.keys SET retired = retired - 31536000 "
          "WHERE state = 'retired'"], "retired"),
        # A pending key published for good, so it is never promoted nor deleted.
        (["UPDATE agentrouter_auth.keys SET state = 'published' WHERE state = 'pending'"],
         "pending"),
        (["UPDATE agentrouter_auth.keys SET created = created + 1 WHERE state = 'active'"],
         "active"),
    ],
)  # fmt: skip
def test_a_state_or_time_edited_by_hand_is_refused(
    store: PostgresStore, edit: list[str], victim: str
) -> None:
    keys = [generate_key("ES256") for _ in range(3)]
    entries = [
        Entry(keys[0]["kid"], "ES256", State.RETIRED, T0 - 20, activated=T0 - 20, retired=T0),
        Entry(keys[1]["kid"], "ES256", State.ACTIVE, T0 - 10, activated=T0),
        Entry(keys[2]["kid"], "ES256", State.PENDING, T0),
    ]
    with store.transaction() as tx:
        for key, entry in zip(keys, entries, strict=True):
            tx.add(key, entry)
    by_state = {entry.state.value: entry.kid for entry in entries}
    ring = KeyRing(store, Policy(), clock=lambda: T0)
    good = ring.load()
    _execute_together(store.location, *edit)
    with pytest.raises(KeyStoreError, match="integrity MAC does not verify") as failure:
        store.read()
    kids = set(by_state.values()) if victim == "either" else {by_state[victim]}
    assert any(str(failure.value).startswith(f"{store.description}: key {kid}: ") for kid in kids)
    assert ring.refresh() is False
    assert ring.snapshot() is good


def test_a_row_copied_from_a_database_under_another_kek_is_refused(
    postgres: PostgresServer, store: PostgresStore, tmp_path: Path
) -> None:
    KeyRing(store, Policy()).init(["ES256"])
    other_dsn = postgres.create_database()
    other = _store(other_dsn, write_kek(tmp_path / "other"))
    imported = generate_key("EdDSA")
    KeyRing(other, Policy()).import_key(imported)  # a public row: nothing sealed to fail first
    other.close()
    columns = (
        "kid, alg, state, origin, created, activated, retired, public_jwk, private_jwk, kek_id, "
        "mac_kek_id, mac"
    )
    (row,) = postgres.execute(f"SELECT {columns} FROM agentrouter_auth.keys", dbname=_db(other_dsn))
    postgres.execute(
        f"INSERT INTO agentrouter_auth.keys ({columns}) VALUES "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [*row[:7], json.dumps(row[7]), *row[8:]],
        dbname=_db(store.location),
    )
    with pytest.raises(
        KeyStoreError, match=f"key {imported['kid']}: the row's integrity MAC MACed under KEK "
        "[0-9a-f]{16}, which is not among the KEKs given"
    ):  # fmt: skip
        store.read()
    postgres.drop_database(_db(other_dsn))


def test_keys_copied_between_databases_are_sealed_and_maced_under_the_destinations_kek(
    postgres: PostgresServer, store: PostgresStore, tmp_path: Path, key_pool: list[jwk.JWK]
) -> None:
    ring = KeyRing(store, Policy())
    ring.init(["ES256", "EdDSA"])
    ring.import_key(key_pool[0])
    other_kek = write_kek(tmp_path / "other")
    other_dsn = postgres.create_database()
    other = _store(other_dsn, other_kek)
    copy_keys(store, other)
    other_id = read_kek(str(other_kek)).id
    rows = postgres.execute(
        "SELECT mac_kek_id, coalesce(kek_id, mac_kek_id) FROM agentrouter_auth.keys",
        dbname=_db(other_dsn),
    )
    assert [tuple(bytes(v) for v in row) for row in rows] == [(other_id, other_id)] * 3
    assert other.read().entries == store.read().entries
    other.close()
    postgres.drop_database(_db(other_dsn))


# -- a password in a URL libpq cannot parse --------------------------------------------------------

BAD_URLS = [
    # libpq quotes the token it cannot parse: here, the password itself.
    ("postgresql://postgres:Hid%zzDen42@127.0.0.1/db", ("Hid", "Den42")),
    ("postgres://u:Hid%41%zzDen42@127.0.0.1:5432/db?sslmode=disable", ("Hid", "Den42")),
    ("postgresql://u@127.0.0.1/db?password=pw%zzQuux9", ("pw%zz", "Quux9")),
    ("postgresql://u@127.0.0.1/db?sslmode=require&sslpassword=pw%zzQuux9", ("pw%zz", "Quux9")),
]


@pytest.mark.parametrize(("location", "secrets"), BAD_URLS)
def test_a_url_libpq_cannot_parse_is_refused_without_its_password(
    kek_file: Path, location: str, secrets: tuple[str, ...]
) -> None:
    for attempt in (
        lambda: check_location(location),
        lambda: open_store(location, keks=[read_kek(str(kek_file))]),
        lambda: PostgresStore(location, [read_kek(str(kek_file))], description="db"),
    ):
        with pytest.raises(KeyStoreError, match="invalid percent-encoded token") as failure:
            attempt()
        message = str(failure.value)
        assert "\n" not in message
        assert not [secret for secret in secrets if secret in message], message


@pytest.mark.slow  # measured: ~3 s a case
@pytest.mark.parametrize(("location", "secrets"), BAD_URLS[::2])
def test_no_command_shows_the_password_of_a_url_libpq_cannot_parse(
    tmp_path: Path, kek_file: Path, location: str, secrets: tuple[str, ...]
) -> None:
    keks = ["--kek-file", str(kek_file)]
    directory = str(tmp_path / "keys")
    commands = [
        (["keys", "list", "--key-store", location, *keks], {}),
        (["keys", "copy", "--key-store", directory, "--to", location, *keks], {}),
        (["keys", "copy", "--key-store", directory, "--from", location, "--to", directory + "2",
          *keks], {}),
        (["serve", "--key-store", location, *keks], {}),
        (["serve", *keks], {"AGENTROUTER_AUTH_KEY_STORE": location}),
    ]  # fmt: skip
    for argv, env in commands:
        result = subprocess.run(
            [sys.executable, "-m", "agentrouter_auth", *argv],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, **env}, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode != 0, argv
        assert "invalid percent-encoded token" in result.stderr, (argv, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (argv, result.stderr)
        shown = result.stdout + result.stderr
        assert not [secret for secret in secrets if secret in shown], (argv, shown)


# -- a signing state without a private half ------------------------------------------------------


def test_no_change_writes_a_pending_or_active_key_without_its_private_half(
    store: PostgresStore,
) -> None:
    """Else the store writes a state it then refuses to read: a public-only pending key is
    promoted, and every replica's reads and steps fail from then on."""
    ring = KeyRing(store, Policy(), clock=lambda: T0)
    ring.init(["ES256"])
    imported = generate_key("ES256")
    ring.import_key(imported)
    before, generation = store.read().entries, store.generation()
    public = jwk.JWK(**json.loads(imported.export_public()))
    other = generate_key("ES256")
    other_public = jwk.JWK(**json.loads(other.export_public()))
    refused = "key {}: {} key has no private half to sign with; nothing was written"
    with pytest.raises(
        KeyStoreError, match=refused.format(other["kid"], "pending")
    ), store.transaction() as tx:  # fmt: skip
        tx.add(other_public, Entry(other["kid"], "ES256", State.PENDING, T0))
    active = store.read().active("ES256")
    assert active is not None
    entry = next(e for e in before if e.kid == imported["kid"])
    with pytest.raises(
        KeyStoreError, match=refused.format(public["kid"], "active")
    ), store.transaction() as tx:  # fmt: skip
        tx.update(replace(active.entry, state=State.RETIRED, retired=T0))
        tx.update(replace(entry, state=State.ACTIVE, activated=T0))
    assert store.read().entries == before  # nothing was written
    assert store.generation() == generation


def test_a_pending_row_without_a_private_half_is_refused_when_read(
    postgres: PostgresServer, store: PostgresStore
) -> None:
    """A row an earlier version could write (its MAC is good): refused at once, naming it,
    rather than loaded, promoted, and then refused by every read."""
    KeyRing(store, Policy()).init(["ES256"])
    key = generate_key("ES256")
    public = json.loads(key.export_public())
    columns = [key["kid"], "ES256", "pending", "generated", T0, None, None, public, None, None]
    mac_kek_id, mac = store.envelope.mac(row_mac_message(columns))
    postgres.execute(
        "INSERT INTO agentrouter_auth.keys (kid, alg, state, origin, created, public_jwk, "
        "mac_kek_id, mac) VALUES (%s, 'ES256', 'pending', 'generated', %s, %s, %s, %s)",
        [key["kid"], T0, json.dumps(public), mac_kek_id, mac],
        dbname=_db(store.location),
    )
    with pytest.raises(
        KeyStoreError, match=f"key {key['kid']}: pending key has no private half to sign with"
    ):
        store.read()


# -- the ring row --------------------------------------------------------------------------------


def test_a_deleted_ring_row_is_an_error_until_the_next_change_makes_it_again(
    postgres: PostgresServer, store: PostgresStore
) -> None:
    ring = KeyRing(store, Policy())
    ring.init(["ES256"])
    good = ring.load()
    assert ring.status().healthy
    postgres.execute("DELETE FROM agentrouter_auth.ring", dbname=_db(store.location))
    with pytest.raises(KeyStoreError, match="the row of agentrouter_auth.ring is missing"):
        store.read()
    assert ring.refresh() is False
    assert ring.snapshot() is good
    assert not ring.status().healthy  # health says so, rather than serving a frozen set
    listener = psycopg.connect(store.location, **store.connection_parameters())
    listener.execute(f"LISTEN {CHANNEL}")
    other = _store(store.location, *[Path(kek.path) for kek in store.envelope.keks])
    KeyRing(other, Policy()).rotate()  # another replica's change: the trigger makes the row again
    assert [n.payload for n in listener.notifies(timeout=2, stop_after=1)] == ["1"]
    listener.close()
    other.close()
    assert store.generation() == 1
    assert ring.refresh() is True  # the change is seen
    assert ring.status().healthy
    assert len(store.read().keys) == 2


# -- sessions that stop answering ----------------------------------------------------------------


def test_connections_keep_alive_and_bound_statements_unless_the_url_says_otherwise(
    pg_dsn: str, kek_file: Path
) -> None:
    parameters = _store(pg_dsn, kek_file).connection_parameters()
    assert parameters["keepalives"] == 1
    assert parameters["tcp_user_timeout"] > 0
    assert parameters["options"] == "-c statement_timeout=30000"
    given = _store(
        pg_dsn + "?keepalives_idle=99&options=-c%20search_path%3Dx", kek_file
    ).connection_parameters()
    assert "keepalives_idle" not in given  # the URL's own stands
    assert given["options"] == "-c search_path=x -c statement_timeout=30000"
    with psycopg.connect(pg_dsn, **parameters) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)


def test_a_backend_that_stops_answering_does_not_hold_the_poll(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    store = _store(pg_dsn, kek_file, timeout=1.0)
    KeyRing(store, Policy()).init(["ES256"])
    healthy = store.fingerprint()
    pids = [row[0] for row in postgres.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
        [_db(pg_dsn), "agentrouter-auth"],
    )]  # fmt: skip
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    found: list[object] = []
    poll = threading.Thread(target=lambda: found.append(store.fingerprint()), daemon=True)
    try:
        poll.start()
        poll.join(timeout=8)  # bounded: no hang on the stopped sessions
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert found, "fingerprint() still waits on a stopped backend"
    poll.join(timeout=30)
    assert found[0] == healthy or (isinstance(found[0], tuple) and found[0][0] == "unreachable")
    if found[0] != healthy:
        assert "within 1s" in str(found[0])
    assert store.fingerprint() == healthy
    store.close()


def test_a_migration_waits_for_another_ones_lock_only_so_long(pg_dsn: str, kek_file: Path) -> None:
    store = _store(pg_dsn, kek_file, migration_lock_timeout=0.5)
    with psycopg.connect(pg_dsn, autocommit=True) as holder:  # a migration that never ends
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK])
        result: list[BaseException] = []

        def migrate() -> None:
            try:
                store.migrate()
            except KeyStoreError as err:
                result.append(err)

        attempt = threading.Thread(target=migrate, daemon=True)
        attempt.start()
        attempt.join(timeout=10)
        holder.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK])
    attempt.join(timeout=30)
    assert result, "the migration waited for the lock beyond its timeout"
    assert "migrating the schema for over 0.5s" in str(result[0])
    assert "\n" not in str(result[0])
    assert [m.version for m in store.migrate()] == [m.version for m in migrations()]
    store.close()


# -- the change feed -----------------------------------------------------------------------------


def test_a_notify_flood_wakes_the_feed_a_few_times_not_once_per_notification(
    store: PostgresStore,
) -> None:
    """Attack F8a: anyone with CONNECT may NOTIFY the channel; each notification cost a wake-up
    (a fingerprint query, a metrics flush, a health update). 2,000 notifications, each its own
    transaction, sent as fast as one session can, must cost far fewer wake-ups."""
    KeyRing(store, Policy()).init(["ES256"])
    feed = store.change_feed()
    sent = 2000

    def flood() -> None:
        with psycopg.connect(store.location, autocommit=True) as conn:
            for number in range(sent):
                conn.execute(f"NOTIFY agentrouter_auth_keys, '{number}'")

    async def count() -> int:
        assert await feed.wait(5.0)  # the first wait opens the session: reported as a change
        flooding = asyncio.create_task(asyncio.to_thread(flood))
        wakes = 0
        while True:
            if await feed.wait(2.0):
                wakes += 1
            elif flooding.done():
                break
        await flooding
        await feed.close()
        return wakes

    wakes = asyncio.run(count())
    assert 1 <= wakes <= sent // 20, f"{sent} notifications woke the feed {wakes} times"
