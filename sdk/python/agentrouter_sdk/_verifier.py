"""The token verifier: AgentRouter's tokens (JWS compact, RFC 7515/7519) checked with the keys
of a KeySetCache, the algorithm being the one the matched key declares."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from agentrouter_sdk._client import Client
from agentrouter_sdk._keyset import (
    ALLOWED_KEYS,
    DEFAULT_JWKS_MAX_BYTES,
    DEFAULT_UNKNOWN_KID_COOLDOWN,
    InvalidTokenError,
    KeySetCache,
    _json_object,
)

# The clock difference tolerated on exp, nbf and iat, in seconds.
DEFAULT_LEEWAY = 60.0
# A longer token is refused before anything is decoded.
_MAX_TOKEN_BYTES = 64 << 10
# Header members refused: a key or certificate pointing elsewhere, critical extensions, an
# unencoded payload (RFC 7797 b64, which other libraries apply), JWE.
_REFUSED_HEADERS = ("jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256", "crit", "b64", "enc", "zip")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)


class TokenVerifier:
    """Verifies AgentRouter's tokens with the keys of `cache`. `issuer` (the exact `iss`) and
    `audience` (held by `aud`, a string or an array) are required unless waived with
    `skip_issuer_check` / `skip_audience_check`. `exp` is required; `exp`, `nbf` and `iat` are
    checked with `leeway` seconds. Makes no network call; thread-safe."""

    def __init__(
        self,
        cache: KeySetCache,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        skip_issuer_check: bool = False,
        skip_audience_check: bool = False,
        leeway: float = DEFAULT_LEEWAY,
    ) -> None:
        if not issuer and not skip_issuer_check:
            raise ValueError("no issuer: pass issuer=..., or skip_issuer_check=True to accept any")
        if not audience and not skip_audience_check:
            raise ValueError(
                "no audience: pass audience=..., or skip_audience_check=True to accept any"
            )
        if not leeway >= 0:
            raise ValueError(f"leeway must be 0 or more seconds, got {leeway!r}")
        self.cache = cache
        self._issuer = None if skip_issuer_check else issuer
        self._audience = None if skip_audience_check else audience
        self._leeway = float(leeway)

    @classmethod
    def from_issuer(
        cls,
        issuer: str,
        *,
        audience: str | None = None,
        skip_audience_check: bool = False,
        leeway: float = DEFAULT_LEEWAY,
        client: Client | None = None,
        api_key: str | None = None,
        unknown_kid_cooldown: float = DEFAULT_UNKNOWN_KID_COOLDOWN,
        max_bytes: int = DEFAULT_JWKS_MAX_BYTES,
        clock: Callable[[], float] | None = None,
        logger: logging.Logger | None = None,
    ) -> TokenVerifier:
        """A verifier of `issuer`'s tokens: discovers it through `client`'s
        GetOpenIDConfiguration (a Client of `issuer` with `api_key` when None), checks that the
        document's `issuer` is exactly `issuer`, and keeps its `jwks_uri` in a KeySetCache.
        AgentRouterError when discovery fails (a redirect from https to http is refused);
        ValueError when the document names another issuer, an unusable jwks_uri, or, for an
        https issuer, a jwks_uri that is not https."""
        if not issuer:
            raise ValueError("issuer is required: the URL that tokens carry as iss")
        own = client is None
        discovery = client if client is not None else Client(issuer, api_key)
        try:
            document = discovery.auth.get_open_id_configuration()
        finally:
            if own:
                discovery.close()
        if document.issuer != issuer:
            raise ValueError("the discovery document names another issuer")
        if _scheme(issuer) == "https" and _scheme(document.jwks_uri) != "https":
            raise ValueError("the discovery document of an https issuer names a jwks_uri not https")
        try:
            cache = KeySetCache(
                discovery,
                jwks_uri=document.jwks_uri,
                unknown_kid_cooldown=unknown_kid_cooldown,
                max_bytes=max_bytes,
                clock=clock,
                logger=logger,
            )
        except ValueError as err:
            raise ValueError(f"the discovery document's jwks_uri: {err}") from None
        return cls(
            cache,
            issuer=issuer,
            audience=audience,
            skip_audience_check=skip_audience_check,
            leeway=leeway,
        )

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of `token` once it verifies. The algorithm is the one its key declares,
        from ES256, RS256 and EdDSA, and the header's alg must equal it; a header with jwk, jku,
        x5u, x5c, x5t, crit or b64, a token without kid, anything but a 3-part JWS, a header or
        payload that is not one JSON object in strict UTF-8 are refused.
        InvalidTokenError when it does not verify; KeysUnavailableError when no keys could be
        had. Errors never quote the token."""
        parts = _parts(token)
        header = _decoded_object(parts[0], "header")
        payload = _base64url(parts[1], "payload")
        for name in _REFUSED_HEADERS:
            if name in header:
                raise InvalidTokenError(f"the header has {name!r}, which is refused")
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALLOWED_KEYS:
            raise InvalidTokenError("the header's alg is not one of ES256, RS256, EdDSA")
        if not isinstance(kid, str) or not kid:
            raise InvalidTokenError("the header has no kid")
        key = self.cache.key(kid)
        if alg != key.alg:
            raise InvalidTokenError("the token's alg is not the algorithm its key declares")
        signature = _base64url(parts[2], "signature")
        algorithm = key.jwk.Algorithm
        signed = f"{parts[0]}.{parts[1]}".encode("ascii")
        if not algorithm.verify(signed, key.jwk.key, signature):
            raise InvalidTokenError("the signature does not verify")
        claims = _json_object(payload)
        if claims is None:
            raise InvalidTokenError("the payload is not a JSON object")
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """exp (required), nbf, iat, iss and aud."""
        now, leeway = self.cache.clock(), self._leeway
        exp = _numeric_date(claims, "exp")
        if exp is None:
            raise InvalidTokenError("no exp claim")
        if now >= exp + leeway:
            raise InvalidTokenError("the token has expired")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise InvalidTokenError("the token is not valid yet (nbf)")
        iat = _numeric_date(claims, "iat")
        if iat is not None and now + leeway < iat:
            raise InvalidTokenError("the token was issued in the future (iat)")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise InvalidTokenError("the iss claim is not the expected issuer")
        if self._audience is not None and not _has_audience(claims.get("aud"), self._audience):
            raise InvalidTokenError("the aud claim does not hold the expected audience")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def _parts(token: object) -> list[str]:
    if not isinstance(token, str):
        raise InvalidTokenError("the token is not a string")
    if len(token) > _MAX_TOKEN_BYTES:
        raise InvalidTokenError(f"longer than {_MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidTokenError(f"a JWS in compact form has 3 parts, this has {len(parts)}")
    return parts


def _base64url(part: str, what: str) -> bytes:
    """Canonical base64url without padding (RFC 7515 §2): only A-Za-z0-9-_, no padding or
    whitespace, and the last character's unused low bits zero (one spelling per value)."""
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidTokenError(f"the {what} is not base64url")
    try:
        decoded = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise InvalidTokenError(f"the {what} is not base64url") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != part.encode("ascii"):
        raise InvalidTokenError(f"the {what} is not canonical base64url")
    return decoded


def _decoded_object(part: str, what: str) -> dict[str, Any]:
    value = _json_object(_base64url(part, what))
    if value is None:
        raise InvalidTokenError(f"the {what} is not a JSON object")
    return value


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """A NumericDate claim (seconds since the epoch), if present."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidTokenError(f"the {name} claim is not a date")
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > 1e11:
        raise InvalidTokenError(f"the {name} claim is not a date")
    return float(value)


def _has_audience(aud: object, audience: str) -> bool:
    if isinstance(aud, str):
        return aud == audience
    return isinstance(aud, list) and audience in [one for one in aud if isinstance(one, str)]
