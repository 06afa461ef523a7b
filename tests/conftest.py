"""Shared fixtures: a pool of real keys made once per run, and copies of the repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.material import generate_key

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def key_pool() -> list[jwk.JWK]:
    """Private signing keys of every supported algorithm (RSA generation is slow: made once)."""
    return [generate_key(alg) for alg in ("RS256", "RS256", "ES256", "ES256", "EdDSA", "EdDSA")]


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A scratch copy of the contract: buf.yaml, proto/, api/ and gen/."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(REPO / "buf.yaml", root / "buf.yaml")
    for folder in ("proto", "api", "gen"):
        shutil.copytree(REPO / folder, root / folder)
    return root
