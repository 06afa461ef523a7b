"""Shared fixtures: a pool of real keys made once per run, stores, copies of the repository."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.material import generate_key
from agentrouter_auth.keys.store import DirectoryStore, Entry, State

REPO = Path(__file__).resolve().parent.parent
Seeder = Callable[[Path, Sequence[jwk.JWK]], DirectoryStore]


@pytest.fixture(scope="session")
def key_pool() -> list[jwk.JWK]:
    """Private signing keys of every supported algorithm (RSA generation is slow: made once)."""
    return [generate_key(alg) for alg in ("RS256", "RS256", "ES256", "ES256", "EdDSA", "EdDSA")]


@pytest.fixture
def seed_store() -> Seeder:
    """Write keys into a directory store: the first of each algorithm active, others pending."""

    def seed(path: Path, keys: Sequence[jwk.JWK], created: int = 1_000_000) -> DirectoryStore:
        store = DirectoryStore(path)
        with store.transaction() as tx:
            active = {k.entry.alg for k in tx.current.keys if k.entry.state is State.ACTIVE}
            for key in keys:
                alg = key["alg"]
                state = State.PENDING if alg in active else State.ACTIVE
                active.add(alg)
                activated = created if state is State.ACTIVE else None
                tx.add(key, Entry(key["kid"], alg, state, created, activated=activated))
        return store

    return seed


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
