"""The real server on a PostgreSQL key store: it serves the keys the CLI made, follows a
rotation the CLI makes within its reload interval, and refuses a store it cannot use in one line
before binding a port."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from agentrouter_auth.grpc.health import KEYRING_HEALTH_NAME
from tests.support import PostgresServer

from .serverproc import AGENTROUTER_AUTH, ServerProcess, refused_in_one_line

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*AGENTROUTER_AUTH, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
    return result


def serve(pg_dsn: str, kek_file: Path, *extra: str) -> list[str]:
    return [*AGENTROUTER_AUTH, "serve", "--key-store", pg_dsn, "--kek-file", str(kek_file),
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", *extra]  # fmt: skip


def served_kids(server: ServerProcess) -> set[str]:
    reply = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10)
    assert reply.status_code == 200
    return {key["kid"] for key in reply.json()["keys"]}


@pytest.mark.slow
def test_a_rotation_from_the_cli_reaches_the_server_within_its_reload_interval(
    pg_dsn: str, kek_file: Path
) -> None:
    store = ["--key-store", pg_dsn, "--kek-file", str(kek_file)]
    cli("keys", "init", *store, "--alg", "ES256", "--alg", "EdDSA")
    listed = json.loads(cli("keys", "list", "--json", *store).stdout)["keys"]
    argv = serve(pg_dsn, kek_file, "--reload-interval", "200ms", "--rotation", "off")
    with ServerProcess(argv) as server:
        assert served_kids(server) == {key["kid"] for key in listed}
        ready = httpx.get(f"{server.base_url}/readyz", timeout=10)
        assert ready.status_code == 200
        cli("keys", "rotate", *store, "--alg", "EdDSA")
        rotated = {
            k["kid"] for k in json.loads(cli("keys", "list", "--json", *store).stdout)["keys"]
        }
        assert len(rotated) == 3
        deadline = time.monotonic() + 10  # a bounded wait; the server polls every 200ms
        while served_kids(server) != rotated and time.monotonic() < deadline:
            time.sleep(0.1)
        assert served_kids(server) == rotated
        assert httpx.get(f"{server.base_url}/readyz", timeout=10).status_code == 200
        (listening,) = server.events("listening")
        assert listening["key_store"] == pg_dsn
        assert server.terminate() == 0


@pytest.mark.slow
def test_the_server_rotates_on_its_own_and_a_token_verifies_against_what_it_serves(
    pg_dsn: str, kek_file: Path
) -> None:
    store = ["--key-store", pg_dsn, "--kek-file", str(kek_file)]
    policy = ["--rotation-period", "4s", "--publish-ahead", "2s", "--retain-after", "2s",
              "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "1s",
              "--stale-while-revalidate", "0s"]  # fmt: skip
    cli("keys", "init", *store, "--alg", "EdDSA")
    (first,) = json.loads(cli("keys", "list", "--json", *store).stdout)["keys"]
    with ServerProcess(serve(pg_dsn, kek_file, "--reload-interval", "200ms", *policy)) as server:
        deadline = time.monotonic() + 20
        while first["kid"] in served_kids(server) and time.monotonic() < deadline:
            time.sleep(0.2)  # created, promoted, retired and deleted by the server
        assert first["kid"] not in served_kids(server)
        token = cli("token", "sign", *store, *policy, "--claims", '{"sub": "svc"}').stdout.strip()
        header = json.loads(_b64(token.split(".")[0]))
        assert header["kid"] in served_kids(server)
        assert server.terminate() == 0


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_store_the_server_cannot_use_is_refused_in_one_line_before_binding(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, tmp_path: Path
) -> None:
    no_kek = [*AGENTROUTER_AUTH, "serve", "--key-store", pg_dsn]
    assert "a PostgreSQL key store needs --kek-file" in refused_in_one_line(no_kek)
    loose = tmp_path / "loose-kek"
    loose.write_text(kek_file.read_text())
    loose.chmod(0o644)
    assert refused_in_one_line(serve(pg_dsn, loose)) == (
        f"agentrouter-auth: error: --kek-file: {loose}: a key-encryption key must not be "
        "readable or writable by group or others (mode 0644); chmod 600 it"
    )
    cli("keys", "init", "--key-store", pg_dsn, "--kek-file", str(kek_file))
    postgres.execute(
        "INSERT INTO agentrouter_auth.schema_migrations (version, name) VALUES (999, 'future')",
        dbname=pg_dsn.rsplit("/", 1)[1],
    )
    line = refused_in_one_line(serve(pg_dsn, kek_file))
    assert line.startswith(
        f"agentrouter-auth: error: {pg_dsn}: the database schema is at version 999"
    )
    # A database that refuses us will not change its mind: refused, unlike one that is away.
    postgres.execute("DO $$ BEGIN CREATE ROLE serve_user LOGIN PASSWORD 'right'; "
                     "EXCEPTION WHEN duplicate_object THEN NULL; END $$")  # fmt: skip
    database = pg_dsn.rsplit("/", 1)[1]
    wrong_password = postgres.dsn(database, user="serve_user", password="wrong-hunter2")
    line = refused_in_one_line(serve(wrong_password, kek_file))
    assert "password authentication failed" in line
    assert "wrong-hunter2" not in line


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["select-only role", "read-only transactions"])
def test_a_store_that_cannot_be_written_is_reported_at_start_with_rotation_auto(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, limit: str
) -> None:
    """Attack F7: with the rotation policy already recorded, the start's check wrote nothing
    and took only an advisory lock (no write right needed), so a read-only store was healthy
    until the first step fell due. The check now proves the role can write each table."""
    from .test_postgres_faults import NOT_SERVING, health, readyz  # noqa: PLC0415

    database = pg_dsn.rsplit("/", 1)[1]
    cli("keys", "init", "--key-store", pg_dsn, "--kek-file", str(kek_file))
    with ServerProcess(serve(pg_dsn, kek_file, "--rotation", "auto")) as server:
        assert readyz(server)[1]["keyring"] == "ok"  # it records the policy
        assert server.terminate() == 0
    location = pg_dsn + "?options=-c%20default_transaction_read_only%3Don"
    role = f"reader_{database}"
    if limit == "select-only role":
        postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'reader-pw'")
        grants = (
            f"GRANT USAGE ON SCHEMA agentrouter_auth TO {role}; "
            f"GRANT SELECT ON ALL TABLES IN SCHEMA agentrouter_auth TO {role}"
        )
        postgres.execute(grants, dbname=database)
        location = postgres.dsn(database, user=role, password="reader-pw")
    try:
        with ServerProcess(serve(location, kek_file, "--rotation", "auto")) as server:
            status, ready = readyz(server)
            assert (status, ready["keyring"]) == (200, "error"), f"{limit}: reported healthy"
            assert "cannot be written" in str(ready["reason"])
            assert health(server, KEYRING_HEALTH_NAME) == NOT_SERVING
            (failed,) = server.events("rotation_step_failed")
            assert ("permission denied" if limit == "select-only role" else "read-only") in str(
                failed["reason"]
            )
            assert server.terminate() == 0
    finally:
        if limit == "select-only role":
            postgres.execute(f"DROP OWNED BY {role}", dbname=database)
            postgres.execute(f"DROP ROLE {role}")
