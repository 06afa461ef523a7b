"""KEK files, and keys seeded into any `KeyStore`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from jwcrypto import jwk

from agentrouter_auth.keys.kek import new_kek_text
from agentrouter_auth.keys.store import Entry, KeyStore, Origin, State


def write_kek(path: Path, mode: int = 0o600) -> Path:
    """A new KEK file (32 random bytes, base64) of `mode`."""
    path.write_text(new_kek_text())
    path.chmod(mode)
    return path


S = TypeVar("S", bound=KeyStore)


def seed(store: S, keys: Sequence[jwk.JWK], created: int = 1_000_000) -> S:
    """Add keys to `store`, all made at `created`: of the keys with a private half, the first of
    each algorithm active (unless one is), the others pending; a public-only key published as
    imported (another issuer's key, which never signs)."""
    with store.transaction() as tx:
        active = {k.entry.alg for k in tx.current.keys if k.entry.state is State.ACTIVE}
        for key in keys:
            alg = key["alg"]
            if not key.has_private:
                published = Entry(key["kid"], alg, State.PUBLISHED, created, origin=Origin.IMPORTED)
                tx.add(key, published)
                continue
            state = State.PENDING if alg in active else State.ACTIVE
            active.add(alg)
            activated = created if state is State.ACTIVE else None
            tx.add(key, Entry(key["kid"], alg, state, created, activated=activated))
    return store
