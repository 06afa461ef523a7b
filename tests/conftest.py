"""Shared fixtures: a pool of real keys made once per run, stores (a directory, or a database on
the suite's own PostgreSQL server), copies of the repository."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.material import generate_key
from tests.keystores import KINDS, StoreFactory
from tests.support import PostgresServer, seed, write_kek

REPO = Path(__file__).resolve().parent.parent
Seeder = Callable[[Path, Sequence[jwk.JWK]], DirectoryStore]


@pytest.fixture(scope="session")
def key_pool() -> list[jwk.JWK]:
    """Private signing keys of every supported algorithm (RSA generation is slow: made once)."""
    return [generate_key(alg) for alg in ("RS256", "RS256", "ES256", "ES256", "EdDSA", "EdDSA")]


@pytest.fixture
def seed_store() -> Seeder:
    """Write keys into a directory store: the first of each algorithm active, others pending."""

    def seed_directory(
        path: Path, keys: Sequence[jwk.JWK], created: int = 1_000_000
    ) -> DirectoryStore:
        return seed(DirectoryStore(path), keys, created)

    return seed_directory


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The suite's own PostgreSQL server (started on first use, stopped at the end)."""
    server = PostgresServer.create()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> Iterator[str]:
    """The DSN of a new empty database on the suite's server, dropped after the test."""
    dsn = postgres.create_database()
    try:
        yield dsn
    finally:
        if not postgres.running:  # a test stopped the server: leave it running
            postgres.start()
        postgres.drop_database(dsn.rsplit("/", 1)[1])


@pytest.fixture
def kek_file(tmp_path: Path) -> Path:
    """A new key-encryption key file (mode 0600)."""
    return write_kek(tmp_path / "kek")


@pytest.fixture(params=KINDS)
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """Stores of each kind in turn: a directory, then a database on the suite's server."""
    postgres = request.getfixturevalue("postgres") if request.param == "postgresql" else None
    factory = StoreFactory(request.param, tmp_path / "store", postgres)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A scratch copy of the contract and of everything generated from it: buf.yaml, proto/,
    api/, gen/ and sdk/ (without installed packages or build output)."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "buf.yaml", root / "buf.yaml")
    skip = shutil.ignore_patterns("node_modules", "dist", "build", "*.egg-info", "__pycache__")
    for folder in ("proto", "api", "gen", "sdk"):
        shutil.copytree(REPO / folder, root / folder, ignore=skip)
    return root
