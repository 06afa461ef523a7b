"""The Python SDK where a hostile or broken server, proxy or token would find a gap: token parts
(canonical unpadded base64url, one strict UTF-8 JSON object each), weak keys (small-order
Ed25519, weak RSA exponents, prime moduli, RSA over 4096 bits, oddly spelled members), a 304
that renews nothing (another ETag, or to an unconditional GET), stale use past a failed refresh,
a hung server, unknown kids while refreshes fail, discovery over https, jwks_uri spellings, URL
queries kept out of logs, ages on a monotonic clock, redirects (the origin judged on the URL
reached, Go's limits, Locations refused), an RSA modulus vetted when a token first names its key
(once per modulus), and the Cache-Control grammar to the letter."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from connectrpc.errors import ConnectError
from pyqwest import Headers, SyncRequest, SyncResponse

from agentrouter_sdk import (
    AgentRouterError,
    Client,
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
    PublicKey,
    TokenVerifier,
    _keyset,
)
from agentrouter_sdk._keyset import parse_cache_control, parse_key_set
from agentrouter_sdk._transport import RedirectTransport, redirect_target
from tars.auth.v1 import auth_pb2
from tests.interop.peer import _certificate
from tests.unit.sdk_python_jwks import (
    START,
    Answer,
    FakeClock,
    JwksPeer,
    b64,
    jwks_peer,
    key_set,
    new_key,
)

ISSUER, AUDIENCE = "https://issuer.example.test", "svc"
ES, ED = new_key("es-1"), new_key("ed-1", "EdDSA")
OTHER = new_key("es-2")
CLAIMS: dict[str, Any] = {
    "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": START, "exp": START + 300,
}  # fmt: skip


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def peer() -> Iterator[JwksPeer]:
    body = key_set(ES.jwk(), ED.jwk())
    with jwks_peer(Answer(body=body, cache_control="max-age=60", etag='"v1"')) as running:
        yield running


def verifier_over(peer: JwksPeer, clock: FakeClock) -> TokenVerifier:
    cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
    return TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)


# Token parts: canonical unpadded base64url only.


def test_a_non_ascii_payload_is_an_invalid_token(peer: JwksPeer, clock: FakeClock) -> None:
    header, _, signature = ES.sign(CLAIMS).split(".")
    with pytest.raises(InvalidTokenError):
        verifier_over(peer, clock).verify(f"{header}.\u00e9.{signature}")


def flip_unused_bits(part: str) -> str:
    """`part` with its last character's unused low bits set: the same bytes decoded."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused = {2: 4, 3: 2}[len(part) % 4]  # 2 chars carry 8 of 12 bits, 3 carry 16 of 18
    last = alphabet.index(part[-1])
    assert last % (1 << unused) == 0  # a canonical encoder left them zero
    return part[:-1] + alphabet[last | ((1 << unused) - 1)]


@pytest.mark.parametrize("where", [0, 1, 2])
def test_non_canonical_trailing_bits_are_an_invalid_token(
    peer: JwksPeer, clock: FakeClock, where: int
) -> None:
    verifier = verifier_over(peer, clock)
    for pad in range(4):  # a claim of 0-3 characters: some length leaves unused bits
        parts = ES.sign({**CLAIMS, "pad": "x" * pad}, pad="y" * pad).split(".")
        if len(parts[where]) % 4:
            break
    verifier.verify(".".join(parts))  # the canonical token verifies
    parts[where] = flip_unused_bits(parts[where])
    decoded = base64.urlsafe_b64decode(parts[where] + "=" * (-len(parts[where]) % 4))
    assert b64(decoded) != parts[where]  # the same bytes, another spelling
    with pytest.raises(InvalidTokenError):
        verifier.verify(".".join(parts))


def test_the_signature_with_unused_bits_set_is_an_invalid_token(
    peer: JwksPeer, clock: FakeClock
) -> None:
    # An ES256 signature is 64 bytes: 86 characters, the last carrying 4 unused bits.
    header, payload, signature = ES.sign(CLAIMS).split(".")
    assert len(signature) == 86
    with pytest.raises(InvalidTokenError):
        verifier_over(peer, clock).verify(f"{header}.{payload}.{flip_unused_bits(signature)}")


@pytest.mark.parametrize(
    "change",
    [
        lambda p: [p[0], p[1][:5] + "\n" + p[1][5:], p[2]],
        lambda p: [p[0], p[1], p[2][:5] + "\r\n" + p[2][5:]],
        lambda p: [p[0], p[1], p[2] + "\n"],
        lambda p: [p[0], p[1], p[2] + "=="],
        lambda p: [p[0] + "=", p[1], p[2]],
        lambda p: [p[0], p[1], " " + p[2]],
    ],
    ids=["lf-in-payload", "crlf-in-signature", "trailing-lf", "padding", "header-pad", "space"],
)
def test_whitespace_and_padding_are_an_invalid_token(
    peer: JwksPeer, clock: FakeClock, change: Any
) -> None:
    parts = ES.sign(CLAIMS).split(".")
    with pytest.raises(InvalidTokenError):
        verifier_over(peer, clock).verify(".".join(change(parts)))


# Redirects: a 3xx is a failed fetch.


def test_a_redirect_to_another_origin_is_a_failed_fetch(clock: FakeClock) -> None:
    with jwks_peer(Answer(body=key_set(OTHER.jwk()), cache_control="max-age=60")) as elsewhere:
        redirect = Answer(status=302, location=elsewhere.url + "/jwks", cache_control=None)
        with jwks_peer(redirect) as origin:
            cache = KeySetCache(Client(origin.url, timeout=5), clock=clock)
            with pytest.raises(KeysUnavailableError, match="HTTP 302"):
                cache.key("es-2")
            assert elsewhere.count() == 0


def test_a_same_origin_redirect_of_a_jwks_uri_is_a_failed_fetch(clock: FakeClock) -> None:
    with jwks_peer(Answer(status=307, location="/other", cache_control=None)) as origin:
        client = Client(origin.url, timeout=5)
        cache = KeySetCache(client, jwks_uri=origin.url + "/jwks", clock=clock)
        with pytest.raises(KeysUnavailableError, match="HTTP 307"):
            cache.kids()
        assert origin.count() == 1


# stale-if-error bounds every stale use once a refresh has failed.


def failure_recorded(caplog: pytest.LogCaptureFixture) -> None:
    """Poll (bounded) for the cache's warning of a failed refresh: it is logged under the
    cache's lock, once the failure is recorded (the peer's answer alone comes a moment before)."""
    deadline = time.monotonic() + 10
    while not any(r.levelno == logging.WARNING for r in caplog.records):
        assert time.monotonic() < deadline, "no failed refresh was logged"
        time.sleep(0.01)


def test_stale_while_revalidate_does_not_extend_past_a_failed_refresh(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentrouter_sdk")
    policy = "max-age=10, stale-while-revalidate=86400, stale-if-error=0"
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control=policy)) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        clock.advance(15)
        cache.key("es-1")  # within swr, no failure yet: answered, refreshed in the background
        failure_recorded(caplog)
        clock.advance(5)
        with pytest.raises(KeysUnavailableError):
            cache.key("es-1")
        clock.advance(3600)
        with pytest.raises(KeysUnavailableError):
            cache.key("es-1")


def test_a_success_after_a_failure_restores_stale_while_revalidate(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agentrouter_sdk")
    policy = "max-age=10, stale-while-revalidate=100, stale-if-error=0"
    good = Answer(body=key_set(ES.jwk()), cache_control=policy)
    with jwks_peer(good) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        clock.advance(20)
        cache.key("es-1")
        failure_recorded(caplog)
        clock.advance(2)  # past the 1 s backoff: this caller waits for the retry, which works
        peer.answer = good
        assert cache.key("es-1").kid == "es-1"
        clock.advance(20)  # within swr of the new answer: answered at once
        assert cache.key("es-1").kid == "es-1"


# A 304 with another ETag is a failed refresh.


def test_a_304_with_another_etag_is_not_adopted(clock: FakeClock) -> None:
    first = Answer(body=key_set(ES.jwk()), cache_control="max-age=10, stale-if-error=600",
                   etag='"v1"')  # fmt: skip
    with jwks_peer(first) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=304, cache_control="max-age=10", etag='"v2"')
        clock.advance(20)
        assert cache.key("es-1").kid == "es-1"  # the refresh failed; the set is within sie
        peer.wait_for(2)
        # the server now holds set B under "v2": a client that adopted "v2" would get 304s.
        peer.answer = Answer(body=key_set(OTHER.jwk()), cache_control="max-age=10", etag='"v2"')
        clock.advance(2)
        cache.key("es-1")  # the retry, in the background
        peer.wait_for(3)
        assert peer.requests[-1].get("if-none-match") != '"v2"'
        assert key_once_refreshed(cache, "es-2").kid == "es-2"


def key_once_refreshed(cache: KeySetCache, kid: str) -> PublicKey:
    """`kid`'s key once a background refresh has brought it (a bounded poll)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return cache.key(kid)
        except KeysUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def test_a_304_with_the_same_tag_weakened_or_not_renews_the_set(clock: FakeClock) -> None:
    """A compressing proxy weakens the 200's tag; the 304 it passes on carries the origin's."""
    for cached, revalidated in (('W/"v1"', '"v1"'), ('"v1"', 'W/"v1"')):
        first = Answer(body=key_set(ES.jwk()), cache_control="max-age=10", etag=cached)
        with jwks_peer(first) as peer:
            cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
            cache.key("es-1")
            peer.answer = Answer(status=304, cache_control="max-age=10", etag=revalidated)
            clock.advance(11)  # stale, no stale-if-error: only a renewal answers
            assert cache.key("es-1").kid == "es-1"
            assert peer.requests[-1]["if-none-match"] == cached
            clock.advance(5)  # fresh again from the 304: no request
            assert cache.key("es-1").kid == "es-1"
            assert len(peer.requests) == 2


def test_a_304_to_a_request_without_if_none_match_is_a_failed_refresh(clock: FakeClock) -> None:
    """A set answered without an ETag is revalidated by an unconditional GET: a 304 to it
    compares nothing, so it renews nothing (the set, stale, without stale-if-error, is not
    used)."""
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control="max-age=10")) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=304, cache_control="max-age=10")
        clock.advance(11)
        with pytest.raises(KeysUnavailableError, match="304 Not Modified to a request without"):
            cache.key("es-1")
        assert "if-none-match" not in peer.requests[-1]
        assert peer.count() == 2


# Within a usable stale set, a hung server does not stall callers.


def test_a_hung_server_does_not_stall_callers_within_stale_if_error(clock: FakeClock) -> None:
    policy = "max-age=10, stale-if-error=600"
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control=policy)) as peer:
        cache = KeySetCache(Client(peer.url, timeout=30), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        clock.advance(20)
        assert cache.key("es-1").kid == "es-1"  # waited for the failed refresh, then stale
        peer.answer = Answer(status=503, cache_control=None, hold=True)
        clock.advance(2)  # past the backoff
        answered = threading.Event()

        def call() -> None:
            cache.key("es-1")
            answered.set()

        threading.Thread(target=call, daemon=True).start()
        # The caller is answered while the server still holds the retry (bounded wait).
        assert answered.wait(10), "the caller waited for the hung refresh"
        assert not peer.release.is_set()


# Keys refused at load.


def okp(x: bytes) -> dict[str, Any]:
    return {"kty": "OKP", "crv": "Ed25519", "x": b64(x), "kid": "weak", "alg": "EdDSA"}


P = 2**255 - 19


@pytest.mark.parametrize(
    "x",
    [
        bytes([1]) + bytes(31),  # the identity (order 1)
        bytes(32),  # y = 0 (order 4)
        (P - 1).to_bytes(32, "little"),  # y = -1 (order 2)
        (P + 1).to_bytes(32, "little"),  # the identity, not reduced
        # the two order-8 points of libsodium's small-order blocklist (ed25519_ref10.c)
        bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    ],
    ids=["identity", "order-4", "order-2", "identity-non-canonical", "order-8", "order-8b"],
)
def test_a_small_order_ed25519_key_is_refused(x: bytes) -> None:
    keys = parse_key_set(key_set(okp(x), ED.jwk()))
    assert list(keys) == ["ed-1"]


def test_the_identity_key_verifies_no_forged_token(peer: JwksPeer, clock: FakeClock) -> None:
    peer.answer = Answer(body=key_set(okp(bytes([1]) + bytes(31)), ES.jwk()))
    header = b64({"alg": "EdDSA", "kid": "weak", "typ": "JWT"})
    forged = f"{header}.{b64(CLAIMS)}.{b64(bytes([1]) + bytes(63))}"
    with pytest.raises(InvalidTokenError):
        verifier_over(peer, clock).verify(forged)


def rsa_member(n: int, e: int) -> dict[str, Any]:
    def big(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "n": big(n), "e": big(e), "kid": "weak", "alg": "RS256"}


@pytest.mark.parametrize("e", [1, 2, 65536])
def test_an_rsa_key_with_a_weak_exponent_is_refused(e: int) -> None:
    n = (1 << 2047) | 0xC001  # 2048 bits, odd
    assert list(parse_key_set(key_set(rsa_member(n, e), ES.jwk()))) == ["es-1"]


def test_an_ec_point_off_the_curve_is_refused() -> None:
    member = ES.jwk(kid="weak")
    member["y"] = b64(bytes(31) + bytes([1]))
    assert list(parse_key_set(key_set(member, ED.jwk()))) == ["ed-1"]


def test_json_member_names_are_matched_exactly() -> None:
    with pytest.raises(ValueError, match='without a "keys" array'):
        parse_key_set(b'{"KEYS": ' + key_set(ES.jwk())[len(b'{"keys": ') :])


# No URL query or fragment in a log line or an error message.


def test_no_query_of_the_jwks_uri_is_logged_or_raised(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with jwks_peer(Answer(status=503, cache_control=None)) as peer:
        uri = peer.url + "/jwks?access_token=SECRET123#frag-SECRET456"
        cache = KeySetCache(Client(peer.url, timeout=5), jwks_uri=uri, clock=clock)
        caplog.set_level(logging.INFO, logger="agentrouter_sdk")
        with pytest.raises(KeysUnavailableError) as raised:
            cache.kids()
        assert peer.count() == 1
        assert caplog.records, "the failure is logged"
        text = caplog.text + str(raised.value)
        assert "SECRET" not in text
        assert "/jwks" in caplog.text


def test_an_unreachable_jwks_uri_names_no_query(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with jwks_peer(Answer()) as peer:
        port = peer.url.rsplit(":", 1)[1]
    uri = f"http://127.0.0.1:{port}/jwks?access_token=SECRET123"  # closed now
    cache = KeySetCache(Client(f"http://127.0.0.1:{port}", timeout=2), jwks_uri=uri, clock=clock)
    caplog.set_level(logging.INFO, logger="agentrouter_sdk")
    with pytest.raises(KeysUnavailableError) as raised:
        cache.kids()
    assert "SECRET" not in caplog.text + str(raised.value)


def test_a_first_fetch_failure_log_says_no_set_is_cached(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    with jwks_peer(Answer(status=503, cache_control=None)) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        caplog.set_level(logging.INFO, logger="agentrouter_sdk")
        with pytest.raises(KeysUnavailableError):
            cache.kids()
    assert "cached set is used" not in caplog.text
    assert "no set is cached" in caplog.text


# Cache-Control.


def test_max_age_of_many_digits_is_read_whole() -> None:
    assert parse_cache_control(["max-age=0000000000000060"])[0].max_age == 60
    assert parse_cache_control(["max-age=" + "9" * 40])[0].max_age == 24 * 3600


def test_a_comma_inside_a_quoted_string_does_not_split() -> None:
    fresh, _ = parse_cache_control(['ext="a, max-age=86400", max-age=5'])
    assert fresh.max_age == 5
    fresh, _ = parse_cache_control(['ext="x\\", max-age=86400", max-age=7, stale-if-error=9'])
    assert (fresh.max_age, fresh.stale_if_error) == (7, 9)


def test_an_empty_jwks_uri_is_an_error_not_the_clients_get_jwks() -> None:
    # from_issuer passes the discovery document's jwks_uri, "" when it is missing.
    with pytest.raises(ValueError, match="jwks_uri must be an absolute"):
        KeySetCache(Client("http://127.0.0.1:9"), jwks_uri="")


# A 304's tag dropped; unknown kids while refreshes fail.


def test_a_304_with_another_etag_drops_the_tag_so_the_retry_is_unconditional(
    clock: FakeClock,
) -> None:
    """A peer that answers any If-None-Match with 304 and another tag, and an unconditional
    GET with 200 and the set: the cache recovers on its first retry."""
    first = Answer(body=key_set(ES.jwk()), cache_control="max-age=10, stale-if-error=600",
                   etag='"v1"')  # fmt: skip
    with jwks_peer(first) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(body=key_set(ES.jwk(), OTHER.jwk()), cache_control="max-age=10",
                             etag='"v1"', other_304='"v2"')  # fmt: skip
        clock.advance(20)
        assert cache.key("es-1").kid == "es-1"  # the refresh failed; the set is within sie
        peer.wait_for(2)
        assert peer.requests[1]["if-none-match"] == '"v1"'
        clock.advance(2)  # past the first backoff: one retry, in the background
        cache.key("es-1")
        peer.wait_for(3)
        assert "if-none-match" not in peer.requests[2]
        assert key_once_refreshed(cache, "es-2").kid == "es-2"
        assert peer.count() == 3  # the 200 replaced the set: no refresh for es-2


def held_retry(peer: JwksPeer, clock: FakeClock, timeout: float) -> KeySetCache:
    """A cache whose set is past max-age, within stale-if-error, after a failed refresh."""
    cache = KeySetCache(Client(peer.url, timeout=timeout), clock=clock)
    cache.key("es-1")
    peer.answer = Answer(status=503, cache_control=None)
    clock.advance(20)
    assert cache.key("es-1").kid == "es-1"  # waited for the failed refresh, then stale
    return cache


def test_an_unknown_kid_does_not_wait_for_a_retry_in_flight(clock: FakeClock) -> None:
    """A server that accepts and never answers; an unknown kid is keys unavailable at
    once, without waiting for the retry."""
    policy = "max-age=10, stale-if-error=600"
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control=policy)) as peer:
        cache = held_retry(peer, clock, timeout=30)
        peer.answer = Answer(status=503, cache_control=None, hold=True)
        clock.advance(2)  # past the backoff: the retry starts in the background and hangs
        assert cache.key("es-1").kid == "es-1"
        deadline = time.monotonic() + 10
        while peer.count() < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert peer.count() == 3
        outcome: list[BaseException] = []
        answered = threading.Event()

        def call() -> None:
            try:
                cache.key("new-key")
            except Exception as err:
                outcome.append(err)
            answered.set()

        threading.Thread(target=call, daemon=True).start()
        assert answered.wait(5), "the unknown kid waited for the retry in flight"
        assert isinstance(outcome[0], KeysUnavailableError), outcome
        assert not peer.release.is_set()


def test_an_unknown_kid_within_the_backoff_is_keys_unavailable(clock: FakeClock) -> None:
    """After a failed refresh, within its backoff, an unknown kid may be a new key the
    cache cannot fetch: keys unavailable (503, retry), not invalid; no request."""
    policy = "max-age=10, stale-if-error=600"
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control=policy)) as peer:
        cache = held_retry(peer, clock, timeout=5)
        with pytest.raises(KeysUnavailableError):
            cache.key("new-key")
        assert peer.count() == 2
        assert cache.key("es-1").kid == "es-1"  # a known kid is still answered


def test_an_unknown_kid_past_the_backoff_of_a_fresh_set_starts_a_background_retry(
    clock: FakeClock,
) -> None:
    """Else, with the set fresh, nothing would retry and a new key stayed unknown (keys
    unavailable) until max-age."""
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control="max-age=3600")) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock, unknown_kid_cooldown=0)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        with pytest.raises(KeysUnavailableError):
            cache.key("ed-1")  # its refresh failed
        with pytest.raises(KeysUnavailableError):
            cache.key("ed-1")  # within the backoff: at once, no request
        assert peer.count() == 2
        peer.answer = Answer(body=key_set(ES.jwk(), ED.jwk()), cache_control="max-age=3600")
        clock.advance(2)  # past the 1 s backoff; the set is still fresh
        with pytest.raises(KeysUnavailableError):
            cache.key("ed-1")  # answered at once, while the retry it started runs
        assert key_once_refreshed(cache, "ed-1").kid == "ed-1"
        assert peer.count() == 3


def tls_peer_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context whose certificate a test CA signs, and that CA's file."""
    ca_file, cert_file, key_file = _certificate(directory)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


def discovery(issuer: str, jwks_uri: str) -> Answer:
    """A Connect GET answer of GetOpenIDConfiguration, in protobuf."""
    document = auth_pb2.GetOpenIDConfigurationResponse(issuer=issuer, jwks_uri=jwks_uri)
    return Answer(body=document.SerializeToString(), content_type="application/proto")


# from_issuer over an https base URL, in a process of its own: pyqwest reads SSL_CERT_FILE when
# its transport is made. Prints "built" and the jwks_uri, or "refused" and the error.
FROM_ISSUER = """
import sys
from agentrouter_sdk import Client, TokenVerifier
try:
    with Client(sys.argv[1], "k-1", timeout=5) as client:
        verifier = TokenVerifier.from_issuer(sys.argv[2], client=client, audience="svc")
    print("built", verifier.cache.url)
except Exception as err:
    print("refused", type(err).__name__, err)
"""


def from_issuer_in_a_process(ca_file: Path, base_url: str, issuer: str) -> str:
    env = {**os.environ, "SSL_CERT_FILE": str(ca_file)}
    argv = [sys.executable, "-c", FROM_ISSUER, base_url, issuer]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def test_discovery_redirected_from_https_to_http_is_refused(tmp_path: Path) -> None:
    """A plaintext hop must not choose the trust anchor."""
    context, ca_file = tls_peer_context(tmp_path)
    with jwks_peer(Answer()) as plain:
        plain.answer = discovery("iss", plain.url + "/jwks")
        redirect = Answer(status=307, location=plain.url + "/x", cache_control=None)
        with jwks_peer(redirect, tls=context) as secure:
            said = from_issuer_in_a_process(ca_file, secure.url, "iss")
            assert said.startswith("refused AgentRouterError"), said
            assert secure.count() == 1
            assert plain.count() == 0, "the redirect to http was followed"


def test_an_https_discovery_reaches_its_document(tmp_path: Path) -> None:
    """The https peer itself works: what the refusal above refuses is the redirect."""
    context, ca_file = tls_peer_context(tmp_path)
    with jwks_peer(Answer(), tls=context) as secure:
        secure.answer = discovery(secure.url, secure.url + "/jwks")
        said = from_issuer_in_a_process(ca_file, secure.url, secure.url)
        assert said == f"built {secure.url}/jwks\n", said


def test_an_https_issuer_naming_an_http_jwks_uri_is_refused() -> None:
    """An https issuer's keys are fetched over https only."""
    with jwks_peer(Answer()) as peer:
        peer.answer = discovery(ISSUER, peer.url + "/jwks")
        with pytest.raises(ValueError, match="https"):
            TokenVerifier.from_issuer(ISSUER, client=Client(peer.url), audience=AUDIENCE)
        peer.answer = discovery("http://issuer.example.test", peer.url + "/jwks")
        verifier = TokenVerifier.from_issuer(
            "http://issuer.example.test", client=Client(peer.url), audience=AUDIENCE
        )
        assert verifier.cache.url == peer.url + "/jwks"


# An RSA modulus that is a prime (openssl prime -generate -bits 2048): phi(n) = n - 1, so
# anyone computes d from the published key.
PRIME_N = int(
    "D740C4F90ABD699792CC84AF96E36D2351D9229C133EE6BC6EC8F68372F240C944CFD9156DC9057074D13DE8"
    "A55BD488B1854C7DBEBB78329B1ED14844F59528D55479E6AEAD584669398D3604E39306CE580912FA117B92"
    "F24D0B748C89DB26E9657B4D6EF6A4F07872D36BCFF4FFCE8A4D8ECFA2EB54DE796E555B1B188D53F3BE11C2"
    "2FB2C360D8CA84CC46C710703973A11C64FEBDCC33883AEBE88D4E450A016D4A1ED6ED57F4CDB894976E4286"
    "38BD90033EFEFCF657800C54381482BD6CD67197F1E69D84ECDBEF245951239D44DB3BE65FF49C8E371F4F1C"
    "08E99E69FE1652F6C1A9EED42F12848D8CEAE8A8AFE81FB13BDAC726C246E7A939B24271",
    16,
)
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


def prime_signed(claims: dict[str, Any]) -> str:
    """A token RS256-"signed" for the prime modulus with d = e^-1 mod (n - 1)."""
    signing_input = f"{b64({'alg': 'RS256', 'kid': 'weak'})}.{b64(claims)}".encode()
    size = (PRIME_N.bit_length() + 7) // 8
    digest = SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    encoded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
    d = pow(65537, -1, PRIME_N - 1)
    signature = pow(int.from_bytes(encoded, "big"), d, PRIME_N).to_bytes(size, "big")
    assert pow(int.from_bytes(signature, "big"), 65537, PRIME_N) == int.from_bytes(encoded, "big")
    return f"{signing_input.decode()}.{b64(signature)}"


def test_an_rsa_key_whose_modulus_is_prime_is_refused_when_a_token_names_it(
    clock: FakeClock,
) -> None:
    """The set is read whole (the prime key kept, unvetted); the token naming it is refused,
    and the other keys' tokens verify."""
    rs = new_key("rs-1", "RS256")
    body = key_set(rsa_member(PRIME_N, 65537), ES.jwk(), rs.jwk())
    assert list(parse_key_set(body)) == ["weak", "es-1", "rs-1"]
    assert list(parse_key_set(key_set(rsa_member(PRIME_N, 65537)))) == ["weak"]
    with jwks_peer(Answer(body=body, cache_control="max-age=60")) as peer:
        verifier = verifier_over(peer, clock)
        for _ in range(2):  # the second time from the memo
            with pytest.raises(InvalidTokenError, match="its RSA modulus is prime"):
                verifier.verify(prime_signed(CLAIMS))
        assert verifier.verify(ES.sign(CLAIMS))["sub"] == "user-1"
        assert verifier.verify(rs.sign(CLAIMS))["sub"] == "user-1"


def test_an_rsa_key_of_two_primes_is_kept() -> None:
    rs = new_key("rs-1", "RS256")
    assert list(parse_key_set(key_set(rs.jwk(), ES.jwk()))) == ["rs-1", "es-1"]


def test_a_malformed_rsa_key_leaves_the_rest_of_the_set_usable(clock: FakeClock) -> None:
    """One RSA key with n "A" is skipped; the good key verifies."""
    junk = {"kty": "RSA", "n": "A", "e": "AQAB", "kid": "junk", "alg": "RS256"}
    with jwks_peer(Answer(body=key_set(ES.jwk(), junk), cache_control="max-age=60")) as peer:
        assert verifier_over(peer, clock).verify(ES.sign(CLAIMS))["sub"] == "user-1"


def signed_parts(header: bytes, payload: bytes) -> str:
    """A token of exactly these header and payload bytes, signed by ES."""
    signing_input = f"{b64(header)}.{b64(payload)}"
    signature = jwt.get_algorithm_by_name("ES256").sign(signing_input.encode(), ES.private)
    return f"{signing_input}.{b64(signature)}"


HEADER = json.dumps({"alg": "ES256", "kid": "es-1"}).encode()
PAYLOAD = json.dumps(CLAIMS).encode()
UNREADABLE_TOKENS = {
    "header UTF-16": (HEADER.decode().encode("utf-16-le"), PAYLOAD),
    "payload UTF-16": (HEADER, PAYLOAD.decode().encode("utf-16")),
    "header with a BOM": (b"\xef\xbb\xbf" + HEADER, PAYLOAD),
    "payload with a BOM": (HEADER, b"\xef\xbb\xbf" + PAYLOAD),
    "payload with a trailing }": (HEADER, PAYLOAD + b"}"),
    "payload with a trailing ]": (HEADER, PAYLOAD + b"]"),
    "header with a trailing }": (HEADER + b"}", PAYLOAD),
    "payload not UTF-8": (HEADER, PAYLOAD[:-1] + b', "x": "u\xff"}'),
    "header not UTF-8": (HEADER[:-1] + b', "x": "u\xff"}', PAYLOAD),
    "header with b64": (HEADER[:-1] + b', "b64": false}', PAYLOAD),
    "header with b64 true": (HEADER[:-1] + b', "b64": true}', PAYLOAD),
}


@pytest.mark.parametrize("parts", UNREADABLE_TOKENS.values(), ids=UNREADABLE_TOKENS.keys())
def test_a_part_not_one_strict_utf8_json_object_is_an_invalid_token(
    peer: JwksPeer, clock: FakeClock, parts: tuple[bytes, bytes]
) -> None:
    """Each part is exactly one JSON object in strict UTF-8 (no BOM); no b64 header."""
    verifier = verifier_over(peer, clock)
    assert verifier.verify(signed_parts(HEADER, PAYLOAD))["sub"] == "user-1"
    with pytest.raises(InvalidTokenError):
        verifier.verify(signed_parts(*parts))


def test_trailing_whitespace_and_duplicate_members_are_read_as_json_reads_them(
    peer: JwksPeer, clock: FakeClock
) -> None:
    """JSON allows whitespace after the object; a repeated member: the last wins (json)."""
    verifier = verifier_over(peer, clock)
    assert verifier.verify(signed_parts(HEADER + b" \n", PAYLOAD + b"\n"))["sub"] == "user-1"
    twice = PAYLOAD[:-1] + b', "sub": "user-2"}'
    assert verifier.verify(signed_parts(HEADER, twice))["sub"] == "user-2"


GOOD_SET = key_set(ES.jwk())
UNREADABLE_SETS = {
    "a BOM": b"\xef\xbb\xbf" + GOOD_SET,
    "UTF-16": GOOD_SET.decode().encode("utf-16"),
    "UTF-16LE": GOOD_SET.decode().encode("utf-16-le"),
    "invalid UTF-8 in a member": GOOD_SET[:-1] + b', "x": "\xff"}',
    "deep nesting in a member": GOOD_SET[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}


@pytest.mark.parametrize("body", UNREADABLE_SETS.values(), ids=UNREADABLE_SETS.keys())
def test_a_set_not_strict_utf8_json_is_an_error_of_the_fetch(clock: FakeClock, body: bytes) -> None:
    """The body is strict UTF-8 JSON without a BOM; deep nesting is an error, no crash."""
    with pytest.raises(ValueError, match="not a JSON JWK Set"):
        parse_key_set(body)
    with jwks_peer(Answer(body=body)) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        with pytest.raises(KeysUnavailableError, match="not a JSON JWK Set"):
            cache.kids()


def respelled(member: dict[str, Any], name: str, how: str) -> dict[str, Any]:
    value = member[name]
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    if how == "padded":
        spelled = base64.urlsafe_b64encode(raw).decode()
    elif how == "standard":
        spelled = base64.b64encode(raw).decode().rstrip("=")
    else:  # a leading zero byte: one byte longer than the curve's size
        spelled = b64(b"\x00" + raw)
    return {**member, name: spelled, "kid": "odd"}


def with_marks(member: dict[str, Any], name: str) -> dict[str, Any]:
    """`member` with its `name` respelled until it has the marks of the other alphabet."""
    for _ in range(200):
        if any(mark in base64.b64encode(base64.urlsafe_b64decode(member[name] + "==")).decode()
               for mark in "+/"):  # fmt: skip
            return respelled(member, name, "standard")
        member = new_key(member["kid"], member["alg"]).jwk()
    raise AssertionError("no key with + or / found")


RSA_KEY = new_key("rs-1", "RS256")
ODD_SPELLINGS = {
    "EC x padded": lambda: respelled(OTHER.jwk(), "x", "padded"),
    "EC y padded": lambda: respelled(OTHER.jwk(), "y", "padded"),
    "EC x standard alphabet": lambda: with_marks(OTHER.jwk(), "x"),
    "EC y standard alphabet": lambda: with_marks(OTHER.jwk(), "y"),
    "EC x of 33 bytes": lambda: respelled(OTHER.jwk(), "x", "long"),
    "EC x of 31 bytes": lambda: {**OTHER.jwk(), "kid": "odd", "x": b64(bytes(31))},
    "Ed25519 x padded": lambda: respelled(ED.jwk(), "x", "padded"),
    "Ed25519 x standard alphabet": lambda: with_marks(ED.jwk(), "x"),
    "RSA n padded": lambda: respelled(RSA_KEY.jwk(), "n", "padded"),
    "RSA n standard alphabet": lambda: with_marks(RSA_KEY.jwk(), "n"),
    "RSA e padded": lambda: {**RSA_KEY.jwk(), "kid": "odd", "e": "AQAB="},
    "use null": lambda: {**OTHER.jwk(), "kid": "odd", "use": None},
    "use enc": lambda: {**OTHER.jwk(), "kid": "odd", "use": "enc"},
    "use empty": lambda: {**OTHER.jwk(), "kid": "odd", "use": ""},
}


@pytest.mark.parametrize("make", ODD_SPELLINGS.values(), ids=ODD_SPELLINGS.keys())
def test_a_key_spelled_oddly_is_skipped(make: Any) -> None:
    """Base64url members unpadded, in their alphabet, of the curve's size; use sig or none."""
    assert list(parse_key_set(key_set(make(), ES.jwk()))) == ["es-1"]


def test_certificate_members_neither_make_nor_unmake_a_key() -> None:
    keys = parse_key_set(key_set(OTHER.jwk(x5c=["garbage"], x5t="x"), ES.jwk()))
    assert list(keys) == ["es-2", "es-1"]
    assert list(parse_key_set(key_set({**OTHER.jwk(), "use": "sig"}))) == ["es-2"]
    no_use = {k: v for k, v in OTHER.jwk().items() if k != "use"}
    assert list(parse_key_set(key_set(no_use))) == ["es-2"]


# Cache-Control, one grammar; the same table in the three SDKs (None: no header).
D = 300
CACHE_CONTROL_TABLE = [
    ("max-age=60", 60, 0, 0),
    ('max-age="60"', 60, 0, 0),
    ('max-age="60"x', D, 0, 0),
    ('a"b, max-age=86400, c"d, max-age=5', 86400, 0, 0),
    ("max-age=60, max-age=5", 60, 0, 0),
    ("max-age=60, stale-while-revalidate=600, stale-while-revalidate=5", 60, 600, 0),
    ("max-age=60, stale-if-error=600, stale-if-error=x", 60, 0, 600),
    ("max-age=60, must-revalidate, stale-if-error=600, stale-while-revalidate=30", 60, 0, 0),
    ("no-store, stale-while-revalidate=86400", 0, 0, 0),
    ("no-cache, stale-if-error=86400", 0, 0, 0),
    ("MAX-AGE=60, Stale-If-Error=10", 60, 0, 10),
    ("max-age=x, max-age=60", D, 0, 0),
    ("max-age = 60", 60, 0, 0),
    ("max-age=-1", D, 0, 0),
    ("max-age=99999999999999999999999", 86400, 0, 0),
    ('ext="a, max-age=86400", max-age=5', 5, 0, 0),
    ("max-age=60, stale-if-error=99999999999", 60, 0, 31536000),
    (None, D, 0, 0),
]
# Beyond the shared table (the TypeScript SDK tests the same ones).
CACHE_CONTROL_MORE: list[tuple[str | None, int, int, int]] = [
    ("max-age=60, proxy-revalidate, stale-if-error=600, stale-while-revalidate=30", 60, 0, 0),
    ('no-cache="set-cookie", max-age=60, stale-if-error=600', 0, 0, 0),
    ("  max-age=60 ,\tstale-if-error=10  ", 60, 0, 10),
    ('max-age="60', D, 0, 0),
]


@pytest.mark.parametrize(
    ("value", "max_age", "swr", "sie"),
    CACHE_CONTROL_TABLE + CACHE_CONTROL_MORE,
    ids=[str(r[0]) for r in CACHE_CONTROL_TABLE + CACHE_CONTROL_MORE],
)
def test_cache_control_table(value: str | None, max_age: int, swr: int, sie: int) -> None:
    fresh, present = parse_cache_control([] if value is None else [value])
    assert (fresh.max_age, fresh.stale_while_revalidate, fresh.stale_if_error) == (
        max_age, swr, sie,
    )  # fmt: skip
    assert present == (value is not None)


def test_proxy_revalidate_also_disables_stale_use() -> None:
    fresh, _ = parse_cache_control(["max-age=60, proxy-revalidate, stale-if-error=600"])
    assert (fresh.max_age, fresh.stale_if_error) == (60, 0)


def test_must_revalidate_makes_a_failed_refresh_fail_closed_at_max_age(clock: FakeClock) -> None:
    policy = "max-age=10, must-revalidate, stale-if-error=600"
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control=policy)) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        clock.advance(11)
        with pytest.raises(KeysUnavailableError):
            cache.key("es-1")


# A jwks_uri that is not plainly one URL is refused at construction.


@pytest.mark.parametrize(
    "jwks_uri",
    [" http://h/jwks", "http://h/jwks ", "http://h/jw\nks", "http://h/jw\tks", "\thttp://h/jwks",
     "http://h/jw\x00ks", "http://h/jw\x7fks", "http://h/jw\x85ks", "http:\\\\h\\jwks",
     "http://h\\jwks", "http:h/jwks", "http:///jwks", "http://h/j wks"],
)  # fmt: skip
def test_a_jwks_uri_with_spaces_controls_backslashes_or_no_host_is_refused(jwks_uri: str) -> None:
    with pytest.raises(ValueError, match="jwks_uri"):
        KeySetCache(Client("http://127.0.0.1:1"), jwks_uri=jwks_uri)


def test_a_discovered_jwks_uri_with_a_newline_is_refused() -> None:
    with jwks_peer(Answer()) as peer:
        peer.answer = discovery(ISSUER, "https://h/jw\nks")
        with pytest.raises(ValueError, match="jwks_uri"):
            TokenVerifier.from_issuer(ISSUER, client=Client(peer.url), audience=AUDIENCE)


# Ages on a monotonic clock, claims on the wall clock.


def test_ages_follow_the_monotonic_clock_and_claims_the_wall_clock(
    peer: JwksPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wall clock stepped back an hour keeps no set fresh an hour longer."""
    wall, mono = FakeClock(), FakeClock(1000.0)
    monkeypatch.setattr(time, "time", wall)
    monkeypatch.setattr(time, "monotonic", mono)
    verifier = TokenVerifier(KeySetCache(Client(peer.url, timeout=5)), issuer=ISSUER,
                             audience=AUDIENCE)  # fmt: skip
    assert verifier.verify(ES.sign(CLAIMS))["sub"] == "user-1"
    wall.advance(-3600)
    mono.advance(61)  # max-age=60 is over, whatever the wall clock says
    verifier.verify(ES.sign({**CLAIMS, "iat": START - 3600}))
    assert peer.count() == 2
    wall.advance(3600 + 361)  # exp + leeway is read on the wall clock
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(ES.sign(CLAIMS))
    assert peer.count() == 2


# A redirect's target is judged on the URL it is sent to: the API key never reaches another
# origin, whichever parser would read the Location otherwise.

KEY = "SECRETKEY"
# {A}: the origin's port, {B}: another origin's. urllib reads the first spellings' host as A
# where reqwest (WHATWG rules: "\" ends an http URL's authority) reads B.
ELSEWHERE = [
    "http://127.0.0.1:{B}\\@127.0.0.1:{A}/x",
    "http://127.0.0.1:{B}\\\\@127.0.0.1:{A}/x",
    "http:\\\\127.0.0.1:{B}\\@127.0.0.1:{A}/x",
    "http://127.0.0.1:{B}\\x@127.0.0.1:{A}/x",
    "/\\127.0.0.1:{B}/x",
    "\\\\127.0.0.1:{B}/x",
    "http://127.0.0.1:{B}\t/x",
    "/\t/127.0.0.1:{B}/x",
    "//127.0.0.1:{B}/x",
    "http://127.0.0.1:{A}@127.0.0.1:{B}/x",
    "http://u:p@127.0.0.1:{B}/x",
    "http://127.0.0.1:{B}/x#@127.0.0.1:{A}",
    "http://127.0.0.1:{B}?@127.0.0.1:{A}/",
    "HTTP://127.0.0.1:{B}/x",
    "http://127.1:{B}/x",
    "http://127.0.0.1:{B} @127.0.0.1:{A}/x",
    "http://127.0.0.1:{B}\xa0@127.0.0.1:{A}/x",
    "http://127.0.0.1:{B}%5C@127.0.0.1:{A}/x",
]


def port(peer: JwksPeer) -> str:
    return peer.url.rsplit(":", 1)[1]


def discover_through(origin: JwksPeer) -> str:
    """What the client's discovery call ends in: the issuer it read, or the error's code."""
    try:
        with Client(origin.url, api_key=KEY, timeout=5) as client:
            return "read " + client.auth.get_open_id_configuration().issuer
    except AgentRouterError as err:
        return err.code


@pytest.mark.parametrize("location", ELSEWHERE, ids=[repr(s) for s in ELSEWHERE])
def test_a_redirect_never_carries_the_api_key_to_another_origin(location: str) -> None:
    with jwks_peer(Answer()) as other, jwks_peer(Answer()) as origin:
        other.answer = discovery("other", other.url + "/jwks")
        target = location.format(A=port(origin), B=port(other))
        origin.answer = Answer(status=302, location=target, cache_control=None)
        discover_through(origin)
        with other.lock:
            sent = [seen.get("authorization") for seen in other.requests]
        assert f"Bearer {KEY}" not in sent, f"the key reached another origin via {target!r}"


@pytest.mark.parametrize(
    "location",
    ["http://127.0.0.1:{B}\\@127.0.0.1:{A}/x", "/\\127.0.0.1:{B}/x", "/x\\y",
     "http://127.0.0.1:{B}\t/x", "/\t/127.0.0.1:{B}/x", "/x\ty", "/x y"],
)  # fmt: skip
def test_a_location_with_a_backslash_a_tab_or_a_space_is_refused(location: str) -> None:
    """As Go refuses it ("invalid control character in URL", "invalid userinfo")."""
    with jwks_peer(Answer()) as other, jwks_peer(Answer()) as origin:
        target = location.format(A=port(origin), B=port(other))
        origin.answer = Answer(status=302, location=target, cache_control=None)
        assert discover_through(origin) == "unavailable"
        assert (origin.count(), other.count()) == (1, 0)


@pytest.mark.parametrize("location", ["http://h/a\rb", "http://h/a\nb", "/a\x00b", "/a\x7fb"])
def test_a_location_with_a_control_character_is_refused(location: str) -> None:
    """CR and LF cannot reach a Location through pyqwest's headers: the check itself."""
    with pytest.raises(ConnectError, match="redirect"):
        redirect_target("http://127.0.0.1:1/p", location)


@pytest.mark.parametrize(
    "location",
    ["http://a/x y", "/x y", " /x", "/x\x0by", "/x\x85y", "/x\xa0y", "/x\u1680y", "/x\u2009y",
     "/x\u2028y", "/x\u2029y", "/x\u202fy", "/x\u3000y"],
)  # fmt: skip
def test_a_location_with_whitespace_is_refused(location: str) -> None:
    """Whitespace as Go's unicode.IsSpace reads it, Unicode's included: URL parsers disagree
    on whether it is dropped, kept or ends the host."""
    with pytest.raises(ConnectError, match="redirect"):
        redirect_target("http://127.0.0.1:1/p", location)


class Closable:
    """A 3xx's body that records being closed."""

    def __init__(self) -> None:
        self.closed = False

    def __iter__(self) -> Closable:
        return self

    def __next__(self) -> bytes:
        raise StopIteration

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("url", "location"), [("https://h/p", "http://h/q"), ("http://h/p", "/x\\y")]
)
def test_a_refused_redirect_closes_its_response(url: str, location: str) -> None:
    body = Closable()
    refused = SyncResponse(status=302, headers=Headers([("location", location)]), content=body)
    with pytest.raises(ConnectError, match="redirect"):
        RedirectTransport(Recording(refused)).execute_sync(SyncRequest("GET", url, Headers(), b""))
    assert body.closed


class Recording:
    """A transport answering from a list, recording the requests it is sent."""

    def __init__(self, *answers: SyncResponse) -> None:
        self.answers = list(answers)
        self.sent: list[SyncRequest] = []

    def execute_sync(self, request: SyncRequest) -> SyncResponse:
        self.sent.append(request)
        return self.answers.pop(0)


def redirect_to(location: str) -> SyncResponse:
    return SyncResponse(status=302, headers=Headers([("location", location)]), content=b"")


def test_a_redirect_is_sent_to_the_url_its_origin_was_judged_on() -> None:
    """The URL rebuilt from the one parse compared: no userinfo, no fragment, the key only to
    the same origin (a default port spelled or not is the same origin)."""
    inner = Recording(
        redirect_to("http://u:p@127.0.0.1:2/q?r=1#f"),
        SyncResponse(status=200, content=b""),
    )
    first = SyncRequest("GET", "http://127.0.0.1:1/p", Headers([("authorization", "k")]), b"")
    assert RedirectTransport(inner).execute_sync(first).status == 200
    assert inner.sent[1].url == "http://127.0.0.1:2/q?r=1"
    assert inner.sent[1].headers.get("authorization") is None
    inner = Recording(redirect_to("http://H:80/q"), SyncResponse(status=200, content=b""))
    first = SyncRequest("GET", "http://h/p", Headers([("authorization", "k")]), b"")
    RedirectTransport(inner).execute_sync(first)
    assert (inner.sent[1].url, inner.sent[1].headers.get("authorization")) == ("http://h/q", "k")


# Redirects followed as Go follows them.


def redirect_chain(origin: JwksPeer, hops: int) -> None:
    """`hops` redirects of the origin to itself, then its discovery document."""
    origin.first = [
        Answer(status=302, location=f"/hop/{n}", cache_control=None) for n in range(1, hops + 1)
    ]
    origin.answer = discovery("origin", origin.url + "/jwks")


def test_nine_redirects_are_followed() -> None:
    with jwks_peer(Answer()) as origin:
        redirect_chain(origin, 9)
        assert discover_through(origin) == "read origin"
        assert origin.count() == 10


def test_a_tenth_redirect_is_not_followed() -> None:
    """Go's `len(via) >= 10`: ten requests at most."""
    with jwks_peer(Answer()) as origin:
        redirect_chain(origin, 10)
        assert discover_through(origin) == "unavailable"
        assert origin.count() == 10


def test_an_empty_location_is_answered_as_it_is() -> None:
    """As Go does: the 3xx is the answer (an error of the call), not a redirect to itself."""
    with jwks_peer(Answer(status=302, location="", cache_control=None)) as origin:
        assert discover_through(origin) == "unknown"
        assert origin.count() == 1


# RSA keys over 4096 bits are skipped (go-jose's MaxRSAModulusBits), so no key's primality
# test costs more than a 4096-bit one's.


@pytest.mark.parametrize(("bits", "kept"), [(4096, True), (4097, False), (8192, False)])
def test_rsa_keys_over_4096_bits_are_skipped(bits: int, kept: bool) -> None:
    n = (1 << (bits - 1)) + 1
    while n % 3:
        n += 2  # `bits` bits, odd, a multiple of 3: not a prime
    assert n.bit_length() == bits
    expected = ["weak", "es-1"] if kept else ["es-1"]
    assert list(parse_key_set(key_set(rsa_member(n, 65537), ES.jwk()))) == expected


# The vetting: a set is read with no primality test; an RSA modulus is vetted when a token
# first names its key, once per modulus in the process (a hostile set of 256 fresh 4096-bit
# moduli cost 35-55 s of CPU, GIL held, on each fetch).


def random_moduli_set(count: int) -> tuple[bytes, list[int]]:
    """A set of `count` RSA keys k0, k1, ... of fresh random odd 4096-bit moduli, and the
    moduli: composite but for a negligible chance, unknown to the memo."""
    moduli = [secrets.randbits(4096) | (1 << 4095) | 1 for _ in range(count)]
    members = ({**rsa_member(n, 65537), "kid": f"k{i}"} for i, n in enumerate(moduli))
    return key_set(*members), moduli


@pytest.fixture
def primality_tests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The moduli the SDK runs its primality test on, in order (a spy)."""
    seen: list[int] = []
    real = _keyset._probably_prime

    def spy(n: int) -> bool:
        seen.append(n)
        return real(n)

    monkeypatch.setattr(_keyset, "_probably_prime", spy)
    return seen


def test_reading_a_set_runs_no_primality_test(primality_tests: list[int]) -> None:
    body, moduli = random_moduli_set(64)
    keys = parse_key_set(body)
    assert len(keys) == 64
    assert primality_tests == []
    assert [key.unvetted_modulus for key in keys.values()] == moduli


def test_a_token_naming_an_unvetted_key_runs_one_primality_test_and_the_next_none(
    clock: FakeClock, primality_tests: list[int]
) -> None:
    body, moduli = random_moduli_set(64)
    token = f"{b64({'alg': 'RS256', 'kid': 'k7'})}.{b64(CLAIMS)}.{b64(b'x' * 512)}"
    with jwks_peer(Answer(body=body, cache_control="max-age=60")) as peer:
        verifier = verifier_over(peer, clock)
        assert len(verifier.cache.kids()) == 64  # fetched and read
        assert primality_tests == []
        with pytest.raises(InvalidTokenError, match="signature does not verify"):
            verifier.verify(token)  # a composite modulus: the key is used
        assert primality_tests == [moduli[7]]
        with pytest.raises(InvalidTokenError, match="signature does not verify"):
            verifier.verify(token)
        assert verifier.cache.key("k7").kid == "k7"
        assert primality_tests == [moduli[7]]  # memoized
        # another cache of the process, and a set read again, know it too
        assert parse_key_set(body)["k7"].unvetted_modulus is None
        other = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        assert other.key("k7").kid == "k7"
        assert primality_tests == [moduli[7]]


def parked(thread: threading.Thread) -> bool:
    """Whether `thread` waits on a threading Event or Condition (read from its stack)."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "wait" and code.co_filename == threading.__file__:
            return True
        frame = frame.f_back
    return False


def test_concurrent_first_lookups_of_a_key_run_one_primality_test(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight threads name an unvetted key at once: one runs the test (held until all eight
    wait), the others wait for its verdict. No later lookup of the key runs it again, not
    even once the memo has forgotten the modulus (the key keeps its verdict)."""
    body, moduli = random_moduli_set(4)
    tested: list[int] = []
    release = threading.Event()
    real = _keyset._probably_prime

    def held(n: int) -> bool:
        tested.append(n)
        release.wait(30)
        return real(n)

    monkeypatch.setattr(_keyset, "_probably_prime", held)
    with jwks_peer(Answer(body=body, cache_control="max-age=60")) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        assert len(cache.kids()) == 4
        found: list[str] = []
        threads = [
            threading.Thread(target=lambda: found.append(cache.key("k1").kid), daemon=True)
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while not all(parked(thread) for thread in threads):  # a bounded poll
            assert time.monotonic() < deadline, "the eight lookups did not all wait"
            time.sleep(0.01)
        release.set()
        for thread in threads:
            thread.join(10)
        assert found == ["k1"] * 8
        assert tested == [moduli[1]]
        with _keyset._prime_memo_lock:
            _keyset._prime_memo.clear()  # as if 512 other moduli had pushed it out
        assert cache.key("k1").kid == "k1"
        assert tested == [moduli[1]]


# Cache-Control by the one grammar (README, Client SDKs).


@pytest.mark.parametrize(
    ("value", "max_age", "swr", "sie"),
    [
        ('ext="unterminated, max-age=86400', D, 0, 0),
        ('private=", ,no-cache', D, 0, 0),
        ('no-store=", max-age=5', D, 0, 0),
        ('max-age=60, ext="a\\", no-cache', 60, 0, 0),
        ("max-age=\u0661", D, 0, 0),
        ("max-age=6\u0660", D, 0, 0),
        ("stale-if-error=\u00b9", 300, 0, 0),
        ('max-age= "60"', 60, 0, 0),
        ('no-cache= "x"', 0, 0, 0),
        ("no-cache=", D, 0, 0),
        ("max-age =,,max-age=0060", 60, 0, 0),
        ('ext=a"b, max-age=5', 5, 0, 0),
        ('max-age="6\\0"', 60, 0, 0),
        ('max-age="60" , stale-if-error="5"\t', 60, 0, 5),
        ('max-age="60" x, max-age=5', 5, 0, 0),
    ],
)
def test_cache_control_by_the_grammar(value: str, max_age: int, swr: int, sie: int) -> None:
    fresh, _ = parse_cache_control([value])
    assert (fresh.max_age, fresh.stale_while_revalidate, fresh.stale_if_error) == (
        max_age, swr, sie,
    )  # fmt: skip


def test_cache_control_lines_are_parsed_each_alone_in_order() -> None:
    """An unterminated quote ends with its line; the first line's directives come first."""
    fresh, _ = parse_cache_control(['ext="open, max-age=1', "max-age=60, max-age=2"])
    assert fresh.max_age == 60
