"""The layout of `keys/`: the `KeyStore` contract apart from every backend, the PostgreSQL store
as a package of one job per module (as Dex splits storage/sql), one check of a stored key shared
by every store and the snapshot, and store-specific commands reached through a capability of
the store, not by naming a backend's class. (Small modules and no import circle: checked for
the whole server in test_layout.py.)"""

from __future__ import annotations

import ast
import importlib
import itertools
import pkgutil
from pathlib import Path

from tests.support.layout import SERVER, imports, modules

POSTGRES_JOBS = {"schema", "session", "rows", "store", "feed", "memory"}
KEYS = SERVER / "keys"
CHECK = "agentrouter_auth.keys.check.check_stored_key"
BACKEND_CLASSES = ("DirectoryStore", "PostgresStore")


def keys_modules() -> dict[str, Path]:
    """Every module of `agentrouter_auth.keys`, by dotted name."""
    return modules(KEYS)


def test_the_contract_is_apart_from_the_directory_store() -> None:
    contract = (KEYS / "store.py").read_text()
    assert "class KeyStore(Protocol)" in contract
    assert "class DirectoryStore" not in contract, "the directory store is in the contract's file"
    assert "manifest.json" not in contract, "the contract's file describes the directory layout"
    directory = importlib.import_module("agentrouter_auth.keys.directory")
    assert "manifest.json" in (directory.__doc__ or "")  # the layout, where the store is


def test_the_postgres_store_is_a_package_one_job_per_module() -> None:
    package = KEYS / "postgres"
    assert (package / "__init__.py").is_file(), "keys/postgres is no package"
    assert not (KEYS / "postgres.py").exists()
    modules = {info.name for info in pkgutil.iter_modules([str(package)])}
    assert modules == POSTGRES_JOBS
    sql = sorted(path.name for path in (package / "migrations").glob("*.sql"))
    assert sql
    assert sql[0].startswith("0001_")


def test_lock_timeouts_are_documented_in_their_place() -> None:
    """Each constant's docstring is the string right after it (LOCK_TIMEOUT's had slipped
    under MIGRATION_LOCK_TIMEOUT)."""
    docs: dict[str, str] = {}
    for path in keys_modules().values():
        body = ast.parse(path.read_text()).body
        for node, after in itertools.pairwise(body):
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.targets[0], ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
            ):
                docs[node.targets[0].id] = str(after.value.value)
    assert "LOCK_TIMEOUT" in docs, "LOCK_TIMEOUT has no docstring under it"
    assert "ring's lock" in docs["LOCK_TIMEOUT"], docs["LOCK_TIMEOUT"]
    assert "migration" in docs.get("MIGRATION_LOCK_TIMEOUT", "")


def test_one_check_of_a_stored_key_serves_every_store_and_the_snapshot() -> None:
    snapshot = SERVER / "snapshot.py"
    imported = imports(snapshot, "agentrouter_auth.snapshot")
    assert "agentrouter_auth.keys.check.check_public_members" in imported, "snapshot checks alone"
    users = {
        "agentrouter_auth.keys.directory": KEYS / "directory.py",
        "agentrouter_auth.keys.postgres.rows": KEYS / "postgres" / "rows.py",
    }
    for name, path in users.items():
        assert path.is_file(), f"no {path.relative_to(SERVER)}"
        assert CHECK in imports(path, name), f"{name} does not use the shared check"
    rows = (KEYS / "postgres" / "rows.py").read_text()
    assert "PRIVATE_MEMBERS" not in rows, "rows re-check private members by hand"
    assert '"oct"' not in rows, "rows re-check symmetric keys by hand"


def test_the_store_commands_name_no_backend_class() -> None:
    for path in (SERVER / "cli" / "store.py", SERVER / "cli" / "keys.py"):
        text = path.read_text()
        named = [name for name in BACKEND_CLASSES if name in text]
        assert named == [], f"{path.name} names {named}"
