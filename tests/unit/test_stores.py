"""A `--key-store` location chooses the store: a path or a file: URL is the directory store;
any other scheme is refused in one line naming the supported ones."""

from __future__ import annotations

import ast
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.kek import read_kek
from agentrouter_auth.keys.location import redacted, scrub
from agentrouter_auth.keys.postgres import PostgresStore
from agentrouter_auth.keys.registry import check_location, open_store
from agentrouter_auth.keys.store import KeyStoreError
from tests.support import write_kek

SERVER = Path(__file__).resolve().parents[2] / "server" / "agentrouter_auth"


@pytest.mark.parametrize(
    ("location", "directory"),
    [
        ("var/keys", "var/keys"),
        ("/etc/agentrouter-auth/keys", "/etc/agentrouter-auth/keys"),
        ("file:///etc/agentrouter-auth/keys", "/etc/agentrouter-auth/keys"),
        ("FILE:///srv/keys", "/srv/keys"),
        ("file://localhost/srv/keys", "/srv/keys"),
        ("file:var/keys", "var/keys"),
        ("file:/srv/my%20keys", "/srv/my keys"),
        ("keys:2026", "keys:2026"),  # a colon without // is a directory name
    ],
)
def test_a_path_or_a_file_url_is_the_directory_store(location: str, directory: str) -> None:
    store = open_store(location)
    assert isinstance(store, DirectoryStore)
    assert store.path == Path(directory)


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("mysql://db.internal/keys", "unknown key store scheme 'mysql': use a "
         "directory path or one of file:, postgres:, postgresql:"),
        ("postgresql://db.internal/keys?no_such=1", "not a PostgreSQL URL libpq accepts: "
         'invalid URI query parameter: "no_such"'),
        ("s3://bucket/keys", "unknown key store scheme 's3'"),
        ("file://other-host/keys", "a file: URL names a directory on this machine, not on "
         "'other-host'"),
        ("file:///keys?mode=ro", "a file: URL takes no query or fragment"),
        ("file:///keys#x", "a file: URL takes no query or fragment"),
        ("file:", "names no key store directory"),
        ("", "names no key store directory"),
    ],
)  # fmt: skip
def test_a_location_no_backend_takes_is_refused_naming_it(location: str, reason: str) -> None:
    with pytest.raises(KeyStoreError, match="^.*: " + reason.replace("?", r"\?")) as failure:
        check_location(location)
    assert "\n" not in str(failure.value)
    with pytest.raises(KeyStoreError):
        open_store(location)


def test_a_password_in_a_location_never_reaches_a_message() -> None:
    with pytest.raises(KeyStoreError) as failure:
        open_store("postgresql://auth:hunter2@db.internal/keys")
    assert "hunter2" not in str(failure.value)
    assert failure.value.location == "postgresql://auth:***@db.internal/keys"
    assert redacted("var/keys") == "var/keys"
    assert redacted("file:///srv/keys") == "file:///srv/keys"


def test_a_store_error_names_a_location_not_only_a_file() -> None:
    err = KeyStoreError("postgresql://db.internal/keys", "connection refused")
    assert str(err) == "postgresql://db.internal/keys: connection refused"
    assert (err.location, err.reason) == ("postgresql://db.internal/keys", "connection refused")
    assert err.path == err.location  # the `key_set_reload_failed` log field's name
    assert KeyStoreError(Path("/keys/manifest.json"), "corrupt").location == "/keys/manifest.json"


def test_open_store_is_the_only_place_a_store_is_constructed() -> None:
    """Outside tests, nothing but `keys.registry` builds a store: a new backend is chosen in one
    place."""
    builders = {"DirectoryStore", "PostgresStore"}
    found = []
    for path in sorted(SERVER.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name in builders:
                    found.append(f"{path.relative_to(SERVER)}:{node.lineno}")
    assert found
    assert {place.partition(":")[0] for place in found} == {"keys/registry.py"}, found


# -- passwords in every form libpq accepts (issue 17, finding 5) -------------------------------

PASSWORD_CHARACTERS = "#/@:?%&= "
"""Each character that means something in a URL or a key=value DSN, or that libpq refuses raw."""


def _pieces(password: str) -> tuple[str, ...]:
    """What of `password` must never show: itself, percent-encoded, and each half around its
    special character (libpq may read a half as a host, a port or a database name)."""
    return (password, quote(password, safe=""), *password.split(password[6]))


def _locations(password: str) -> list[str]:
    """`password` in every place a location may hold it: a URL's user part and its query, raw
    and percent-encoded, and a key=value DSN, quoted and not."""
    encoded = quote(password, safe="")
    return [
        f"postgresql://auth:{password}@db.internal:5432/keys?sslmode=require",
        f"postgresql://auth:{encoded}@db.internal:5432/keys?sslmode=require",
        f"postgres://auth:{password}@db.internal/keys",
        f"postgresql://auth@db.internal:5432/keys?password={password}&sslmode=require",
        f"postgresql://auth@db.internal:5432/keys?sslmode=require&password={encoded}",
        f"postgresql://db.internal/keys?sslpassword={password}",
        f"host=db.internal port=5432 dbname=keys user=auth password='{password}'",
        f"host=db.internal password={password} dbname=keys",
        f"password = '{password}' host=db.internal",
    ]


def _libpq_texts(location: str) -> list[str]:
    """What a driver may say about `location`: libpq's own parse error, or each value of
    libpq's reading quoted the way libpq quotes a token it rejects."""
    try:
        parsed = conninfo_to_dict(location)
    except psycopg.Error as err:
        return [str(err)]
    return [f'invalid value "{value}" for connection option "{name}"'
            for name, value in parsed.items()]  # fmt: skip


@pytest.mark.parametrize(
    ("password", "location"),
    [
        (password, location)
        for character in PASSWORD_CHARACTERS
        for password in [f"Hunter{character}Secret2"]
        for location in _locations(password)
    ],
)
def test_no_piece_of_a_password_survives_redaction_in_any_location_libpq_reads(
    tmp_path: Path, password: str, location: str
) -> None:
    shown = {"redacted": redacted(location)}
    for number, text in enumerate(_libpq_texts(location)):
        shown[f"scrub {number}"] = scrub(location, text)
    shown["scrub of the location"] = scrub(location, f"cannot use {location} now")
    kek = read_kek(str(write_kek(tmp_path / "kek")))
    try:
        check_location(location)
        store = open_store(location, keks=[kek])
    except KeyStoreError as err:
        shown["refusal"] = str(err)
    else:
        assert isinstance(store, PostgresStore), f"{location!r} opened {store!r}"
        shown["description"] = store.description
        store.close()
    leaks = {where: text for where, text in shown.items()
             if any(piece in text for piece in _pieces(password))}  # fmt: skip
    assert not leaks, f"the password of {location!r} shows in {leaks}"


@pytest.mark.parametrize("character", PASSWORD_CHARACTERS)
def test_a_description_keeps_everything_but_the_password(character: str) -> None:
    password = f"Hunter{character}Secret2"
    encoded = quote(password, safe="")
    assert (
        redacted(f"postgresql://auth:{encoded}@db.internal:5432/keys?sslmode=require")
        == "postgresql://auth:***@db.internal:5432/keys?sslmode=require"
    )
    assert (
        redacted(f"postgresql://auth@db.internal/keys?password={encoded}&sslmode=require")
        == "postgresql://auth@db.internal/keys?password=***&sslmode=require"
    )
    assert (
        redacted(f"host=db.internal port=5432 dbname=keys user=auth password='{password}'")
        == "host=db.internal port=5432 dbname=keys user=auth password=***"
    )


@pytest.mark.parametrize(
    ("location", "parameters"),
    [
        ("host=db.internal port=5432 dbname=keys user=auth",
         {"host": "db.internal", "port": "5432", "dbname": "keys", "user": "auth"}),
        ("  dbname = keys sslmode=verify-full", {"dbname": "keys", "sslmode": "verify-full"}),
        ("service=auth", {"service": "auth"}),
    ],
)  # fmt: skip
def test_a_key_value_dsn_is_the_postgresql_store(
    tmp_path: Path, location: str, parameters: dict[str, str]
) -> None:
    kek = read_kek(str(write_kek(tmp_path / "kek")))
    store = open_store(location, keks=[kek])
    assert isinstance(store, PostgresStore)
    assert conninfo_to_dict(store.location) == parameters
    assert store.description == location
    store.close()
    # A directory whose name merely holds '=' stays a directory.
    assert isinstance(open_store("keys=2026"), DirectoryStore)


def test_a_key_value_dsn_libpq_cannot_parse_is_refused_in_one_line() -> None:
    with pytest.raises(KeyStoreError, match="not a PostgreSQL URL libpq accepts") as failure:
        check_location("host=db.internal password='Hunter Secret2")
    assert "Hunter" not in str(failure.value)
    assert "Secret2" not in str(failure.value)
    assert "\n" not in str(failure.value)


@pytest.mark.parametrize("character", "/@")
def test_a_password_libpq_would_read_as_a_host_port_or_database_is_refused(
    character: str,
) -> None:
    """`auth:Hunter/Secret2@db` is, to libpq, host `auth`, port `Hunter`, database
    `Secret2@db…`; `auth:Hunter@Secret2@db` the password `Hunter` at host `Secret2@db`."""
    location = f"postgresql://auth:Hunter{character}Secret2@db.internal:5432/keys"
    assert conninfo_to_dict(location).get("password") != f"Hunter{character}Secret2"
    with pytest.raises(KeyStoreError) as failure:
        check_location(location)
    assert str(failure.value) == (
        "postgresql://auth:***@db.internal:5432/keys: libpq would read part of this URL's "
        "password as its host, port or database: percent-encode '@' as %40 and '/' as %2F in "
        "a password (and an '@' after the host)"
    )
    check_location(location.replace(character, quote(character, safe=""), 1))
