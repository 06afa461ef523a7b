"""Rows written back or deleted behind the PostgreSQL store's back, against the real server, the
real CLI and the suite's real PostgreSQL: a removed key's saved row written back is never served
again and never signs; a hand DELETE of the active row is refused; a whole earlier state (every
row, the ring's included) written back to a running server is refused. Each time: the last good
set stays served, keyring health NOT_SERVING, one log line naming the kid."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from agentrouter_auth.grpc.health import KEYRING_HEALTH_NAME
from tests.support import PostgresServer

from .serverproc import AGENTROUTER_AUTH, ServerProcess, eventually, refused_in_one_line
from .test_postgres_faults import NOT_SERVING, database, health, readyz, rows, served_kids, store
from .test_postgres_serve import cli, serve
from .test_worker_respawn import current_pid, up

pytestmark = pytest.mark.integration


def _sql(postgres: PostgresServer, dsn: str, statement: str) -> None:
    postgres.execute(statement, dbname=database(dsn))


def _server(pg_dsn: str, kek_file: Path) -> ServerProcess:
    return ServerProcess(serve(pg_dsn, kek_file, "--reload-interval", "200ms", "--rotation", "off"))


def _looked(server: ServerProcess, served: set[str]) -> tuple[set[str], str]:
    """Wait until the server either refused a change (keyring error) or serves another set;
    return what it serves and its keyring's state."""

    def probe() -> tuple[set[str], str]:
        return served_kids(server), str(readyz(server)[1]["keyring"])

    return eventually(probe, lambda seen: seen[1] == "error" or seen[0] != served)


def _refusals(server: ServerProcess) -> list[str]:
    return [str(record["reason"]) for record in server.events("key_set_reload_failed")]


@pytest.mark.slow
def test_a_removed_keys_row_written_back_is_never_served_and_never_signs(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    options = store(pg_dsn, kek_file)
    cli("keys", "init", *options)
    ((removed, _),) = rows(postgres, database(pg_dsn))
    with _server(pg_dsn, kek_file) as server:
        assert served_kids(server) == {removed}
        _sql(postgres, pg_dsn, "CREATE TABLE stash AS SELECT * FROM agentrouter_auth.keys")
        cli("keys", "remove", "--force", *options, "--", removed)
        cli("keys", "init", *options)
        ((successor, _),) = rows(postgres, database(pg_dsn))
        served = eventually(lambda: served_kids(server), lambda kids: kids == {successor})
        assert served == {successor}
        earlier = len(_refusals(server))  # the empty set between remove and init was refused
        _sql(postgres, pg_dsn, f"DELETE FROM agentrouter_auth.keys WHERE kid = '{successor}'; "
                               "INSERT INTO agentrouter_auth.keys SELECT * FROM stash")  # fmt: skip
        served, keyring = _looked(server, {successor})
        assert removed not in served, "the removed key is published again"
        assert (served, keyring) == ({successor}, "error")
        assert health(server, KEYRING_HEALTH_NAME) == NOT_SERVING
        (reason,) = _refusals(server)[earlier:]
        assert reason.startswith(f"key {removed}: its row is not in the ring state")
        line = refused_in_one_line(
            [*AGENTROUTER_AUTH, "token", "sign", *options, "--claims", '{"sub": "svc"}']
        )
        assert f"key {removed}: its row is not in the ring state" in line
        # Polled for a while longer: still the last good set, still one log line.
        later = eventually(lambda: served_kids(server), lambda kids: kids != {successor}, 2)
        assert later == {successor}
        assert len(_refusals(server)) == earlier + 1
        assert server.terminate() == 0


def test_a_hand_delete_of_the_active_row_is_refused_naming_it(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    options = store(pg_dsn, kek_file)
    cli("keys", "init", *options, "--alg", "ES256", "--alg", "EdDSA", "--alg", "RS256")
    kids = {kid for kid, _ in rows(postgres, database(pg_dsn))}
    ((active,),) = postgres.execute(
        "SELECT kid FROM agentrouter_auth.keys WHERE alg = 'ES256'", dbname=database(pg_dsn)
    )
    with _server(pg_dsn, kek_file) as server:
        assert served_kids(server) == kids
        _sql(postgres, pg_dsn, f"DELETE FROM agentrouter_auth.keys WHERE kid = '{active}'")
        served, keyring = _looked(server, kids)
        assert served == kids, f"the set shrank from {len(kids)} to {len(served)} keys"
        assert keyring == "error"
        assert health(server, KEYRING_HEALTH_NAME) == NOT_SERVING
        (reason,) = _refusals(server)
        assert reason.startswith(f"key {active}: the ring state (generation")
        assert "lists it as active, but its row is missing" in reason
        # The operator accepts the rows as they are, on purpose: served at the next reload.
        sealed = cli("store", "seal", *options)
        assert "sealed 2 key row(s) as generation" in sealed.stderr
        served = eventually(lambda: served_kids(server), lambda found: found != kids)
        assert served == kids - {active}
        assert readyz(server)[1]["keyring"] == "ok"
        assert server.terminate() == 0


def test_a_whole_earlier_state_written_back_to_a_running_server_is_refused(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    """Every row of the schema but its migrations, the ring's included, saved and written back
    as a restore would (triggers off: no NOTIFY, the generation counter restored too)."""
    options = store(pg_dsn, kek_file)
    cli("keys", "init", *options)
    tables = [
        str(name)
        for (name,) in postgres.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'agentrouter_auth' "
            "AND tablename <> 'schema_migrations' ORDER BY tablename",
            dbname=database(pg_dsn),
        )
    ]
    assert "keys" in tables
    for table in tables:
        _sql(
            postgres,
            pg_dsn,
            f"CREATE TABLE stash_{table} AS SELECT * FROM agentrouter_auth.{table}",
        )
    with _server(pg_dsn, kek_file) as server:
        cli("keys", "rotate", *options)
        kids = {kid for kid, _ in rows(postgres, database(pg_dsn))}
        assert len(kids) == 2
        served = eventually(lambda: served_kids(server), lambda found: found == kids)
        assert served == kids
        restore = "; ".join(
            f"DELETE FROM agentrouter_auth.{table}; "
            f"INSERT INTO agentrouter_auth.{table} SELECT * FROM stash_{table}"
            for table in tables
        )
        _sql(postgres, pg_dsn, f"BEGIN; SET LOCAL session_replication_role = replica; "
                               f"{restore}; COMMIT")  # fmt: skip
        served, keyring = _looked(server, kids)
        assert served == kids, "the earlier state written back was served"
        assert keyring == "error"
        assert health(server, KEYRING_HEALTH_NAME) == NOT_SERVING
        (reason,) = _refusals(server)
        assert "older than generation" in reason
        assert reason.startswith("key "), reason
        assert server.terminate() == 0


@pytest.mark.slow
def test_a_rolled_back_schema_revives_no_removed_key(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    """Attack F1 with the app's own role: stash the rows, remove the key, roll the schema back
    to version 1 and write the stash back; the next process applies migration 2 again. It must
    not seal the removed key's row (written under a sealed ring state): the CLI and `serve`
    refuse naming it, until the operator seals on purpose."""
    options = store(pg_dsn, kek_file)
    cli("keys", "init", *options)
    ((removed, _),) = rows(postgres, database(pg_dsn))
    _sql(postgres, pg_dsn, "CREATE TABLE stash AS SELECT * FROM agentrouter_auth.keys")
    cli("keys", "remove", "--force", *options, "--", removed)
    cli("keys", "init", *options)
    _sql(postgres, pg_dsn, "DROP TABLE agentrouter_auth.ring_state; DELETE FROM "
                           "agentrouter_auth.schema_migrations WHERE version = 2; DELETE FROM "
                           "agentrouter_auth.keys; INSERT INTO agentrouter_auth.keys "
                           "SELECT * FROM stash")  # fmt: skip
    refusal = f"key {removed}: its row was written under a sealed ring state"
    for argv in (
        ["store", "migrate", *options],
        ["keys", "list", *options],
        ["token", "sign", *options, "--claims", '{"sub": "svc"}'],
        ["serve", *options, "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
    ):
        line = refused_in_one_line([*AGENTROUTER_AUTH, *argv])
        assert refusal in line, f"{argv[:2]}: {line}"
    assert rows(postgres, database(pg_dsn)) == [(removed, "active")]  # nothing sealed
    sealed = cli("store", "seal", *options)
    assert "sealed 1 key row(s) as generation" in sealed.stderr
    with _server(pg_dsn, kek_file) as server:
        assert served_kids(server) == {removed}  # accepted on purpose
        assert server.terminate() == 0


def _answers(server: ServerProcess, tries: int = 16) -> list[tuple[int, set[str], str]]:
    """(JWKS status, kids served, keyring) over new connections, spread over the workers."""
    found = []
    for _ in range(tries):
        with httpx.Client(timeout=10) as client:
            reply = client.get(f"{server.base_url}/.well-known/jwks.json")
            kids = (
                {key["kid"] for key in reply.json()["keys"]} if reply.status_code == 200 else set()
            )
            keyring = str(client.get(f"{server.base_url}/readyz").json()["keyring"])
        found.append((reply.status_code, kids, keyring))
    return found


@pytest.mark.slow
def test_an_earlier_state_stays_refused_across_a_sighup_and_a_respawned_worker(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path
) -> None:
    """Attack F2: the newest generation seen is shared by every worker of one `serve`, so
    neither granian's restart of every worker (SIGHUP) nor a killed worker's replacement
    accepts a whole earlier state written back: the removed key is never published."""
    options = store(pg_dsn, kek_file)
    cli("keys", "init", *options)
    ((removed, _),) = rows(postgres, database(pg_dsn))
    tables = ("keys", "ring", "ring_state")
    for table in tables:
        _sql(
            postgres,
            pg_dsn,
            f"CREATE TABLE stash_{table} AS SELECT * FROM agentrouter_auth.{table}",
        )
    argv = serve(
        pg_dsn, kek_file, "--workers", "2", "--reload-interval", "200ms", "--rotation", "off"
    )
    with ServerProcess(argv) as server:
        workers = {current_pid(server, slot) for slot in (1, 2)}
        assert all(up(server, pid) for pid in workers)
        cli("keys", "rotate", *options)
        cli("keys", "remove", "--force", *options, "--", removed)
        ((kept, _),) = rows(postgres, database(pg_dsn))
        answers = eventually(
            lambda: _answers(server), lambda seen: all(a[1] == {kept} for a in seen)
        )
        assert all(kids == {kept} for _, kids, _ in answers)
        restore = "; ".join(
            f"DELETE FROM agentrouter_auth.{table}; "
            f"INSERT INTO agentrouter_auth.{table} SELECT * FROM stash_{table}"
            for table in tables
        )
        _sql(
            postgres,
            pg_dsn,
            f"BEGIN; SET LOCAL session_replication_role = replica; {restore}; COMMIT",
        )
        eventually(lambda: len(_refusals(server)), lambda count: count >= 2)  # both workers
        os.kill(server.proc.pid, signal.SIGHUP)
        restarted = eventually(
            lambda: {current_pid(server, slot) for slot in (1, 2)},
            lambda pids: not pids & workers,
            within=60,
        )
        assert all(up(server, pid) for pid in restarted)
        for status, kids, keyring in _answers(server):
            assert removed not in kids, "a worker restarted by SIGHUP published the removed key"
            assert (kids, keyring) in ((set(), "error"), ({kept}, "error")), (status, kids)
        os.kill(current_pid(server, 1), signal.SIGKILL)
        respawned = eventually(
            lambda: current_pid(server, 1), lambda pid: pid not in restarted, within=60
        )
        assert up(server, respawned)
        for status, kids, keyring in _answers(server):
            assert removed not in kids, "a respawned worker published the removed key"
            assert (kids, keyring) in ((set(), "error"), ({kept}, "error")), (status, kids)
        assert server.terminate() == 0
