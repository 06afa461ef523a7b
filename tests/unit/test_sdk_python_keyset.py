"""The Python SDK's KeySetCache against a local JWKS peer (a real HTTP server whose answers each
test sets), with a fake clock: each row of the cache's behaviour table (README, Client SDKs)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from agentrouter_sdk import (
    AgentRouterError,
    Client,
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
)
from tests.unit.sdk_python_jwks import (
    Answer,
    FakeClock,
    JwksPeer,
    SigningKey,
    jwks_peer,
    key_set,
    new_key,
)

K1, K2 = new_key("k1"), new_key("k2", "EdDSA")
RSA = new_key("r1", "RS256")
GOOD = key_set(K1.jwk())
CONNECT_GET = "/agentrouter.auth.v1.AuthService/GetJWKS?connect=v1&encoding=json&message=%7B%7D"
POLICY = "max-age=60, stale-while-revalidate=30, stale-if-error=300"


@pytest.fixture
def peer() -> Iterator[JwksPeer]:
    with jwks_peer(Answer(body=GOOD, cache_control=POLICY, etag='"v1"')) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def cache_over(peer: JwksPeer, clock: FakeClock, **options: object) -> KeySetCache:
    client = Client(peer.url, api_key="sk-1", timeout=5)
    return KeySetCache(client, clock=clock, **options)  # type: ignore[arg-type]


def settled(peer: JwksPeer, count: int) -> int:
    """The peer's count once `count` requests were answered, after a short look for more."""
    peer.wait_for(count)
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline and peer.count() == count:
        time.sleep(0.02)
    return peer.count()


def test_the_default_source_is_the_connect_get_of_get_jwks_with_the_api_key(
    peer: JwksPeer, clock: FakeClock
) -> None:
    cache = cache_over(peer, clock)
    assert peer.count() == 0  # no request before the first lookup
    assert cache.key("k1").alg == "ES256"
    (request,) = peer.requests
    assert request["path"] == CONNECT_GET
    assert request["authorization"] == "Bearer sk-1"
    assert "if-none-match" not in request


def test_a_fresh_set_answers_without_a_request(peer: JwksPeer, clock: FakeClock) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    for _ in range(20):
        clock.advance(2.9)  # 58 s in all: within max-age=60
        assert cache.key("k1").kid == "k1"
    assert peer.count() == 1


def test_after_max_age_it_revalidates_and_a_304_restarts_its_age(
    peer: JwksPeer, clock: FakeClock
) -> None:
    peer.answer.cache_control = "max-age=60"
    cache = cache_over(peer, clock)
    cache.key("k1")
    clock.advance(61)
    assert cache.key("k1").kid == "k1"
    revalidation = peer.requests[1]
    assert revalidation["if-none-match"] == '"v1"'
    clock.advance(59)  # the 304 restarted the age
    cache.key("k1")
    assert peer.count() == 2
    clock.advance(2)
    cache.key("k1")
    assert peer.count() == 3


def test_a_304_brings_its_own_cache_control(peer: JwksPeer, clock: FakeClock) -> None:
    peer.answer.cache_control = "max-age=60"
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.cache_control = "max-age=600"
    clock.advance(61)
    cache.key("k1")  # a 304 with max-age=600
    clock.advance(500)
    cache.key("k1")
    assert peer.count() == 2


def test_a_revalidation_that_returns_a_new_set_drops_a_removed_key_at_once(
    peer: JwksPeer, clock: FakeClock
) -> None:
    peer.answer.cache_control = "max-age=60"
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.body, peer.answer.etag = key_set(K2.jwk()), '"v2"'
    clock.advance(30)
    assert cache.key("k1").kid == "k1"  # the cached answer is still fresh
    clock.advance(31)
    with pytest.raises(InvalidTokenError):
        cache.key("k1")
    assert peer.count() == 2  # the revalidation itself, no second refresh for the kid
    assert cache.key("k2").alg == "EdDSA"


def test_within_stale_while_revalidate_it_answers_at_once_and_refreshes_once(
    peer: JwksPeer, clock: FakeClock
) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.hold = True  # the refresh is not answered until released
    clock.advance(70)  # past max-age=60, within stale-while-revalidate=30
    for _ in range(10):
        assert cache.key("k1").kid == "k1"  # while the refresh is held
    deadline = time.monotonic() + 10
    while peer.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peer.count() == 2
    assert not peer.answered.is_set()  # each lookup above was answered before the refresh was
    peer.release.set()
    assert settled(peer, 2) == 2


def test_beyond_stale_while_revalidate_callers_share_one_refresh(
    peer: JwksPeer, clock: FakeClock
) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.hold = True
    clock.advance(95)  # past max-age + stale-while-revalidate
    barrier = threading.Barrier(8)
    got: list[str] = []

    def lookup() -> None:
        barrier.wait()
        got.append(cache.key("k1").kid)

    threads = [threading.Thread(target=lookup) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while peer.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == []  # every caller waits for the refresh
    peer.release.set()
    for thread in threads:
        thread.join(10)
    assert got == ["k1"] * 8
    assert settled(peer, 2) == 2


def test_a_failed_refresh_within_stale_if_error_keeps_the_set_logs_once_and_backs_off(
    peer: JwksPeer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.status, peer.answer.etag = 500, None
    peer.answer.body = b"server text \x1b[31m secret"
    caplog.set_level(logging.INFO, logger="agentrouter_sdk")
    clock.advance(100)  # past max-age + swr, within stale-if-error=300
    assert cache.key("k1").kid == "k1"
    assert peer.count() == 2
    clock.advance(0.5)  # within the first backoff (1 s): no request
    assert cache.key("k1").kid == "k1"
    assert peer.count() == 2
    clock.advance(0.6)
    assert cache.key("k1").kid == "k1"  # answered at once; the retry runs in the background
    assert settled(peer, 3) == 3
    clock.advance(1.5)  # the backoff doubled to 2 s
    cache.key("k1")
    assert peer.count() == 3
    clock.advance(0.6)
    cache.key("k1")
    assert settled(peer, 4) == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    logged = warnings[0].getMessage()
    assert "HTTP 500" in logged
    assert "secret" not in logged
    assert "\x1b" not in logged
    peer.answer.status, peer.answer.body = 200, GOOD
    clock.advance(5)
    cache.key("k1")
    assert settled(peer, 5) == 5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        "refreshed again" in r.getMessage() for r in caplog.records
    ):
        time.sleep(0.01)
    assert any("refreshed again" in r.getMessage() for r in caplog.records)


def test_beyond_stale_if_error_it_fails_closed(peer: JwksPeer, clock: FakeClock) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.status, peer.answer.body, peer.answer.etag = 503, b"down: secret", None
    clock.advance(359)  # max-age + stale-if-error = 360
    assert cache.key("k1").kid == "k1"
    clock.advance(2)
    with pytest.raises(KeysUnavailableError) as err:
        cache.key("k1")
    assert isinstance(err.value, AgentRouterError)
    assert not isinstance(err.value, InvalidTokenError)
    assert "keys unavailable" in str(err.value)
    assert "HTTP 503" in str(err.value)
    assert "secret" not in str(err.value)


def test_no_cached_set_and_a_failed_first_fetch_is_keys_unavailable(clock: FakeClock) -> None:
    with jwks_peer(Answer(status=502, body=b"<html>\x1b[2J secret")) as peer:
        cache = cache_over(peer, clock)
        with pytest.raises(KeysUnavailableError) as err:
            cache.key("k1")
        assert "secret" not in str(err.value)
        with pytest.raises(KeysUnavailableError):  # within the backoff: no request
            cache.key("k1")
        assert peer.count() == 1


def test_nothing_listening_is_keys_unavailable(clock: FakeClock) -> None:
    with jwks_peer(Answer()) as peer:
        url = peer.url
    cache = KeySetCache(Client(url, timeout=2), clock=clock)
    with pytest.raises(KeysUnavailableError, match="the request failed"):
        cache.key("k1")


def test_an_unknown_kid_causes_one_refresh_per_cooldown(peer: JwksPeer, clock: FakeClock) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    with pytest.raises(InvalidTokenError):
        cache.key("nope-1")
    assert peer.count() == 2
    clock.advance(10)
    with pytest.raises(InvalidTokenError):
        cache.key("nope-2")  # within the 30-s cooldown: at once, no request
    assert peer.count() == 2
    clock.advance(21)
    peer.answer.body, peer.answer.etag = key_set(K1.jwk(), K2.jwk()), '"v2"'
    assert cache.key("k2").kid == "k2"  # the cooldown is over: one refresh brings it
    assert peer.count() == 3


def test_concurrent_unknown_kids_share_one_refresh(peer: JwksPeer, clock: FakeClock) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.hold = True
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def lookup(index: int) -> None:
        barrier.wait()
        try:
            cache.key(f"random-{index}")
        except InvalidTokenError:
            outcomes.append("invalid")

    threads = [threading.Thread(target=lookup, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while peer.count() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    peer.release.set()
    for thread in threads:
        thread.join(10)
    assert outcomes == ["invalid"] * 8
    assert settled(peer, 2) == 2


def test_the_cooldown_is_configurable(peer: JwksPeer, clock: FakeClock) -> None:
    cache = cache_over(peer, clock, unknown_kid_cooldown=5.0)
    cache.key("k1")
    with pytest.raises(InvalidTokenError):
        cache.key("nope")
    clock.advance(4)
    with pytest.raises(InvalidTokenError):
        cache.key("nope")
    assert peer.count() == 2
    clock.advance(2)
    with pytest.raises(InvalidTokenError):
        cache.key("nope")
    assert peer.count() == 3


def padded(size: int) -> bytes:
    """A good set of `size` bytes (an ignored member pads it)."""
    head = key_set(K1.jwk(x_pad=""))
    return key_set(K1.jwk(x_pad="A" * (size - len(head))))


def many_keys(count: int) -> bytes:
    return key_set(*[{**K1.jwk(), "kid": f"k{index}"} for index in range(1, count + 1)])


BAD_BODIES = {
    "not JSON": b"<html>not json</html>",
    "truncated JSON": GOOD[:-5],
    "not UTF-8": b"\xff\xfe{}",
    "no keys": b'{"kes": []}',
    "keys not an array": b'{"keys": {"kid": "k1"}}',
    "an array": b"[1, 2]",
    "257 keys": many_keys(257),
    "over max_bytes (1 MiB)": padded((1 << 20) + 1),
    "deep nesting": b"[" * 4000 + b"]" * 4000,
    "no usable key": key_set({"kid": "k1", "kty": "oct", "k": "c2VjcmV0", "alg": "HS256"}),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_answer_is_an_error_and_never_replaces_the_cached_set(
    peer: JwksPeer, clock: FakeClock, body: bytes
) -> None:
    cache = cache_over(peer, clock)
    cache.key("k1")
    peer.answer.body, peer.answer.etag = body, '"bad"'
    clock.advance(100)  # past max-age + swr: the refresh gets the bad answer
    assert cache.key("k1").kid == "k1"
    assert peer.count() == 2
    fresh = cache_over(peer, clock)
    with pytest.raises(KeysUnavailableError):
        fresh.key("k1")


def test_the_limits_hold_at_their_bound(peer: JwksPeer, clock: FakeClock) -> None:
    peer.answer.body = padded(8192)
    assert cache_over(peer, clock, max_bytes=8192).kids() == ["k1"]
    peer.answer.body = many_keys(256)
    assert len(cache_over(peer, clock).kids()) == 256


def private_member() -> dict[str, object]:
    private = K2_EC.private
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    member: dict[str, object] = json.loads(ECAlgorithm.to_jwk(private))
    return {**member, "kid": "bad", "alg": "ES256"}


K2_EC = new_key("bad")
UNUSABLE = {
    "private member": private_member(),
    "no kid": {**K2_EC.jwk(), "kid": None},
    "empty kid": {**K2_EC.jwk(), "kid": ""},
    "symmetric": {"kid": "bad", "kty": "oct", "k": "c2VjcmV0", "alg": "HS256"},
    "use enc": K2_EC.jwk(use="enc"),
    "alg not allowed": {**RSA.jwk(), "kid": "bad", "alg": "RS384"},
    "no alg": {**K2_EC.jwk(), "alg": None},
    "alg of another kty": {**K2_EC.jwk(), "alg": "RS256"},
    "wrong curve": {**K2_EC.jwk(), "crv": "P-384"},
    "bad point": {**K2_EC.jwk(), "x": "AAAA"},
    "kid not a string": {**K2_EC.jwk(), "kid": 7},
    "not an object": "bad",
}


@pytest.mark.parametrize("member", UNUSABLE.values(), ids=UNUSABLE.keys())
def test_an_unusable_key_is_skipped(peer: JwksPeer, clock: FakeClock, member: object) -> None:
    if isinstance(member, dict):
        member = {name: value for name, value in member.items() if value is not None}
    peer.answer.body = json.dumps({"keys": [member, K1.jwk()]}).encode()
    cache = cache_over(peer, clock)
    assert cache.kids() == ["k1"]
    with pytest.raises(InvalidTokenError):
        cache.key("bad")


def test_an_rsa_key_under_2048_bits_is_skipped(peer: JwksPeer, clock: FakeClock) -> None:
    weak = SigningKey(
        "weak", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    peer.answer.body = key_set(weak.jwk(), RSA.jwk())
    assert cache_over(peer, clock).kids() == ["r1"]


@pytest.mark.parametrize(
    ("cache_control", "fresh_for"),
    [(None, 300), ("max-age=abc", 300), ("public, max-age=120", 120),
     ("max-age=99999999", 86400), ("no-cache", 0), ("no-store, max-age=60", 0)],
)  # fmt: skip
def test_freshness_is_the_answers_max_age(
    peer: JwksPeer, clock: FakeClock, cache_control: str | None, fresh_for: int
) -> None:
    peer.answer.cache_control, peer.answer.etag = cache_control, None
    cache = cache_over(peer, clock)
    cache.key("k1")
    if fresh_for:
        clock.advance(fresh_for - 0.5)
        cache.key("k1")
        assert peer.count() == 1
    clock.advance(1)
    cache.key("k1")
    assert peer.count() == 2


@pytest.mark.parametrize(("host", "sent"), [("127.0.0.1", True), ("localhost", False)])
def test_a_jwks_uri_gets_the_api_key_only_on_the_clients_origin(
    peer: JwksPeer, clock: FakeClock, host: str, sent: bool
) -> None:
    jwks_uri = peer.url.replace("127.0.0.1", host) + "/keys.json"
    cache = cache_over(peer, clock, jwks_uri=jwks_uri)
    cache.key("k1")
    (request,) = peer.requests
    assert request["path"] == "/keys.json"
    assert ("authorization" in request) == sent


@pytest.mark.parametrize(
    "jwks_uri", ["ftp://h/keys", "/keys.json", "http://u:secret@h/keys", "http://h:port/"]
)
def test_a_bad_jwks_uri_is_refused(jwks_uri: str) -> None:
    with pytest.raises(ValueError, match="jwks_uri") as err:
        KeySetCache(Client("http://127.0.0.1:1"), jwks_uri=jwks_uri)
    assert "secret" not in str(err.value)


@pytest.mark.parametrize(
    "options", [{"unknown_kid_cooldown": -1}, {"max_bytes": 0}, {"max_bytes": -5}]
)
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        KeySetCache(Client("http://127.0.0.1:1"), **options)  # type: ignore[arg-type]
