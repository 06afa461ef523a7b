"""Key store locations: how a `--key-store` value is read, and how it is shown.

A location is a directory path (`var/keys`, `/etc/agentrouter-auth/keys`), a URL whose scheme
names the backend, or a libpq key=value DSN. `file:` is the directory store
(`file:///etc/agentrouter-auth/keys`, or `file:var/keys` relative to the working directory);
`postgresql:` and `postgres:` are the PostgreSQL store (a libpq URL:
`postgresql://user@db.internal:5432/auth?sslmode=verify-full`), and so is a DSN
(`host=db.internal dbname=auth`: it starts with a libpq parameter and `=`). A location is read as
a URL when it starts with `file:` or holds `scheme://`; anything else is a path, so a directory
whose name holds a colon (or starts `keys=`) still works. Which backend opens a scheme is the
registry's business (`keys.registry`).

A location reaches messages and logs only through `redacted`, which hides passwords, and a
reason that may quote it (a driver's) only through `scrub`. Both hide whatever may be a secret
under any reading of the location (libpq's, a URL parser's), so that a password holding `#`, `/`,
`@`, `?` or a space, percent-encoded or not, never shows in part either.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from urllib.parse import unquote, unquote_plus, urlsplit

from agentrouter_auth.keys.store import KeyStoreError

log = logging.getLogger("agentrouter-auth")
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
            redacted(location),
            "a file: URL takes no query or fragment (write '?' as %3F, '#' as %23)",
        )
    if parts.netloc not in ("", "localhost"):
        host = parts.netloc.rpartition("@")[2]
        raise KeyStoreError(
            redacted(location), f"a file: URL names a directory on this machine, not on {host!r}"
        )
    path = unquote(parts.path)
    if not path:
        raise KeyStoreError(redacted(location), "names no key store directory")
    return Path(path)


SECRET_PARAMETERS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)
"""The libpq parameters whose values are secrets: never shown, wherever they are written."""
_DSN_KEYWORD = re.compile(r"\s*([^\s=]+)\s*=\s*")


def is_conninfo(location: str) -> bool:
    """Whether `location` is a libpq key=value DSN (`host=db.internal dbname=auth`): it
    starts with a libpq parameter and `=`. `keys=2026` (no such parameter) stays a directory."""
    match = _DSN_KEYWORD.match(location)
    return match is not None and match[1] in _libpq_keywords()


@functools.cache
def _libpq_keywords() -> frozenset[str]:
    # Imported here: the driver is loaded only by processes that name a database.
    from psycopg import pq  # noqa: PLC0415

    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def _libpq_reading(location: str) -> dict[str, str] | None:
    """libpq's own reading of a PostgreSQL location (None: libpq cannot parse it)."""
    import psycopg  # noqa: PLC0415 - see _libpq_keywords
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        return {name: str(value) for name, value in conninfo_to_dict(location).items()}
    except psycopg.Error:
        return None


Span = tuple[int, int]
_QUERY_SEPARATOR = re.compile(r"[?&]")
_QUERY_KEY = re.compile(r"[^=&?]*")


def _name(written: str) -> str:
    """A parameter's name as libpq compares it (percent-decoded)."""
    return unquote(written).strip().lower()


def _authority(location: str) -> int:
    """Where a URL's authority (`user:password@host:port`) starts: after `scheme://`."""
    after_scheme = location.index(":") + 1
    return after_scheme + 2 if location.startswith("//", after_scheme) else after_scheme


def _userinfo_password(location: str) -> Span | None:
    """The widest reading of a URL's password: from the first `:` after `//` to the last `@`.
    libpq ends it at the first `@` (and finds none past a raw `/`), a URL parser at the first
    `/`, `?` or `#`: a password holding a raw `@`, `/`, `?` or `#` spreads into what one of
    them reads as the host, the port or the database, so all of it counts."""
    begin = _authority(location)
    colon, last_at = location.find(":", begin), location.rfind("@")
    return (colon + 1, last_at) if begin <= colon < last_at else None


def _path_userinfo(location: str) -> Span | None:
    """In a location read as a path, a URL mistyped (`postgresql:/u:pw@h/db`,
    `postgresql//u:pw@h/db`): from the first `:` past any `scheme:` and slashes to the last
    `@`, what would be a password had the URL been typed right."""
    scheme = _SCHEME.match(location)
    begin = scheme.end() if scheme else 0
    while location.startswith("/", begin):
        begin += 1
    colon, last_at = location.find(":", begin), location.rfind("@")
    return (colon + 1, last_at) if begin <= colon < last_at else None


def _url_spans(location: str, *, greedy: bool, values: bool = True) -> list[Span]:
    """Where a URL may hold a secret: its password (`_userinfo_password`) and each secret
    query parameter, to the next `&`. When `greedy` (libpq cannot parse the URL), a secret
    parameter's value to the end (a raw `&` may have cut it short), and every other value and
    every parameter without a `=` (an encoded `=` or a typo may hide a password's name)."""
    password = _userinfo_password(location)
    spans: list[Span] = [password] if password else []
    for separator in _QUERY_SEPARATOR.finditer(location, _authority(location)):
        key = _QUERY_KEY.match(location, separator.end())
        assert key is not None  # it matches the empty string
        end = location.find("&", key.end())
        end = len(location) if end < 0 else end
        if not location.startswith("=", key.end()):
            if greedy and values and key[0]:  # `password%3Dpw`: no name, all value
                spans.append((separator.end(), end))
            continue
        secret = _name(key[0]) in SECRET_PARAMETERS
        if secret or (greedy and values):  # every value, a misspelled `passwd=` too
            spans.append((key.end() + 1, len(location) if greedy and secret else end))
    return spans


def _dsn_spans(location: str, *, greedy: bool, values: bool = True) -> list[Span]:
    """Where a key=value DSN holds a secret: the value of each secret parameter (quoted with
    `'` and backslash escapes, or up to the next space), as libpq reads it. When libpq cannot
    parse it, every value (a misspelled `passwd=` is a password too) and everything from where
    the DSN stops making sense to its end (an unquoted space may have cut a password in two)."""
    spans: list[Span] = []
    at = 0
    while location[at:].strip():
        keyword = _DSN_KEYWORD.match(location, at)
        if keyword is None:
            at = len(location) - len(location[at:].lstrip())
            return [*spans, (at, len(location))] if greedy else spans
        at = value_start = keyword.end()
        quoted = location.startswith("'", at)
        at += quoted
        while at < len(location) and (
            location[at] != "'" if quoted else not location[at].isspace()
        ):
            at += 2 if location[at] == "\\" else 1
        at = min(at + quoted, len(location))
        secret = keyword[1].lower() in SECRET_PARAMETERS
        if secret or (greedy and values):  # every value, a misspelled `passwd=` too
            spans.append((value_start, len(location) if greedy and secret else at))
    return spans


def _is_postgres(location: str) -> bool:
    return is_conninfo(location) or scheme_of(location) in ("postgresql", "postgres")


def _secret_spans(location: str, *, values: bool = True) -> list[Span]:
    """The parts of `location`, as written, that may be a secret under any reading, merged.
    A location libpq cannot parse (or that no backend reads with libpq) is read greedily."""
    scheme = scheme_of(location)
    unparsed = not _is_postgres(location) or _libpq_reading(location) is None
    if is_conninfo(location):
        found = _dsn_spans(location, greedy=unparsed, values=values)
    elif scheme is None:  # a directory path, or a URL mistyped
        found = [span] if (span := _path_userinfo(location)) else []
    else:
        found = _url_spans(location, greedy=unparsed and scheme != "file", values=values)
    merged: list[Span] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        elif start < end:
            merged.append((start, end))
    return merged


def holds_secret(location: str) -> bool:
    """Whether `location` carries a secret (a URL's password, a `password` parameter, …):
    on a command line, anyone who can list processes can read it."""
    return bool(_secret_spans(location))


def warn_of_secret_on_command_line(given: str | None, *, variable: str) -> None:
    """Log one warning if `given`, a location given as a command-line flag (None: it was not),
    carries a secret: anyone who can list processes (`ps`) reads it there. It names the
    alternatives and shows the location redacted."""
    if given is None or not holds_secret(given):
        return
    log.warning(
        "the key store location on the command line holds a password, which anyone who can "
        "list processes can read (ps): give the location in %s instead, or the password in "
        "PGPASSWORD or a passfile (passfile= in the URL, or ~/.pgpass)",
        variable,
        extra={"event": "secret_on_command_line", "key_store": redacted(given)},
    )


def check_userinfo(location: str) -> None:
    """Raise KeyStoreError unless libpq reads the password of a PostgreSQL URL as written
    (`_userinfo_password`): with a raw `@` or `/` in it, libpq would take part of it for a
    host, a port or a database, and connect there."""
    password = _userinfo_password(location)
    reading = _libpq_reading(location)
    if password is None or reading is None:
        return
    if unquote(location[password[0] : password[1]]) != reading.get("password"):
        raise KeyStoreError(
            redacted(location),
            "libpq would read part of this URL's password as its host, port or database: "
            "percent-encode '@' as %40 and '/' as %2F in a password (and an '@' after the host)",
        )


def redacted(location: str) -> str:
    """`location` fit for messages and logs: every part that may be a secret (see
    `_url_spans`, `_dsn_spans`) replaced by `***`, the rest as written."""
    shown, at = [], 0
    for start, end in _secret_spans(location):
        shown += [location[at:start], "***"]
        at = end
    return "".join([*shown, location[at:]])


_QUOTED = re.compile(r'"([^"]+)"')
_MAYBE_SECRET_LENGTH = 4


def _secrets(location: str) -> set[str]:
    """Every form a secret of `location` may take in a message: each secret part as written,
    percent-decoded, unquoted, and as libpq reads it. A value hidden only because libpq cannot
    parse the location (`values`: maybe a misspelled password) counts from 4 characters on, so
    that `user=u` does not blank every `u` of libpq's message."""
    certain = {location[start:end] for start, end in _secret_spans(location, values=False)}
    maybe = {location[start:end] for start, end in _secret_spans(location)}
    written = certain | {raw for raw in maybe if len(raw) >= _MAYBE_SECRET_LENGTH}
    if is_conninfo(location):
        written |= {raw[1:-1] for raw in written if raw.startswith("'") and raw.endswith("'")}
        written |= {re.sub(r"\\(.)", r"\1", raw) for raw in written}
    forms = {form for raw in written for form in (raw, unquote(raw), unquote_plus(raw))}
    if _is_postgres(location):
        reading = _libpq_reading(location) or {}
        forms |= {value for name, value in reading.items() if name in SECRET_PARAMETERS}
    return {form for form in forms if form}


def scrub(location: str, text: str) -> str:
    """`text`, a message about `location`, with its secrets hidden: every form of them, and
    every quoted token that overlaps one or a secret part of the location as written (libpq
    quotes the token it cannot use, which may be part of a password: `invalid percent-encoded
    token: "Secr%zz"`, or a password's second half read as a host name)."""
    secrets = _secrets(location)
    spans = _secret_spans(location)

    def overlaps_a_span(token: str) -> bool:
        found = location.find(token)
        while found >= 0:
            if any(found < end and start < found + len(token) for start, end in spans):
                return True
            found = location.find(token, found + 1)
        return False

    def overlapping(match: re.Match[str]) -> str:
        token = match[1]
        if len(token) == 1 and not token.isalnum():
            return match[0]  # the separator libpq wanted (`missing "=" after …`)
        hidden = overlaps_a_span(token) or any(
            token in secret or secret in token for secret in secrets
        )
        return '"***"' if hidden else match[0]

    text = _QUOTED.sub(overlapping, text)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
