"""`store migrate`, `store rekey` and `keys copy`, run in-process against real stores: a
directory and a database on the suite's own PostgreSQL server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth import cli
from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.kek import read_kek
from agentrouter_auth.keys.postgres import latest_version, migrations
from agentrouter_auth.keys.store import Entry, Origin, State
from tests.keystores import StoreFactory
from tests.support import PostgresServer, write_kek


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_store_migrate_applies_once_then_has_nothing_to_do(
    capsys: pytest.CaptureFixture[str], pg_dsn: str, kek_file: Path
) -> None:
    store = ["--key-store", pg_dsn, "--kek-file", str(kek_file)]
    status, _, err = run(capsys, "store", "migrate", *store)
    assert status == 0, err
    for migration in migrations():
        assert f"applied migration {migration.version:04d} {migration.name}" in err
    assert f"is at version {latest_version()}" in err
    status, _, err = run(capsys, "store", "migrate", *store)
    assert status == 0, err
    assert "applied migration" not in err


def test_store_rekey_moves_every_key_to_the_first_kek(
    capsys: pytest.CaptureFixture[str],
    postgres: PostgresServer,
    pg_dsn: str,
    kek_file: Path,
    tmp_path: Path,
) -> None:
    old = ["--key-store", pg_dsn, "--kek-file", str(kek_file)]
    assert run(capsys, "keys", "init", *old, "--alg", "ES256", "--alg", "EdDSA")[0] == 0
    new_kek = write_kek(tmp_path / "new-kek")
    both = ["--key-store", pg_dsn, "--kek-file", str(new_kek), "--kek-file", str(kek_file)]
    status, _, err = run(capsys, "store", "rekey", *both)
    assert status == 0, err
    new_id = read_kek(str(new_kek)).id.hex()
    assert f"re-encrypted 2 private key(s) under the KEK {new_id} ({new_kek}); 2 were under" in err
    rows = postgres.execute(
        "SELECT DISTINCT encode(kek_id, 'hex') FROM agentrouter_auth.keys",
        dbname=pg_dsn.rsplit("/", 1)[1],
    )
    assert rows == [(new_id,)]
    only_new = ["--key-store", pg_dsn, "--kek-file", str(new_kek)]
    assert run(capsys, "token", "sign", *only_new, "--claims", "{}", "--alg", "EdDSA")[0] == 0
    status, _, err = run(capsys, "keys", "list", *old)
    assert status == 1
    assert re.fullmatch(r"agentrouter-auth: error: .*not among the KEKs given.*\n", err)


@pytest.mark.parametrize(
    ("command", "reason"),
    [("migrate", "it has no schema to migrate"),
     ("rekey", "its private keys are files of mode 0600, not encrypted")],
)  # fmt: skip
def test_store_commands_refuse_a_directory_store_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str, reason: str
) -> None:
    status, _, err = run(capsys, "store", command, "--key-store", str(tmp_path))
    assert status == 1
    assert err == (
        f"agentrouter-auth: error: store {command}: {tmp_path} is a directory store: {reason}\n"
    )


def _entries(capsys: pytest.CaptureFixture[str], *store: str) -> list[dict[str, object]]:
    status, out, err = run(capsys, "keys", "list", "--json", *store)
    assert status == 0, err
    keys: list[dict[str, object]] = json.loads(out)["keys"]
    return keys


def test_keys_copy_moves_a_ring_to_postgresql_and_back_keeping_everything(
    capsys: pytest.CaptureFixture[str],
    key_pool: list[jwk.JWK],
    pg_dsn: str,
    kek_file: Path,
    tmp_path: Path,
) -> None:
    """Every key of every state and origin, with its times, survives a round trip through
    the other kind of store; the private halves still sign."""
    es256, eddsa, rsa = key_pool[2:4], key_pool[4:6], key_pool[0]
    directory = ["--key-store", str(tmp_path / "source")]
    with DirectoryStore(tmp_path / "source").transaction() as tx:
        tx.add(es256[0], Entry(es256[0]["kid"], "ES256", State.RETIRED, 10, 20, 30))
        tx.add(es256[1], Entry(es256[1]["kid"], "ES256", State.ACTIVE, 15, 30))
        tx.add(eddsa[0], Entry(eddsa[0]["kid"], "EdDSA", State.ACTIVE, 11, 12))
        tx.add(eddsa[1], Entry(eddsa[1]["kid"], "EdDSA", State.PENDING, 40))
        public = jwk.JWK(**rsa.export_public(as_dict=True))
        tx.add(public, Entry(rsa["kid"], "RS256", State.PUBLISHED, 5, origin=Origin.IMPORTED))
    source = _entries(capsys, *directory)
    database = ["--key-store", pg_dsn, "--kek-file", str(kek_file)]
    status, _, err = run(capsys, "keys", "copy", *directory, "--to", pg_dsn,
                         "--kek-file", str(kek_file))  # fmt: skip
    assert status == 0, err
    assert _entries(capsys, *database) == source
    back = tmp_path / "back"
    status, _, err = run(capsys, "keys", "copy", "--from", pg_dsn, "--to", str(back),
                         "--kek-file", str(kek_file))  # fmt: skip
    assert status == 0, err
    assert _entries(capsys, "--key-store", str(back)) == source
    for store in (database, ["--key-store", str(back)]):
        status, out, err = run(capsys, "token", "sign", *store, "--claims", "{}", "--alg", "ES256")
        assert status == 0, err
        assert out.count(".") == 2


def test_keys_copy_refuses_a_store_that_holds_keys_unless_replacing(
    capsys: pytest.CaptureFixture[str], store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    source = store_factory.fresh()
    source.seed(key_pool[2:3])
    store_factory.seed(key_pool[4:5])
    before = _entries(capsys, *store_factory.options())
    copy = ["keys", "copy", *source.options(), "--to", store_factory.location]
    status, _, err = run(capsys, *copy)
    assert status == 1
    assert err == (
        f"agentrouter-auth: error: {store_factory.location}: holds 1 key(s): keys copy fills an "
        "empty store; --replace makes it hold exactly the copied keys (deleting its others)\n"
    )
    assert _entries(capsys, *store_factory.options()) == before
    status, _, err = run(capsys, *copy, "--replace")
    assert status == 0, err
    assert [k["kid"] for k in _entries(capsys, *store_factory.options())] == [key_pool[2]["kid"]]
    status, _, err = run(capsys, "keys", "copy", *source.options(), "--to", source.location)
    assert status == 1
    assert "is the source: copy to another store" in err
