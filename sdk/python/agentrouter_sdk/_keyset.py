"""The key set cache: the JWK Set that verifies AgentRouter's tokens, kept as HTTP says."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jwt
from connectrpc.errors import ConnectError
from cryptography.hazmat.primitives.asymmetric import rsa
from pyqwest import SyncClient, SyncHTTPTransport

from agentrouter_sdk._client import USER_AGENT, AgentRouterError
from agentrouter_sdk._text import printable
from agentrouter_sdk._transport import BoundedTransport

if TYPE_CHECKING:
    from agentrouter_sdk._client import Client

# A key set's answer, decompressed: a set is a few KiB.
DEFAULT_JWKS_MAX_BYTES = 1 << 20
# The most keys a set may hold: a larger one is refused whole.
MAX_JWKS_KEYS = 256
# The least time, in seconds, between two refreshes caused by a token whose kid the set lacks.
DEFAULT_UNKNOWN_KID_COOLDOWN = 30.0
# The freshness of an answer whose max-age is missing or unreadable, and the most one may claim.
_DEFAULT_MAX_AGE = 300.0
_MAX_MAX_AGE = 24 * 3600.0
_YEAR = 365 * 24 * 3600.0
# The wait before retrying after a failed refresh: 1 s, doubling, at most 60 s.
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0
# GetJWKS as a Connect GET answered in JSON: the RFC 7517 document itself.
CONNECT_GET_JWKS = (
    "/agentrouter.auth.v1.AuthService/GetJWKS?connect=v1&encoding=json&message=%7B%7D"
)
# Each algorithm of the allow-list with its key type and curve (None: the key has no crv).
ALLOWED_KEYS: dict[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", None),
    "EdDSA": ("OKP", "Ed25519"),
}
# The JWK members of a private or symmetric key (RFC 7518 §6).
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
# RSA keys below 2048 bits are refused (RFC 7518 §3.3), and above 4096 (go-jose's
# MaxRSAModulusBits, as the Go SDK): the primality test of a modulus grows as its size cubed,
# 137 ms for 4096 bits, 1 s for 8192 and a minute for 32768, while holding the GIL. It runs
# when a token first names the key, never while a set is read (see _modulus_is_prime).
_MIN_RSA_BITS = 2048
_MAX_RSA_BITS = 4096

_LOG = logging.getLogger("agentrouter_sdk")
# What no jwks_uri may hold: urlsplit would drop or keep it where another parser does not.
_UNSAFE_IN_URL = re.compile(r"[\s\x00-\x1f\x7f-\x9f\\]")
# A URL's query and fragment, in an error's text.
_URL_TAIL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#()]*)[?#][^\s()]*")


class InvalidTokenError(AgentRouterError):
    """A token does not verify: malformed, a refused header, an algorithm its key does not
    declare, a kid no key of the set has, a bad signature, or a claim that fails its check.
    `code` is `unauthenticated`. The message never quotes the token."""

    def __init__(self, message: str) -> None:
        super().__init__("unauthenticated", f"invalid token: {message}")


class KeysUnavailableError(AgentRouterError):
    """The keys could not be had: the set could not be fetched and no cached set may still be
    used (none yet, or past its stale-if-error). `code` is `unavailable`; retry later. The
    message never quotes what the server sent."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", f"keys unavailable: {message}")


class _Modulus:
    """An RSA key's modulus, and whether it is a prime once vetted (None: not yet). Set once,
    by the first lookup of the key that vets it; read without a lock (a reference, assigned
    whole)."""

    __slots__ = ("n", "prime")

    def __init__(self, n: int, prime: bool | None) -> None:
        self.n = n
        self.prime = prime


@dataclass(frozen=True)
class PublicKey:
    """A usable key of the set: its kid, the algorithm it declares (ES256, RS256 or EdDSA) and
    the key (PyJWT's PyJWK). `unvetted_modulus` is an RSA key's modulus while it is still to be
    tested not to be a prime, which KeySetCache.key does when a token first names the key
    (None: nothing to test, or the verdict is known; it is kept on the key)."""

    kid: str
    alg: str
    jwk: jwt.PyJWK
    _modulus: _Modulus | None = field(default=None, repr=False, compare=False)

    @property
    def unvetted_modulus(self) -> int | None:
        modulus = self._modulus
        return modulus.n if modulus is not None and modulus.prime is None else None


@dataclass(frozen=True)
class Freshness:
    """What an answer's Cache-Control says, in seconds."""

    max_age: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0


def parse_cache_control(lines: Iterable[str]) -> tuple[Freshness, bool]:
    """The directives the cache follows, and whether there was a Cache-Control at all. The
    first well-formed occurrence of each directive wins (see _directives). max-age is capped
    at 24 h and is 300 s when missing or not delta-seconds; stale-while-revalidate and
    stale-if-error are capped at a year and are 0 when missing or not delta-seconds. no-cache
    and no-store make all three 0; must-revalidate and proxy-revalidate make the two stale ones
    0 (RFC 9111 §4.2.4, §5.2.2)."""
    seen: dict[str, str] = {}
    present = False
    for line in lines:
        present = True
        for name, value in _directives(line):
            seen.setdefault(name, value)
    max_age = _delta_seconds(seen["max-age"]) if "max-age" in seen else None
    swr = _delta_seconds(seen.get("stale-while-revalidate", "")) or 0.0
    sie = _delta_seconds(seen.get("stale-if-error", "")) or 0.0
    if seen.keys() & {"no-cache", "no-store", "must-revalidate", "proxy-revalidate"}:
        swr = sie = 0.0
    if seen.keys() & {"no-cache", "no-store"}:
        max_age = 0.0
    elif max_age is None:
        max_age = _DEFAULT_MAX_AGE
    return Freshness(min(max_age, _MAX_MAX_AGE), swr, sie), present


# Delta-seconds (RFC 9111 §1.2.2), in ASCII digits only.
_DIGITS = re.compile(r"[0-9]+")
# An element well-formed by the grammar (the README's, the same in the three SDKs), trimmed:
# `name`, `name BWS "=" BWS token` or `name BWS "=" BWS quoted-string`, where a name or a
# token is 1+ tchar (RFC 9110 §5.6.2) and a backslash quotes any character in the string.
_DIRECTIVE = re.compile(
    r"""([!#$%&'*+.^_`|~0-9A-Za-z-]+)"""
    r"""(?:[ \t]*=[ \t]*(?:([!#$%&'*+.^_`|~0-9A-Za-z-]+)|"((?:[^"\\]|\\.)*)"))?""",
    re.DOTALL,
)


def _directives(line: str) -> Iterator[tuple[str, str]]:
    """The well-formed directives of one Cache-Control field line, as (lowercase name, value),
    by the grammar the three SDKs share (README, Client SDKs): the line is split at the commas
    outside quoted strings, a quoted string opening only as the value, right after an
    element's first "=" (a backslash quotes the character after it; unterminated, it runs to
    the end of the line); an element that is not `token [ "=" ( token / quoted-string ) ]`
    (spaces or tabs around "=" allowed) is skipped as if absent."""
    for element in _elements(line):
        found = _DIRECTIVE.fullmatch(element)
        if found is None:
            continue
        name, token, quoted = found.group(1, 2, 3)
        if token is not None:
            value = token
        elif quoted is not None:
            value = re.sub(r"\\(.)", r"\1", quoted, flags=re.DOTALL)
        else:
            value = ""
        yield name.lower(), value


def _elements(line: str) -> Iterator[str]:
    """The elements of a line: split at the commas outside a quoted string, trimmed of spaces
    and tabs, the empty ones dropped."""
    start, size, i = 0, len(line), 0
    after_equals = False  # only spaces and tabs since the element's first "="
    seen_equals = False
    while i < size:
        char = line[i]
        if char == ",":
            yield from _trimmed(line[start:i])
            start, after_equals, seen_equals = i + 1, False, False
        elif char == "=" and not seen_equals:
            seen_equals = after_equals = True
        elif after_equals and char == '"':
            i = _quoted_end(line, i)
            after_equals = False
            continue
        elif char not in " \t":
            after_equals = False
        i += 1
    yield from _trimmed(line[start:])


def _quoted_end(line: str, i: int) -> int:
    """Where the quoted string opening at line[i] ends (the index after its closing quote), or
    the line's length when it is unterminated."""
    i += 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
        elif line[i] == '"':
            return i + 1
        else:
            i += 1
    return len(line)


def _trimmed(element: str) -> Iterator[str]:
    element = element.strip(" \t")
    if element:
        yield element


def _delta_seconds(value: str) -> float | None:
    """A delta-seconds value (RFC 9111 §1.2.2): ASCII digits only, any number of them; one
    larger than a year (however many digits) is taken as a year."""
    if not _DIGITS.fullmatch(value):
        return None
    digits = value.lstrip("0") or "0"
    if len(digits) > 12:
        return _YEAR
    return float(min(int(digits), _YEAR))


def parse_key_set(body: bytes) -> dict[str, PublicKey]:
    """The usable keys of an RFC 7517 JWK Set, by kid. ValueError when the body is not one (not
    JSON in strict UTF-8 without a BOM, no "keys" array), holds more than MAX_JWKS_KEYS keys, or
    has no usable key. Unusable keys are skipped; the first of two keys with one kid is kept; of
    a member named twice in one object, the last is read (as json does). No RSA modulus is
    tested for primality here: a key whose modulus the process has not vetted yet is kept,
    marked (PublicKey.unvetted_modulus), and KeySetCache.key vets it when a token names it
    (a modulus the memo knows is marked with its verdict).
    Errors never quote the body."""
    try:  # strict UTF-8 (RFC 8259 §8.1): no BOM, no UTF-16; deep nesting is an error too
        document = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ValueError(f"the answer ({len(body)} bytes) is not a JSON JWK Set") from None
    members = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(members, list):
        raise ValueError('the answer is JSON without a "keys" array')
    if len(members) > MAX_JWKS_KEYS:
        raise ValueError(f"the set holds {len(members)} keys, more than {MAX_JWKS_KEYS}")
    keys: dict[str, PublicKey] = {}
    for member in members:
        key = _usable_key(member)
        if key is not None and key.kid not in keys:
            keys[key.kid] = key
    if not keys:
        raise ValueError(
            f"none of the set's {len(members)} keys is usable "
            "(a kid, use sig, ES256, RS256 or EdDSA, public)"
        )
    return keys


def _usable_key(member: object) -> PublicKey | None:
    """The key `member` is, if usable: a kid, no private member, an algorithm of the allow-list
    with its key type and curve (RSA of 2048 to 4096 bits, e odd and at least 3), no `use` or
    use "sig", its numbers in unpadded base64url (EC coordinates and the Ed25519 x of the
    curve's size), a valid public key. Certificate members (x5c, x5t, ...) are not read. An
    RSA modulus is marked with the memo's verdict, or unvetted when the memo has none."""
    if not isinstance(member, dict) or any(name in member for name in _PRIVATE_MEMBERS):
        return None
    texts = {name: member.get(name) for name in ("kid", "kty", "crv", "alg")}
    kid, alg = texts["kid"], texts["alg"]
    if (
        any(value is not None and not isinstance(value, str) for value in texts.values())
        or not isinstance(kid, str)
        or not kid
        or member.get("use", "sig") != "sig"
        or not isinstance(alg, str)
        or (texts["kty"], texts["crv"]) != ALLOWED_KEYS.get(alg)
        or not _members_spelled_right(member, alg)
    ):
        return None
    try:
        jwk = jwt.PyJWK(member, algorithm=alg)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        return None
    modulus: _Modulus | None = None
    if alg == "RS256":
        n = _rsa_modulus(jwk.key)
        if n is None:
            return None
        modulus = _Modulus(n, _known_prime(n))
    if alg == "EdDSA" and not _strong_ed25519(member.get("x")):
        return None
    return PublicKey(kid, alg, jwk, modulus)


# A JWK's number: base64url without padding (RFC 7518 §6), of a length some bytes can have.
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
# The members that hold numbers, by algorithm, with the size in bytes each must have (None:
# any; RFC 7518 §6.2.1.2 and RFC 8037 §2 fix the EC coordinates' and Ed25519's).
_NUMBERS: dict[str, dict[str, int | None]] = {
    "ES256": {"x": 32, "y": 32},
    "RS256": {"n": None, "e": None},
    "EdDSA": {"x": 32},
}


def _members_spelled_right(member: dict[str, Any], alg: str) -> bool:
    """Whether each number of the key is unpadded base64url of the size its curve fixes."""
    for name, size in _NUMBERS[alg].items():
        value = member.get(name)
        if not isinstance(value, str) or not _BASE64URL.fullmatch(value) or len(value) % 4 == 1:
            return False
        if size is not None and len(value) * 3 // 4 != size:
            return False
    return True


def _rsa_modulus(key: object) -> int | None:
    """The modulus of an RSA public key of 2048 to 4096 bits whose exponent is odd and at least
    3, or None. Whether the modulus is a prime is not tested here (see _modulus_is_prime)."""
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    if not _MIN_RSA_BITS <= key.key_size <= _MAX_RSA_BITS:
        return None
    numbers = key.public_numbers()
    return numbers.n if numbers.e >= 3 and numbers.e % 2 == 1 else None


class _Vetting:
    """A primality test in flight: the callers that find it in the memo wait for its verdict."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.prime: bool | None = None  # None: in flight, or, once done, the test raised


# Whether each modulus vetted so far is a prime, by n, or the test of it in flight: the least
# recently used are dropped past twice a set's size. Shared by every cache of the process; a
# key keeps its own verdict (_Modulus), so a key in use never needs its entry again.
_PRIME_MEMO_SIZE = 2 * MAX_JWKS_KEYS
_prime_memo: OrderedDict[int, bool | _Vetting] = OrderedDict()
_prime_memo_lock = threading.Lock()


def _known_prime(n: int) -> bool | None:
    """Whether the memo knows `n` to be a prime (True) or not (False); None: not vetted yet
    (or its test is still in flight)."""
    with _prime_memo_lock:
        known = _prime_memo.get(n)
        if known is None:
            return None
        _prime_memo.move_to_end(n)
        return known if isinstance(known, bool) else None


def _modulus_is_prime(n: int) -> bool:
    """Whether the RSA modulus `n` is a prime (with n prime, phi(n) = n - 1 and anyone computes
    d = e^-1 mod (n - 1)): from the memo, else tested and remembered. One test per modulus at a
    time: the first caller runs it outside the memo's lock, and the callers that come while it
    runs wait for its verdict (should it raise, each then runs the test itself)."""
    first = False
    with _prime_memo_lock:
        entry = _prime_memo.get(n)
        if entry is None:
            entry, first = _Vetting(), True
            _remember(n, entry)
        else:
            _prime_memo.move_to_end(n)
    if isinstance(entry, bool):
        return entry
    if not first:
        entry.done.wait()
        return entry.prime if entry.prime is not None else _probably_prime(n)
    try:
        prime = entry.prime = _probably_prime(n)
    finally:
        with _prime_memo_lock:
            if entry.prime is not None:
                _remember(n, entry.prime)
            elif _prime_memo.get(n) is entry:
                del _prime_memo[n]
        entry.done.set()
    return prime


def _remember(n: int, entry: bool | _Vetting) -> None:
    """Put `entry` in the memo as n's, the most recently used; drop the least recently used
    past the memo's size. Called with the memo's lock held."""
    _prime_memo[n] = entry
    _prime_memo.move_to_end(n)
    while len(_prime_memo) > _PRIME_MEMO_SIZE:
        _prime_memo.popitem(last=False)


def _probably_prime(n: int) -> bool:
    """Miller-Rabin with the first prime bases, stopping at the first base n fails: a prime
    always passes, so a prime modulus is always refused; an RSA modulus (p·q) fails at base 2
    but for a negligible chance, so it costs one round: about 20 ms for 2,048 bits, 140 ms for
    4,096 (Python's pow; measured), holding the GIL. Not memoized: _modulus_is_prime is."""
    if n % 2 == 0:
        return n == 2
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for base in (2, 3, 5, 7):
        x = pow(base, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


# Ed25519 (RFC 8032 §5.1): the field's prime, the curve's d, and a square root of -1.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _strong_ed25519(x: object) -> bool:  # noqa: PLR0911 (each refusal is its own return)
    """Whether `x` (the JWK's base64url member) is the canonical encoding of a point of the
    curve whose order is not small (1, 2, 4 or 8): a small-order key lets a signature
    verify with no private key at all (R the identity, S 0). The point is decoded as RFC 8032
    §5.1.3 says and multiplied by the cofactor 8; the identity means a small order."""
    if not isinstance(x, str):
        return False
    try:
        raw = base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))
    except (binascii.Error, ValueError):
        return False
    if len(raw) != 32:
        return False
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return False  # not canonical
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    px = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * px * px % _P != u:
        px = px * _SQRT_M1 % _P
        if v * px * px % _P != u:
            return False  # not on the curve
    if px == 0 and sign:
        return False
    if px % 2 != sign:
        px = _P - px
    point = (px, y)
    for _ in range(3):
        point = _ed25519_double(point)
    return point != (0, 1)


def _ed25519_double(point: tuple[int, int]) -> tuple[int, int]:
    """2·point in affine coordinates (the twisted Edwards addition law, a = -1; complete on
    Ed25519, so no denominator is zero)."""
    x, y = point
    t = _D * x * x * y * y % _P
    nx = 2 * x * y * pow(1 + t, _P - 2, _P) % _P
    ny = (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P
    return nx, ny


@dataclass
class _Answer:
    """What one request brought: a new set, or a 304."""

    not_modified: bool
    keys: dict[str, PublicKey]
    etag: str
    fresh: Freshness
    has_cache_control: bool


class _Flight:
    """One refresh, shared by every caller that waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None


class _FetchError(Exception):
    """A refresh failed; the message is the SDK's own words, never the server's bytes."""


class KeySetCache:
    """The key set that verifies tokens, kept as the server's HTTP caching says: fresh for the
    answer's max-age (at most 24 h; 300 s when missing; 0 with no-cache or no-store), then
    revalidated with If-None-Match (a 304 keeps the set and restarts its age; a 304 to a request
    without If-None-Match is a failed refresh, and so is a 304 with another ETag, by the weak
    comparison, which drops the cached ETag, so the retry is an unconditional GET). Within
    stale-while-revalidate after max-age it answers from the cached set and refreshes once in the
    background; beyond that, callers wait for one shared refresh. Once a refresh has failed,
    stale-if-error after max-age alone bounds the use of the cached set (logged once per streak of
    failures; retried after 1 s, doubling up to 60 s, in the background while the set may be used);
    beyond it, KeysUnavailableError. No redirect is followed: a 3xx is a failed refresh. A kid the
    set lacks causes one shared refresh, at most one per `unknown_kid_cooldown` seconds; while
    refreshes are failing it is a KeysUnavailableError at once. Logs and errors name the URL without
    its query or fragment.

    The set comes from `client`'s GetJWKS (a Connect GET answered in JSON, with the client's
    API key and timeout), or from `jwks_uri` (the API key is sent only when that URL has the
    client's origin). An answer larger than `max_bytes` (decompressed), of more than 256 keys,
    or not a JWK Set is an error and never replaces the cached set. Ages, backoff and cooldown
    are measured on time.monotonic, and `clock` (time.time) is the wall clock a verifier reads;
    a `clock` given (a test's fake, in seconds) drives both. Makes no network call until the
    first lookup; thread-safe."""

    def __init__(
        self,
        client: Client,
        *,
        jwks_uri: str | None = None,
        unknown_kid_cooldown: float = DEFAULT_UNKNOWN_KID_COOLDOWN,
        max_bytes: int = DEFAULT_JWKS_MAX_BYTES,
        clock: Callable[[], float] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not unknown_kid_cooldown >= 0:
            raise ValueError(
                f"unknown_kid_cooldown must be 0 or more seconds, got {unknown_kid_cooldown!r}"
            )
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes!r}")
        url, api_key = client.base_url + CONNECT_GET_JWKS, client._api_key
        if jwks_uri is not None:
            parts = None if _UNSAFE_IN_URL.search(jwks_uri) else _url_parts(jwks_uri)
            if parts is None:
                raise ValueError(
                    "jwks_uri must be an absolute http:// or https:// URL with a host, without "
                    "credentials, whitespace, control characters or backslashes"
                )
            if parts != _url_parts(client.base_url):
                api_key = None
            url = jwks_uri
        self.url = url
        self._api_key = api_key
        self._timeout = client.timeout
        self._max_bytes = max_bytes
        self._cooldown = float(unknown_kid_cooldown)
        # Ages, backoff and cooldown on a monotonic clock, which no wall-clock step moves; the
        # wall clock is the verifier's, for exp, nbf and iat. A test's clock drives both.
        self.clock = clock if clock is not None else time.time
        self._monotonic = clock if clock is not None else time.monotonic
        self._logger = logger if logger is not None else _LOG
        self._safe_url = _without_query(url)
        # No redirect is followed: a 3xx is a failed fetch, whatever origin it names (the set
        # is the trust anchor; it is taken from the URL configured, never from elsewhere).
        transport = SyncHTTPTransport(
            tls_include_system_certs=True,
            connect_timeout=30.0,
            pool_idle_timeout=90.0,
            tcp_keepalive_interval=30.0,
            follow_redirects=False,
        )
        self._http = SyncClient(BoundedTransport(max_bytes, transport))
        self._lock = threading.Lock()
        self._keys: dict[str, PublicKey] | None = None
        self._etag = ""
        self._fetched = 0.0  # when the set's age started: its answer, or the last 304
        self._fresh = Freshness(0.0)
        self._failing = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._last_error = ""
        self._flight: _Flight | None = None
        self._unknown_at: float | None = None  # the last refresh caused by an unknown kid

    def key(self, kid: str) -> PublicKey:
        """The key whose kid is `kid`. A kid the cached set lacks waits for a refresh in flight,
        or causes one (at most one per cooldown); a kid still unknown is an InvalidTokenError.
        KeysUnavailableError when no usable set can be had, and at once for a kid the set lacks
        while refreshes are failing. An RSA key's modulus is vetted the first time the process
        looks the key up (in the calling thread, holding no lock of the cache; one test per
        modulus in the process, concurrent first lookups waiting for it; the verdict is kept on
        the key): a prime modulus is an InvalidTokenError, and the key is never returned."""
        found = self._find(kid)
        modulus = found._modulus
        if modulus is not None:
            prime = modulus.prime
            if prime is None:
                prime = modulus.prime = _modulus_is_prime(modulus.n)
            if prime:
                raise InvalidTokenError(
                    "the key of the token's kid is not usable: its RSA modulus is prime"
                )
        return found

    def _find(self, kid: str) -> PublicKey:
        """The key whose kid is `kid`, as key() finds it, its modulus not vetted."""
        keys, refreshed = self._current()
        found = keys.get(kid)
        if found is not None:
            return found
        if refreshed:
            raise _unknown_kid()
        with self._lock:
            if self._failing:
                # The kid may be a new key the cache cannot fetch now: retry later, at once,
                # never held for a retry in flight (a hung server would hold every such caller).
                # Past the backoff, a retry starts in the background (a fresh set starts none).
                if self._may_retry(self._monotonic()):
                    self._start()
                raise KeysUnavailableError(
                    f"the token's kid is not in the cached set, and the set could not be "
                    f"refreshed: {self._last_error}"
                )
            flight = self._flight
            if flight is None:
                now = self._monotonic()
                last = self._unknown_at
                if last is not None and now - last < self._cooldown:
                    raise _unknown_kid()
                self._unknown_at = now
                flight = self._start()
        self._await(flight)
        with self._lock:
            found = self._keys.get(kid) if self._keys is not None else None
        if found is not None:
            return found
        if flight.error is not None:
            raise KeysUnavailableError(
                f"the token's kid is not in the cached set, and the set could not be "
                f"refreshed: {flight.error}"
            )
        raise _unknown_kid()

    def kids(self) -> list[str]:
        """The kids of the set as it is now, after a refresh if it needs one."""
        return list(self._current()[0])

    def _current(self) -> tuple[dict[str, PublicKey], bool]:
        """The set to use now, after a refresh if it needs one; True when this call waited for
        a refresh that succeeded."""
        with self._lock:
            now = self._monotonic()
            if self._keys is None:
                if not self._may_retry(now):
                    raise KeysUnavailableError(self._last_error)
            else:
                age = now - self._fetched
                if age < self._fresh.max_age:
                    return self._keys, False
                # Once a refresh has failed, stale-if-error alone bounds every stale use.
                stale = (
                    self._fresh.stale_if_error
                    if self._failing
                    else (self._fresh.stale_while_revalidate)
                )
                if age < self._fresh.max_age + stale:
                    if self._may_retry(now):
                        self._start()  # in the background: this caller does not wait
                    return self._keys, False
                if not self._may_retry(now):
                    return self._stale(now), False
            flight = self._start()
        self._await(flight)
        with self._lock:
            if flight.error is None and self._keys is not None:
                return self._keys, True
            return self._stale(self._monotonic()), False

    def _stale(self, now: float) -> dict[str, PublicKey]:
        """The cached set if it may still be used after a failure (within stale-if-error after
        max-age), or KeysUnavailableError. Called with the lock held."""
        if self._keys is None:
            raise KeysUnavailableError(self._last_error)
        if now - self._fetched < self._fresh.max_age + self._fresh.stale_if_error:
            return self._keys
        raise KeysUnavailableError(
            f"the cached set is past its stale-if-error and could not be refreshed: "
            f"{self._last_error}"
        )

    def _may_retry(self, now: float) -> bool:
        """Whether a refresh may be sent now: none failed, or the backoff is over."""
        return not self._failing or now >= self._retry_at

    def _start(self) -> _Flight:
        """Start a refresh, or return the one in flight. Called with the lock held."""
        if self._flight is not None:
            return self._flight
        flight = _Flight()
        self._flight = flight
        thread = threading.Thread(
            target=self._run, args=(flight, self._etag), name="agentrouter-jwks", daemon=True
        )
        thread.start()
        return flight

    def _await(self, flight: _Flight) -> None:
        # The request is bounded by the client's timeout; this bound holds even if it were not.
        if not flight.done.wait(self._timeout + 5.0):
            raise KeysUnavailableError(f"no key set within {self._timeout:g} s")

    def _run(self, flight: _Flight, etag: str) -> None:
        """Make one refresh and record what it brought."""
        error: str | None = None
        answer: _Answer | None = None
        try:
            answer = self._fetch(etag)
        except _FetchError as err:
            error = str(err)
        except Exception as err:  # a refresh must end its flight, whatever fails
            error = f"the refresh failed ({type(err).__name__})"
        with self._lock:
            if answer is not None:
                error = self._record(answer, etag)
            self._record_outcome(error)
            self._flight, flight.error = None, error
        flight.done.set()

    def _record(self, answer: _Answer, etag: str) -> str | None:
        """Keep what a refresh sent with If-None-Match `etag` ("": none) brought; the error of a
        304 that renews nothing: with no set cached, to a request without If-None-Match (it
        compared nothing), or with another ETag."""
        if not answer.not_modified:
            self._keys, self._etag = answer.keys, answer.etag
            self._fetched, self._fresh = self._monotonic(), answer.fresh
            return None
        if self._keys is None:
            return "the server answered 304 Not Modified, but no set is cached"
        if not etag:
            return "the server answered 304 Not Modified to a request without If-None-Match"
        if answer.etag and answer.etag.removeprefix("W/") != self._etag.removeprefix("W/"):
            # weak comparison (RFC 9110 §8.8.3.2): a compressing proxy may weaken a tag. The
            # cached tag is dropped, so the retry is an unconditional GET whose 200 brings the
            # set again: else every retry would send it and get the same 304, for ever.
            self._etag = ""
            return "the server answered 304 Not Modified with another ETag than the cached set's"
        self._fetched = self._monotonic()
        if answer.has_cache_control:
            self._fresh = answer.fresh
        return None

    def _record_outcome(self, error: str | None) -> None:
        """Log the start and end of a streak of failures; back off while it lasts."""
        if error is None:
            if self._failing:
                self._logger.info(
                    "agentrouter: the key set of %s is refreshed again", printable(self._safe_url)
                )
            self._failing, self._last_error = False, ""
            return
        if not self._failing:
            self._failing, self._backoff = True, _FIRST_BACKOFF
            self._logger.warning(
                "agentrouter: the key set of %s could not be refreshed (%s); %s; retrying "
                "with backoff",
                printable(self._safe_url),
                error,
                "no set is cached"
                if self._keys is None
                else "the cached set is used within its stale-if-error",
            )
        else:
            self._backoff = min(2 * self._backoff, _MAX_BACKOFF)
        self._retry_at, self._last_error = self._monotonic() + self._backoff, error

    def _fetch(self, etag: str) -> _Answer:
        """One GET of the set (conditional when an ETag is known), and its answer read."""
        headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        if etag:
            headers["if-none-match"] = etag
        try:
            response = self._http.get(self.url, headers, timeout=self._timeout)
        except ConnectError:  # the transport's bound, while the body was read
            raise _FetchError(
                f"the answer is larger than the limit of {self._max_bytes} bytes (max_bytes)"
            ) from None
        except TimeoutError:
            raise _FetchError(f"no answer within {self._timeout:g} s") from None
        except Exception as err:  # pyqwest's errors have no common root
            said = _strip_url(str(err), self.url, self._safe_url)
            raise _FetchError(
                f"the request failed ({type(err).__name__}: {printable(said)[:200]})"
            ) from None
        fresh, has_cache_control = parse_cache_control(response.headers.getall("cache-control"))
        etag_got = printable(response.headers.get("etag", "") or "")
        if response.status == 304:
            return _Answer(True, {}, etag_got, fresh, has_cache_control)
        if response.status != 200:
            raise _FetchError(f"the server answered HTTP {response.status}")
        try:
            keys = parse_key_set(response.content)
        except ValueError as err:
            raise _FetchError(str(err)) from None
        return _Answer(False, keys, etag_got, fresh, has_cache_control)


def _unknown_kid() -> InvalidTokenError:
    return InvalidTokenError("no key of the set has the token's kid")


def _without_query(url: str) -> str:
    """`url` without its query and fragment, which may hold a credential: what logs name."""
    return url.split("#", 1)[0].split("?", 1)[0]


def _strip_url(text: str, url: str, safe: str) -> str:
    """`text` (an HTTP library's error) with `url`'s query and fragment taken out."""
    text = text.replace(url, safe)
    for mark in ("?", "#"):
        if mark in url:
            text = text.replace(url[url.index(mark) :], "")
    # and any URL the library wrote in its own spelling
    return _URL_TAIL.sub(r"\1", text)


def _url_parts(url: str) -> tuple[str, str, int] | None:
    """An http(s) URL's origin (scheme, host, port), or None when it is not a usable one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port if port is not None else default


def _json_object(data: bytes) -> dict[str, Any] | None:
    """`data` as one JSON object in strict UTF-8 (no BOM, no UTF-16 or UTF-32, nothing but
    whitespace after it), or None. Of a member named twice, the last is read (as json does)."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
