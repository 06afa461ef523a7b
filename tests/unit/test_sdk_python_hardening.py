"""The Python SDK against the adversarial findings of issue 20: non-canonical or non-ASCII token
parts, redirects, stale-while-revalidate past a failed refresh, a 304 with another ETag, a hung
server within stale-if-error, weak keys, URL queries in logs, and Cache-Control edge cases."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agentrouter_sdk import (
    Client,
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
    TokenVerifier,
)
from agentrouter_sdk._keyset import parse_cache_control, parse_key_set
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


def test_stale_while_revalidate_does_not_extend_past_a_failed_refresh(clock: FakeClock) -> None:
    policy = "max-age=10, stale-while-revalidate=86400, stale-if-error=0"
    with jwks_peer(Answer(body=key_set(ES.jwk()), cache_control=policy)) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        clock.advance(15)
        cache.key("es-1")  # within swr, no failure yet: answered, refreshed in the background
        peer.wait_for(2)
        clock.advance(5)
        with pytest.raises(KeysUnavailableError):
            cache.key("es-1")
        clock.advance(3600)
        with pytest.raises(KeysUnavailableError):
            cache.key("es-1")


def test_a_success_after_a_failure_restores_stale_while_revalidate(clock: FakeClock) -> None:
    policy = "max-age=10, stale-while-revalidate=100, stale-if-error=0"
    good = Answer(body=key_set(ES.jwk()), cache_control=policy)
    with jwks_peer(good) as peer:
        cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
        cache.key("es-1")
        peer.answer = Answer(status=503, cache_control=None)
        clock.advance(20)
        cache.key("es-1")
        peer.wait_for(2)
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
        assert cache.key("es-2").kid == "es-2"
        assert peer.requests[-1]["if-none-match"] == '"v1"'


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
