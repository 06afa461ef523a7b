"""Choosing a key store: the one place where a `--key-store` location becomes a store.

A location is a directory path (`var/keys`, `/etc/agentrouter-auth/keys`) or a URL whose scheme
names the backend. `file:` is the directory store (`file:///etc/agentrouter-auth/keys`, or
`file:var/keys` relative to the working directory); `postgresql:` and `postgres:` are the
PostgreSQL store (a libpq URL: `postgresql://user@db.internal:5432/auth?sslmode=verify-full`).
A location is read as a URL when it starts with `file:` or holds `scheme://`; anything else is a
path, so a directory whose name holds a colon still works.

Another backend is one more entry in `BACKENDS`: a function that checks a location without
touching the store (so a bad one is refused before anything starts) and returns how to open it,
given the key-encryption keys (which a store that keeps private keys in the clear ignores).
A location reaches messages and logs only through `redacted`, which hides passwords, and a
reason that may quote it (a driver's) only through `scrub`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlencode, urlsplit

from agentrouter_auth.keys.kek import Kek
from agentrouter_auth.keys.store import DirectoryStore, KeyStore, KeyStoreError

Opener = Callable[[Sequence[Kek]], KeyStore]
"""Opens the store, given the key-encryption keys."""
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
    return lambda _keks: DirectoryStore(path)  # private keys in files of mode 0600: no KEK


def _postgres(location: str) -> Opener:
    # Imported here: the driver is loaded only by processes that use a database.
    from agentrouter_auth.keys import postgres  # noqa: PLC0415

    description = redacted(location)
    postgres.check_url(location, description)
    return lambda keks: postgres.PostgresStore(location, keks, description=description)


BACKENDS: dict[str, Backend] = {"file": _directory, "postgresql": _postgres, "postgres": _postgres}
"""Scheme → backend. A plain path is the `file` backend."""

_SECRET_PARAMETER = re.compile(r"(?i)(ssl)?password")


def redacted(location: str) -> str:
    """`location` fit for messages and logs: a URL's password (in its user part, or a
    `password`/`sslpassword` query parameter) is replaced by `***`."""
    if scheme_of(location) is None:
        return location
    try:
        parts = urlsplit(location)
        password = parts.password
    except ValueError:
        return f"{scheme_of(location)}://(a URL that cannot be shown)"
    if password is not None:
        user, _, host = parts.netloc.rpartition("@")
        name = user.partition(":")[0]
        parts = parts._replace(netloc=f"{name}:***@{host}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(_SECRET_PARAMETER.fullmatch(name) for name, _ in query):
        hidden = [(name, "***" if _SECRET_PARAMETER.fullmatch(name) else value)
                  for name, value in query]  # fmt: skip
        parts = parts._replace(query=urlencode(hidden, safe="*/:", quote_via=quote))
    return parts.geturl()


_USERINFO = (
    re.compile(r"[^:/?#]*://([^/?#]*)@"),  # as a URL parser reads it
    re.compile(r"[^:/?#]*://(.*?)@"),  # a password with a raw '/', '?' or '#' in it …
    re.compile(r"[^:/?#]*://(.*)@"),  # … or a raw '@'
)
_PASSWORD_PARAMETER = re.compile(r"(?i)(?:^|[?&\s])(?:ssl)?password\s*=\s*([^&\s#]*)")
_QUOTED = re.compile(r'"([^"]+)"')


def _passwords(location: str) -> set[str]:
    """Every form a password of `location` may take in a message, however the location may
    be parsed: the user part's password (each way that part may end) and `password` or
    `sslpassword` parameters, as written and percent-decoded."""
    written = {m[1].partition(":")[2] for pattern in _USERINFO if (m := pattern.match(location))}
    written.update(match[1] for match in _PASSWORD_PARAMETER.finditer(location))
    return {form for raw in written for form in (raw, unquote(raw), unquote_plus(raw)) if form}


def scrub(location: str, text: str) -> str:
    """`text`, a message about `location`, with its passwords hidden: every form of them, and
    every quoted token that overlaps one (libpq quotes the token it cannot parse, which may be
    part of a password: `invalid percent-encoded token: "Secr%zz"`)."""
    passwords = _passwords(location)

    def overlapping(match: re.Match[str]) -> str:
        token = match[1]
        hidden = any(token in password or password in token for password in passwords)
        return '"***"' if hidden else match[0]

    text = _QUOTED.sub(overlapping, text)
    for password in sorted(passwords, key=len, reverse=True):
        text = text.replace(password, "***")
    return text


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


def open_store(location: str, *, keks: Sequence[Kek] = ()) -> KeyStore:
    """The store at `location`: a directory path or a URL whose scheme names the backend.

    `keks` seal and open private keys in a store that keeps them where others can copy them
    (PostgreSQL); such a store refuses to open without one.
    """
    return _backend(location)(location)(tuple(keks))
