"""The Python SDK's TokenVerifier over a local JWKS peer, with a fake clock: every refusal of
the verifier (alg confusion, headers pointing elsewhere, malformed tokens, claims) is a test."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from agentrouter_sdk import (
    AgentRouterError,
    Client,
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
    TokenVerifier,
)
from tests.unit.sdk_python_jwks import (
    START,
    Answer,
    FakeClock,
    JwksPeer,
    SigningKey,
    b64,
    jwks_peer,
    key_set,
    new_key,
)

ISSUER, AUDIENCE = "https://issuer.example.test", "svc"
ES, RS, ED = new_key("es-1"), new_key("rs-1", "RS256"), new_key("ed-1", "EdDSA")
ATTACKER = new_key("es-1")  # another key under the published key's kid
CLAIMS: dict[str, Any] = {
    "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": START, "exp": START + 300,
}  # fmt: skip


@pytest.fixture
def peer() -> Iterator[JwksPeer]:
    body = key_set(ES.jwk(), RS.jwk(), ED.jwk())
    with jwks_peer(Answer(body=body, etag='"v1"')) as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def verifier(peer: JwksPeer, clock: FakeClock) -> TokenVerifier:
    cache = KeySetCache(Client(peer.url, timeout=5), clock=clock)
    return TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)


def forge(
    header: dict[str, Any], claims: dict[str, Any] | bytes, key: SigningKey, alg: str = ""
) -> str:
    """A JWS with exactly this header, signed by `key` with `alg` (`header['alg']` if none)."""
    payload = claims if isinstance(claims, bytes) else None
    signing_input = f"{b64(header)}.{b64(payload if payload is not None else claims)}"
    algorithm = jwt.get_algorithm_by_name(alg or header["alg"])
    signature = algorithm.sign(signing_input.encode(), key.private)
    return f"{signing_input}.{b64(signature)}"


def hs256(header: dict[str, Any], secret: bytes, digest_of: Any = hashlib.sha256) -> str:
    """An HMAC-signed JWS (HS256 unless another digest is given)."""
    signing_input = f"{b64(header)}.{b64(CLAIMS)}"
    digest = hmac.new(secret, signing_input.encode(), digest_of).digest()
    return f"{signing_input}.{b64(digest)}"


def public_pem(key: SigningKey) -> bytes:
    return key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize("key", [ES, RS, ED], ids=["ES256", "RS256", "EdDSA"])
def test_a_token_of_each_algorithm_verifies(verifier: TokenVerifier, key: SigningKey) -> None:
    assert verifier.verify(key.sign(CLAIMS)) == CLAIMS


def test_a_warm_cache_makes_no_request(verifier: TokenVerifier, peer: JwksPeer) -> None:
    verifier.verify(ES.sign(CLAIMS))
    assert peer.count() == 1
    for key in (ES, RS, ED) * 30:
        verifier.verify(key.sign({**CLAIMS, "sub": key.kid}))
    assert peer.count() == 1


REFUSED: dict[str, Any] = {
    "alg none": lambda: f"{b64({'alg': 'none', 'kid': 'es-1'})}.{b64(CLAIMS)}.",
    "alg none, no kid": lambda: f"{b64({'alg': 'none'})}.{b64(CLAIMS)}.",
    "HS256 with a secret": lambda: hs256({"alg": "HS256", "kid": "es-1"}, b"secret"),
    "HS256 with the public key as secret": lambda: hs256(
        {"alg": "HS256", "kid": "rs-1"}, public_pem(RS)
    ),
    "HS256 with the JWK as secret": lambda: hs256(
        {"alg": "HS256", "kid": "es-1"}, str(ES.jwk()).encode()
    ),
    "HS512": lambda: hs256({"alg": "HS512", "kid": "es-1"}, b"secret", hashlib.sha512),
    "RS256 under an ES256 key's kid": lambda: forge({"alg": "RS256", "kid": "es-1"}, CLAIMS, RS),
    "ES256 under an RS256 key's kid": lambda: forge({"alg": "ES256", "kid": "rs-1"}, CLAIMS, ES),
    "EdDSA under an ES256 key's kid": lambda: forge({"alg": "EdDSA", "kid": "es-1"}, CLAIMS, ED),
    # Signed by the key itself, with its own algorithm: only the header's alg is wrong.
    "alg RS256 on a genuine ES256 signature": lambda: forge(
        {"alg": "RS256", "kid": "es-1"}, CLAIMS, ES, "ES256"
    ),
    "alg EdDSA on a genuine RS256 signature": lambda: forge(
        {"alg": "EdDSA", "kid": "rs-1"}, CLAIMS, RS, "RS256"
    ),
    "ES384": lambda: f"{b64({'alg': 'ES384', 'kid': 'es-1'})}.{b64(CLAIMS)}.AAAA",
    "PS256": lambda: forge({"alg": "PS256", "kid": "rs-1"}, CLAIMS, RS),
    "jwk header with the signer's key": lambda: forge(
        {"alg": "ES256", "kid": "es-1", "jwk": ATTACKER.jwk()}, CLAIMS, ATTACKER
    ),
    "jku header": lambda: ES.sign(CLAIMS, jku="https://evil.example.test/jwks"),
    "x5u header": lambda: ES.sign(CLAIMS, x5u="https://evil.example.test/cert"),
    "x5c header": lambda: ES.sign(CLAIMS, x5c=["MIIB"]),
    "crit header": lambda: forge({"alg": "ES256", "kid": "es-1", "crit": ["exp"]}, CLAIMS, ES),
    "no kid": lambda: forge({"alg": "ES256", "typ": "JWT"}, CLAIMS, ES),
    "empty kid": lambda: forge({"alg": "ES256", "kid": ""}, CLAIMS, ES),
    "kid not a string": lambda: forge({"alg": "ES256", "kid": 1}, CLAIMS, ES),
    "signed by another key": lambda: ATTACKER.sign(CLAIMS),
    "2 parts": lambda: ".".join(ES.sign(CLAIMS).split(".")[:2]),
    "4 parts": lambda: ES.sign(CLAIMS) + ".e30",
    "JWE": lambda: ".".join(
        [b64({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "rs-1"}), "a", "b", "c", "d"]
    ),
    "header not base64url": lambda: "e30+." + ES.sign(CLAIMS).split(".", 1)[1],
    "header not JSON": lambda: f"{b64(b'not json')}.{b64(CLAIMS)}.AAAA",
    "header an array": lambda: f"{b64(b'[1]')}.{b64(CLAIMS)}.AAAA",
    "payload not an object": lambda: forge({"alg": "ES256", "kid": "es-1"}, b"[1]", ES),
    "expired beyond the leeway": lambda: ES.sign({**CLAIMS, "exp": START - 61}),
    "no exp": lambda: ES.sign({k: v for k, v in CLAIMS.items() if k != "exp"}),
    "exp not a number": lambda: ES.sign({**CLAIMS, "exp": str(START + 300)}),
    "exp a boolean": lambda: ES.sign({**CLAIMS, "exp": True}),
    "nbf beyond the leeway": lambda: ES.sign({**CLAIMS, "nbf": START + 61}),
    "iat in the future beyond the leeway": lambda: ES.sign({**CLAIMS, "iat": START + 61}),
    "another issuer": lambda: ES.sign({**CLAIMS, "iss": "https://evil.example.test"}),
    "no issuer": lambda: ES.sign({k: v for k, v in CLAIMS.items() if k != "iss"}),
    "another audience": lambda: ES.sign({**CLAIMS, "aud": "other"}),
    "audiences without ours": lambda: ES.sign({**CLAIMS, "aud": ["a", "b"]}),
    "no audience": lambda: ES.sign({k: v for k, v in CLAIMS.items() if k != "aud"}),
    "too long": lambda: ES.sign({**CLAIMS, "pad": "A" * 70_000}),
}


@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_token_is_an_invalid_token(verifier: TokenVerifier, make: Any) -> None:
    token = make()
    with pytest.raises(InvalidTokenError) as err:
        verifier.verify(token)
    assert isinstance(err.value, AgentRouterError)
    assert err.value.code == "unauthenticated"
    for part in token.split("."):
        if len(part) > 8:
            assert part not in str(err.value)


ACCEPTED: dict[str, dict[str, Any]] = {
    "expired within the leeway": {"exp": START - 59},
    "nbf within the leeway": {"nbf": START + 59},
    "iat within the leeway": {"iat": START + 59},
    "no iat": {"iat": None},
    "our audience among others": {"aud": ["other", AUDIENCE]},
    "a fractional exp": {"exp": START + 0.5},
}


@pytest.mark.parametrize("change", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_a_token_within_the_checks_verifies(
    verifier: TokenVerifier, change: dict[str, Any]
) -> None:
    claims = {k: v for k, v in {**CLAIMS, **change}.items() if v is not None}
    assert verifier.verify(ES.sign(claims)) == claims


def test_the_leeway_is_configurable(peer: JwksPeer, clock: FakeClock) -> None:
    cache = KeySetCache(Client(peer.url), clock=clock)
    strict = TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE, leeway=0)
    lenient = TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE, leeway=120)
    token = ES.sign({**CLAIMS, "exp": START - 1})
    with pytest.raises(InvalidTokenError, match="expired"):
        strict.verify(token)
    assert lenient.verify(ES.sign({**CLAIMS, "exp": START - 100}))["sub"] == "user-1"


def test_the_clock_moves_a_token_past_its_exp(verifier: TokenVerifier, clock: FakeClock) -> None:
    token = ES.sign(CLAIMS)
    verifier.verify(token)
    clock.advance(359)  # exp + leeway = 360
    verifier.verify(token)
    clock.advance(1)
    with pytest.raises(InvalidTokenError, match="expired"):
        verifier.verify(token)


def test_refused_headers_make_no_request(verifier: TokenVerifier, peer: JwksPeer) -> None:
    for name in ("alg none", "HS256 with a secret", "jku header", "2 parts", "no kid"):
        with pytest.raises(InvalidTokenError):
            verifier.verify(REFUSED[name]())
    assert peer.count() == 0


def test_an_unknown_kid_with_control_characters_is_not_echoed(
    verifier: TokenVerifier, peer: JwksPeer
) -> None:
    kid = "\x1b[31mevil\r\nkid"
    token = forge({"alg": "ES256", "kid": kid}, CLAIMS, ES)
    with pytest.raises(InvalidTokenError) as err:
        verifier.verify(token)
    assert "evil" not in str(err.value)
    assert "\x1b" not in str(err.value)
    assert peer.count() == 1  # the set fetched for this token: no second refresh for the kid


@pytest.mark.parametrize(
    ("options", "missing"),
    [({"audience": AUDIENCE}, "issuer"), ({"issuer": ISSUER}, "audience"),
     ({"issuer": "", "audience": AUDIENCE}, "issuer"), ({}, "issuer")],
)  # fmt: skip
def test_issuer_and_audience_are_required_unless_waived(
    options: dict[str, str], missing: str
) -> None:
    cache = KeySetCache(Client("http://127.0.0.1:1"))
    with pytest.raises(ValueError, match=f"no {missing}"):
        TokenVerifier(cache, **options)  # type: ignore[arg-type]


def test_a_waived_check_accepts_any_issuer_and_audience(peer: JwksPeer, clock: FakeClock) -> None:
    cache = KeySetCache(Client(peer.url), clock=clock)
    verifier = TokenVerifier(cache, skip_issuer_check=True, skip_audience_check=True)
    claims = {"sub": "x", "iss": "https://other.example.test", "aud": "other", "exp": START + 9}
    assert verifier.verify(ES.sign(claims)) == claims
    no_waiver = TokenVerifier(cache, issuer=ISSUER, skip_audience_check=True)
    with pytest.raises(InvalidTokenError, match="iss"):
        no_waiver.verify(ES.sign(claims))


def test_a_negative_leeway_is_refused() -> None:
    cache = KeySetCache(Client("http://127.0.0.1:1"))
    with pytest.raises(ValueError, match="leeway"):
        TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE, leeway=-1)


def test_keys_unavailable_is_not_an_invalid_token(clock: FakeClock) -> None:
    with jwks_peer(Answer(status=503, body=b"down")) as peer:
        cache = KeySetCache(Client(peer.url), clock=clock)
        verifier = TokenVerifier(cache, issuer=ISSUER, audience=AUDIENCE)
        with pytest.raises(KeysUnavailableError) as err:
            verifier.verify(ES.sign(CLAIMS))
    assert not isinstance(err.value, InvalidTokenError)
    assert err.value.code == "unavailable"
