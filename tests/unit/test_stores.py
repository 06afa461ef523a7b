"""A `--key-store` location chooses the store: a path or a file: URL is the directory store;
any other scheme is refused in one line naming the supported ones."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from agentrouter_auth.keys.store import DirectoryStore, KeyStoreError
from agentrouter_auth.keys.stores import check_location, open_store, redacted

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
    """Outside tests, nothing but `keys.stores` builds a store: a new backend is chosen in one
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
    assert {place.partition(":")[0] for place in found} == {"keys/stores.py"}, found
