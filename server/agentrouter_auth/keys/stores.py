"""Choosing a key store: the one place where a `--key-store` location becomes a store.

A location is a directory path (`var/keys`, `/etc/agentrouter-auth/keys`) or a URL whose scheme
names the backend. `file:` is the directory store (`file:///etc/agentrouter-auth/keys`, or
`file:var/keys` relative to the working directory). A location is read as a URL when it starts
with `file:` or holds `scheme://`; anything else is a path, so a directory whose name holds a
colon still works.

Another backend is one more entry in `BACKENDS`: a function that checks a location without
touching the store (so a bad one is refused before anything starts) and returns how to open it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from agentrouter_auth.keys.store import DirectoryStore, KeyStore, KeyStoreError

Opener = Callable[[], KeyStore]
Backend = Callable[[str], Opener]
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def scheme_of(location: str) -> str | None:
    """The URL scheme of `location` in lower case, or None for a plain path."""
    match = _SCHEME.match(location)
    if match is None:
        return None
    scheme = match[1].lower()
    return scheme if scheme == "file" or location[match.end() :].startswith("//") else None


def directory_of(location: str) -> Path:
    """The directory a path or a `file:` URL names; KeyStoreError if it names none."""
    if scheme_of(location) != "file":
        if not location.strip():
            raise KeyStoreError(repr(location), "names no key store directory")
        return Path(location)
    parts = urlsplit(location)
    if parts.query or parts.fragment:
        raise KeyStoreError(
            location, "a file: URL takes no query or fragment (write '?' as %3F, '#' as %23)"
        )
    if parts.netloc not in ("", "localhost"):
        raise KeyStoreError(
            location, f"a file: URL names a directory on this machine, not on {parts.netloc!r}"
        )
    path = unquote(parts.path)
    if not path:
        raise KeyStoreError(location, "names no key store directory")
    return Path(path)


def _directory(location: str) -> Opener:
    path = directory_of(location)
    return lambda: DirectoryStore(path)


BACKENDS: dict[str, Backend] = {"file": _directory}
"""Scheme → backend. A plain path is the `file` backend."""


def redacted(location: str) -> str:
    """`location` fit for messages and logs: a URL's password is replaced by `***`."""
    if scheme_of(location) is None:
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _backend(location: str) -> Backend:
    scheme = scheme_of(location) or "file"
    try:
        return BACKENDS[scheme]
    except KeyError:
        supported = ", ".join(f"{name}:" for name in sorted(BACKENDS))
        raise KeyStoreError(
            redacted(location),
            f"unknown key store scheme {scheme!r}: use a directory path or one of {supported}",
        ) from None


def check_location(location: str) -> None:
    """Raise KeyStoreError unless `location` names a store some backend can open. Opens
    nothing."""
    _backend(location)(location)


def open_store(location: str) -> KeyStore:
    """The store at `location`: a directory path or a URL whose scheme names the backend."""
    return _backend(location)(location)()
