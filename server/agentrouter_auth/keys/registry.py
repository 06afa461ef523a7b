"""The backend registry: the one place where a `--key-store` location becomes a store.

The scheme of the location (`keys.location.scheme_of`; a plain path is `file`, a libpq DSN is
`postgresql`) picks a backend: a function that checks the location without touching the store
(so a bad one is refused before anything starts) and returns how to open it, given the
key-encryption keys (which a store that keeps private keys in the clear ignores).

The project's own backends are the entries of `BACKENDS`. Another one is a module holding its
`KeyStore` and one registry entry: a line in `BACKENDS`, or, from a package of its own, an entry
point in the group `agentrouter_auth.key_stores` named by its scheme (`memory =
my_package.memory_store:backend`), loaded when a location names that scheme. Nothing else in
the project (the ring, the snapshot, a transport, the CLI) knows which backend it runs on; a
backend's own commands are reached through `keys.capabilities`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata

from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.kek import Kek
from agentrouter_auth.keys.location import (
    check_userinfo,
    directory_of,
    is_conninfo,
    redacted,
    scheme_of,
)
from agentrouter_auth.keys.store import KeyStore, KeyStoreError

Opener = Callable[[Sequence[Kek]], KeyStore]
"""Opens the store, given the key-encryption keys."""
Backend = Callable[[str], Opener]
"""Checks a location (opening nothing) and returns its `Opener`; KeyStoreError if it is bad."""
ENTRY_POINTS = "agentrouter_auth.key_stores"
"""The entry point group of backends from other packages: name = scheme, value = a `Backend`."""


def _directory(location: str) -> Opener:
    path = directory_of(location)
    return lambda _keks: DirectoryStore(path)  # private keys in files of mode 0600: no KEK


def _postgres(location: str) -> Opener:
    # Imported here: the driver is loaded only by processes that use a database.
    from agentrouter_auth.keys import postgres  # noqa: PLC0415

    description = redacted(location)
    postgres.check_url(location, description)
    if not is_conninfo(location):
        check_userinfo(location)
    return lambda keks: postgres.PostgresStore(location, keks, description=description)


BACKENDS: dict[str, Backend] = {"file": _directory, "postgresql": _postgres, "postgres": _postgres}
"""Scheme → backend. A plain path is the `file` backend."""


def _installed(scheme: str) -> Backend | None:
    """The backend an installed package registers for `scheme` (entry point group
    `ENTRY_POINTS`), or None."""
    for entry_point in metadata.entry_points(group=ENTRY_POINTS, name=scheme):
        backend: Backend = entry_point.load()
        return backend
    return None


def _backend(location: str) -> Backend:
    scheme = "postgresql" if is_conninfo(location) else scheme_of(location) or "file"
    backend = BACKENDS.get(scheme) or _installed(scheme)
    if backend is None:
        supported = ", ".join(f"{name}:" for name in sorted(BACKENDS))
        raise KeyStoreError(
            redacted(location),
            f"unknown key store scheme {scheme!r}: use a directory path or one of {supported}",
        )
    return backend


def check_location(location: str) -> None:
    """Raise KeyStoreError unless `location` names a store some backend can open. Opens
    nothing."""
    _backend(location)(location)


def open_store(location: str, *, keks: Sequence[Kek] = ()) -> KeyStore:
    """The store at `location`: a directory path or a URL whose scheme names the backend.

    `keks` seal and open private keys in a store that keeps them where others can copy them
    (PostgreSQL); such a store refuses to open without one.
    """
    return _backend(location)(location)(tuple(keks))
