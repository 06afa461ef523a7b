"""Value types of options: how an option's text becomes a value, validated, and the value text
again (what `serve` hands its workers).

Each kind is a `Kind` (parse, show, metavar); a parser takes the flag or variable the text came
from, so that every refusal is one line naming it. Parsers read files where a value names one
(certificates, KEKs) but make no other system call.
"""

from __future__ import annotations

import ipaddress
import math
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.keys.kek import Kek, KekError, read_kek
from agentrouter_auth.keys.policy import PolicyError, format_duration, parse_duration
from agentrouter_auth.keys.registry import check_location
from agentrouter_auth.keys.store import KeyStoreError


class ConfigError(AgentRouterAuthError, ValueError):
    """An option's value is invalid; the message names the option."""


@dataclass(frozen=True, slots=True)
class Kind:
    """How an option's text becomes a value, and the value text again (for workers)."""

    parse: Callable[[str, str], Any]
    """(flag, text) → value; raises ConfigError (or PolicyError) naming the flag."""
    show: Callable[[Any], str]
    """value → text that `parse` reads back as the same value."""
    metavar: str
    separator: str = ""
    """For an option of several values: the flag may be repeated, and the values are joined
    by this in the text `parse` reads (and in the variable)."""


Check = Callable[[str, Any], Any]
"""(flag, value) → the value to use; raises ConfigError naming the flag."""


def must(holds: Callable[[Any], bool], rule: str) -> Check:
    """A check: `holds(value)`, or the error "<flag> must <rule>"."""

    def check(flag: str, value: Any) -> Any:  # noqa: ANN401 - any option's value
        if not holds(value):
            raise ConfigError(f"{flag} must {rule}")
        return value

    return check


# -- addresses -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """A host (name, IPv4 or IPv6 literal) and a TCP port; port 0 lets the OS choose."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(option: str, value: str) -> Address:
    """Parse `host:port` or `[v6]:port`; raise ConfigError naming `option` otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{option}: expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{option}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"{option}: write an IPv6 host in brackets, as [::1]:9090")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{option}: port must be a number from 0 to 65535, got {port_text!r}")
    return Address(host, int(port_text))


# -- durations, numbers, text ----------------------------------------------------------------


def _duration(flag: str, text: str) -> float:
    try:
        seconds = parse_duration(flag, text)
    except PolicyError as err:  # the same words, as an option's error
        raise ConfigError(str(err)) from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{flag}: {text!r} is not a finite duration")
    return seconds


def _show_duration(seconds: float) -> str:
    """Whole seconds as `1h30m`, others as plain seconds: both read back exactly."""
    if seconds == int(seconds) and seconds < 2**53:
        return format_duration(seconds)
    return repr(seconds)


def _integer(flag: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{flag}: expected a whole number, got {text!r}") from None


def _text(_flag: str, text: str) -> str:
    return text


def _show_text(value: object) -> str:
    return "" if value is None else str(value)


def switch(on: str) -> Kind:
    """`on` or `off` as a bool."""
    return Kind(lambda _flag, text: text == on, lambda value: on if value else "off", "")


# -- the key store and its KEKs --------------------------------------------------------------


def _key_store(flag: str, text: str) -> str:
    try:
        check_location(text)
    except KeyStoreError as err:
        raise ConfigError(f"{flag}: {err}") from err
    return text


KEK_SEPARATOR = ":"


def _kek_files(flag: str, text: str) -> tuple[Kek, ...]:
    """The KEKs of the files named in `text` (separated by KEK_SEPARATOR), each checked now:
    private, one line of base64, 32 bytes."""
    paths = text.split(KEK_SEPARATOR) if text else []
    if any(not path.strip() for path in paths):
        raise ConfigError(f"{flag}: {text!r} names an empty path")
    try:
        return tuple(read_kek(path) for path in paths)
    except KekError as err:
        raise ConfigError(f"{flag}: {err}") from None


def _show_kek_files(keks: tuple[Kek, ...]) -> str:
    return KEK_SEPARATOR.join(kek.path for kek in keks)


# -- public URLs (the issuer, the key set's URL) ---------------------------------------------

_URL_CHARACTERS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]*")
"""RFC 3986's unreserved and reserved characters and `%`, less the quote `'`."""


def _public_url(flag: str, text: str) -> str:
    """An absolute https URL with no user part, query or fragment (http only on a loopback
    host), as OpenID Connect Discovery 1.0 §3 and RFC 8414 §2 require of an issuer, written in
    URL characters only; "" for unset. A refusal shows the text escaped (`ascii`): no control
    or bidirectional character reaches a terminal or a log."""
    if not text:
        return text
    shown = ascii(text)
    if not _URL_CHARACTERS.fullmatch(text):
        raise ConfigError(
            f"{flag}: {shown} may hold only URL characters (RFC 3986, no quotes): "
            "percent-encode the others, and write a host name in punycode (xn--)"
        )
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise ConfigError(f"{flag}: {shown}: a '%' must start a %XX escape")
    try:
        url = urllib.parse.urlsplit(text)
        host = url.hostname or ""
        url.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as err:
        raise ConfigError(f"{flag}: {shown} is not a URL: {err}") from None
    if url.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{flag}: {shown} must be an absolute https URL")
    if "@" in url.netloc:  # not echoed: it may be a password
        raise ConfigError(f"{flag}: must have no user name or password (user:password@)")
    if url.query or url.fragment or text.endswith(("?", "#")):
        raise ConfigError(f"{flag}: {shown} must have no query or fragment")
    if url.scheme == "http" and not _loopback(host):
        raise ConfigError(f"{flag}: {shown} must use https (http only on a loopback host)")
    problem = _authority_problem(url.netloc) or _path_problem(url.path)
    if problem:
        raise ConfigError(f"{flag}: {shown} {problem}")
    return text


_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
"""A DNS label of a host name (RFC 1123 §2.1, RFC 952): letters, digits, inner hyphens."""


def _authority_problem(netloc: str) -> str:
    """What is wrong with the `host[:port]` of a public URL (no user part: checked before),
    or "". The text is checked as written: a verifier compares the issuer byte for byte, and
    what a resolver would make of an odd name is not the question."""
    host, colon, port = netloc.rpartition(":") if not netloc.endswith("]") else ("", "", "")
    if not colon:
        host = netloc
    elif not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"is refused: the port must be from 1 to 65535 (got {port!r})"
    if host.startswith("["):
        return ""  # an IP literal: urlsplit has checked it
    if "%" in host:
        return "is refused: the host is percent-encoded; write it as it is (punycode: xn--)"
    return _host_name_problem(host)


def _host_name_problem(host: str) -> str:
    """What is wrong with a host name or IPv4 address, or ""."""
    labels = host.lower().split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"is refused: {host!r} is not a valid host name or IPv4 address"
        return ""
    if len(host) > 253 or labels[-1].isdigit() or not all(map(_LABEL.fullmatch, labels)):
        return (
            f"is refused: {host!r} is not a valid host name (labels of letters, digits and "
            "inner hyphens, 1 to 63 long, no empty label or trailing dot)"
        )
    for label in labels:
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
            except UnicodeError:
                decoded = ""
            if not decoded or decoded.isascii() or not decoded.isprintable():
                return f"is refused: the host label {label!r} is not valid punycode"
    return ""


def _path_problem(path: str) -> str:
    """What is wrong with the path of a public URL once decoded, or "": an escape must stand
    for printable UTF-8 text (no control, bidirectional, zero-width or other format
    character: `str.isprintable`), and no segment may be a dot segment (`.`, `..`, also
    escaped), which RFC 3986 §5.2.4 removes, so that the URL a verifier is handed is not the
    one it fetches."""
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        return "is refused: its path percent-encodes bytes that are not UTF-8"
    if not decoded.replace(" ", "").isprintable():
        return "is refused: its path decodes to a character that is not printable"
    segments = (urllib.parse.unquote(segment) for segment in path.split("/"))
    if any(segment in (".", "..") for segment in segments):
        return "is refused: its path has a dot segment ('.' or '..', also as %2E)"
    return ""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


DURATION = Kind(_duration, _show_duration, "DURATION")
INTEGER = Kind(_integer, str, "N")
TEXT = Kind(_text, _show_text, "TEXT")
PATH = Kind(_text, _show_text, "PATH")
ADDRESS = Kind(parse_address, str, "HOST:PORT")
LOCATION = Kind(_key_store, str, "LOCATION")
URL = Kind(_public_url, _show_text, "URL")
KEK_FILES = Kind(_kek_files, _show_kek_files, "PATH", separator=KEK_SEPARATOR)
ON_OFF = ("on", "off")
