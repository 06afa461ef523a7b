"""Secrets in what an operator writes, against the real CLI and server: a database password
holding any of `#/@:?%&=` or a space, in a URL (raw or percent-encoded) or a key=value DSN,
never shows in a log line, a refusal, /readyz or /metrics; a password given on the command line
(where `ps` shows it) is warned about once; an issuer that is not a plain https URL is refused
in one printable line."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.support import PostgresServer

from .serverproc import AGENTROUTER_AUTH, ServerProcess, eventually, refused_in_one_line, serve_argv
from .test_postgres_serve import serve

pytestmark = pytest.mark.integration

PASSWORD = "Hunter#/@:?%&= Secret2"
"""Every character that means something in a URL or a DSN, or that libpq refuses raw."""
PIECES = (PASSWORD, quote(PASSWORD, safe=""), "Hunter", "Secret2")
"""What must never show: the password, encoded, and each half (libpq may read a half of a
password written raw as a host, a port or a database)."""
NEEDS_ENCODING = "/@% "
"""What libpq cannot take raw in a URL's password; `#?:&=` it takes as written."""


def _leaks(texts: list[str]) -> list[str]:
    return [text for text in texts if any(piece in text for piece in PIECES)]


def _role(postgres: PostgresServer, dsn: str) -> tuple[str, str]:
    """A new role with PASSWORD that owns the database of `dsn`: (role, database)."""
    role, database = f"r_{uuid.uuid4().hex[:12]}", dsn.rsplit("/", 1)[1]
    escaped = PASSWORD.replace("'", "''").replace("%", "%%")  # a literal, not a placeholder
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{escaped}'")
    postgres.execute(f"ALTER DATABASE {database} OWNER TO {role}")
    return role, database


def _locations(postgres: PostgresServer, role: str, database: str) -> dict[str, str]:
    at = f"127.0.0.1:{postgres.port}/{database}"
    mixed = "".join(quote(c, safe="") if c in NEEDS_ENCODING else c for c in PASSWORD)
    return {
        "url, percent-encoded": f"postgresql://{role}:{quote(PASSWORD, safe='')}@{at}",
        "url, raw where libpq takes it": f"postgresql://{role}:{mixed}@{at}",
        "key=value dsn": f"host=127.0.0.1 port={postgres.port} dbname={database} user={role} "
        f"password='{PASSWORD}'",
        "url, password parameter": f"postgresql://{role}@{at}?sslmode=disable&password="
        + quote(PASSWORD, safe=""),
    }


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*AGENTROUTER_AUTH, *args], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **env}, cwd=cwd,
    )  # fmt: skip
    assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
    return result


@pytest.mark.parametrize(
    "style",
    ["url, percent-encoded", "url, raw where libpq takes it", "key=value dsn",
     "url, password parameter"],
)  # fmt: skip
@pytest.mark.slow
def test_a_database_password_never_shows_in_the_servers_logs_or_answers(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, tmp_path: Path, style: str
) -> None:
    role, database = _role(postgres, pg_dsn)
    location = _locations(postgres, role, database)[style]
    env = {"AGENTROUTER_AUTH_KEY_STORE": location, "AGENTROUTER_AUTH_KEK_FILE": str(kek_file)}
    made = _cli("keys", "init", "--alg", "EdDSA", env=env, cwd=tmp_path)  # works as written
    shown = [made.stdout, made.stderr]
    argv = serve(location, kek_file, "--reload-interval", "200ms", "--rotation", "off")
    with ServerProcess(argv) as server:
        (listening,) = server.events("listening")
        assert "***" in listening["key_store"]
        assert httpx.get(server.base_url + "/.well-known/jwks.json", timeout=10).status_code == 200
        shown += [httpx.get(server.base_url + path, timeout=10).text
                  for path in ("/readyz", "/metrics")]  # fmt: skip
        # The password stops working: every session is cut and a new one is refused.
        postgres.execute(f"ALTER ROLE {role} PASSWORD 'another-one'")
        postgres.terminate(database)
        failed = eventually(lambda: server.events("key_set_reload_failed"), bool, within=30)
        assert failed, server.lines
        assert "password authentication failed" in failed[0]["reason"]
        assert "***" in failed[0]["path"]
        ready = httpx.get(server.base_url + "/readyz", timeout=10)
        assert ready.json()["keyring"] == "error"
        shown += [ready.text, httpx.get(server.base_url + "/metrics", timeout=10).text]
        assert server.terminate() == 0
        shown += server.lines
    assert not _leaks(shown)


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("Hunter/Secret2", "libpq would read part of this URL's password as its host, port or "
         "database: percent-encode '@' as %40 and '/' as %2F"),
        ("Hunter@Secret2", "libpq would read part of this URL's password"),
        ("Hunter Secret2", "not a PostgreSQL URL libpq accepts: unexpected spaces found in "
         '"***"'),
        ("Hunter%Secret2", 'not a PostgreSQL URL libpq accepts: invalid percent-encoded token: '
         '"***"'),
    ],
)  # fmt: skip
def test_a_url_libpq_would_misread_is_refused_at_start_without_its_password(
    kek_file: Path, written: str, reason: str
) -> None:
    location = f"postgresql://auth:{written}@127.0.0.1:1/keys"
    line = refused_in_one_line(serve(location, kek_file), timeout=60)
    assert line.startswith(
        "agentrouter-auth: error: --key-store: postgresql://auth:***@127.0.0.1:1/keys: "
    ), line
    assert reason in line
    assert not _leaks([line])


def test_a_password_on_the_command_line_is_warned_about_once_without_showing_it(
    kek_file: Path,
) -> None:
    """Nothing listens on port 1: the server starts anyway (the database may be starting) and
    warns before its workers start."""
    location = f"postgresql://auth:{quote(PASSWORD, safe='')}@127.0.0.1:1/keys"
    with ServerProcess(serve(location, kek_file), ready=False) as server:
        assert server.terminate() == 0
    (warning,) = server.events("secret_on_command_line")
    assert warning["level"] == "warning"
    for alternative in ("AGENTROUTER_AUTH_KEY_STORE", "PGPASSWORD", "passfile"):
        assert alternative in warning["message"]
    assert warning["key_store"] == "postgresql://auth:***@127.0.0.1:1/keys"
    assert not _leaks(server.lines)

    argv = [*serve("", kek_file)]
    argv.remove("--key-store")
    argv.remove("")
    env = {**os.environ, "AGENTROUTER_AUTH_KEY_STORE": location}
    with ServerProcess(argv, env=env, ready=False) as server:
        assert server.terminate() == 0
    assert server.events("listening")
    assert not server.events("secret_on_command_line")  # the environment is not in `ps`
    assert not _leaks(server.lines)


def test_an_issuer_with_control_characters_is_refused_in_one_printable_line(
    tmp_path: Path,
) -> None:
    issuer = "https://auth.example.test/\x1b[2J\u202egnp.exe\nX-Injected: 1"
    line = refused_in_one_line(serve_argv(tmp_path / "keys", "--issuer", issuer))
    assert line.startswith("agentrouter-auth: error: --issuer: ")
    assert "may hold only URL characters" in line
    assert line.isascii()
    assert line.isprintable()
    line = refused_in_one_line(serve_argv(tmp_path / "keys", "--issuer",
                                          "https://admin:hunter2@auth.example.test"))  # fmt: skip
    assert line == (
        "agentrouter-auth: error: --issuer: must have no user name or password (user:password@)"
    )
