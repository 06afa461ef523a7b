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
from agentrouter_auth.keys.store import KeyStoreError
from agentrouter_auth.keys.registry import check_location


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
    return text


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
