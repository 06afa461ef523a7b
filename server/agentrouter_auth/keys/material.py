"""Key material: which algorithms we sign with, and how a key of each is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A JWS algorithm we issue tokens with and the key parameters it needs."""

    name: str
    params: dict[str, Any]


ALGORITHMS: dict[str, Algorithm] = {
    "RS256": Algorithm("RS256", {"kty": "RSA", "size": 2048}),
    "ES256": Algorithm("ES256", {"kty": "EC", "crv": "P-256"}),
    "EdDSA": Algorithm("EdDSA", {"kty": "OKP", "crv": "Ed25519"}),
}
DEFAULT_ALGORITHM = "ES256"


def generate_key(alg: str = DEFAULT_ALGORITHM) -> jwk.JWK:
    """A new private signing key for `alg`, with `kid` = RFC 7638 SHA-256 thumbprint."""
    try:
        algorithm = ALGORITHMS[alg]
    except KeyError:
        raise ValueError(
            f"unsupported algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}"
        ) from None
    key = jwk.JWK.generate(**algorithm.params)
    key.update(kid=key.thumbprint(), alg=algorithm.name, use="sig")
    return key
