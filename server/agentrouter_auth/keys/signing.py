"""Signing a token with the ring's active key: which key signs, and the token it makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jwcrypto import jwk, jwt

from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.keys.material import DEFAULT_ALGORITHM
from agentrouter_auth.keys.policy import Policy, format_duration
from agentrouter_auth.keys.store import KeySet, State


class SigningError(AgentRouterAuthError, ValueError):
    """A token cannot be signed as asked; the message says why."""


def signer(key_set: KeySet, alg: str | None, where: str) -> jwk.JWK:
    """The active private key for `alg` (default: the only active algorithm, or ES256)."""
    active = {k.entry.alg: k for k in key_set.keys if k.entry.state is State.ACTIVE}
    if alg is None:
        if len(active) == 1:
            alg = next(iter(active))
        elif DEFAULT_ALGORITHM in active:
            alg = DEFAULT_ALGORITHM
        else:
            choices = ", ".join(sorted(active)) or "none"
            raise SigningError(f"choose an algorithm with --alg (active: {choices})")
    stored = active.get(alg)
    if stored is None:
        raise SigningError(f"no active {alg} key in {where}")
    return stored.key


def lifetime(policy: Policy, ttl: float | None, claims: Mapping[str, Any]) -> float:
    """The lifetime of a token of `claims`: `ttl`, within the policy's `max_token_ttl` (its
    default); the claims may not set `exp` themselves."""
    seconds = policy.max_token_ttl if ttl is None else ttl
    if not 0 < seconds <= policy.max_token_ttl:
        raise SigningError(
            f"--ttl must be more than 0 and at most --max-token-ttl "
            f"({format_duration(policy.max_token_ttl)})"
        )
    if "exp" in claims:
        raise SigningError("exp is set from --ttl; leave it out of the claims")
    return seconds


def signed_token(key: jwk.JWK, claims: Mapping[str, Any], now: int, seconds: float) -> str:
    """A compact JWS of `claims` with `iat` and `exp` (`seconds` later), signed by `key`."""
    payload = {"iat": now, **claims, "exp": now + int(seconds)}
    token = jwt.JWT(header={"alg": key["alg"], "kid": key["kid"], "typ": "JWT"}, claims=payload)
    token.make_signed_token(key)
    return str(token.serialize())
