"""Key material: the algorithms we sign with, how keys are made, and which keys we accept.

Every key that enters the key set, generated or imported, passes `validate`, so the published
set only ever holds asymmetric signature keys of adequate strength whose `kid` is their
RFC 7638 thumbprint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from agentrouter_auth.errors import AgentRouterAuthError


class InvalidKeyError(AgentRouterAuthError, ValueError):
    """A key cannot be part of the key set; the message says why."""


@dataclass(frozen=True, slots=True)
class Algorithm:
    """A JWS algorithm we issue tokens with and the key parameters it needs."""

    name: str
    params: dict[str, Any]


SIGNING_ALGORITHMS: dict[str, Algorithm] = {
    "RS256": Algorithm("RS256", {"kty": "RSA", "size": 2048}),
    "ES256": Algorithm("ES256", {"kty": "EC", "crv": "P-256"}),
    "EdDSA": Algorithm("EdDSA", {"kty": "OKP", "crv": "Ed25519"}),
}
DEFAULT_ALGORITHM = "ES256"
MIN_RSA_BITS = 2048
RSA_SIZES = (2048, 3072, 4096)

# Which `alg` values each key type may be published with (RFC 7518 §3.1, RFC 8037 §3.1).
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALG_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_SIGNATURE_CURVES = frozenset({"Ed25519", "Ed448"})
_ALLOWED_KEY_OPS = frozenset({"sign", "verify"})
# RFC 7517 §4 member types: a verifier given another type rejects the whole set.
_MEMBER_TYPES = {
    "kid": str, "alg": str, "use": str, "x5u": str, "x5t": str, "x5t#S256": str,
    "key_ops": list, "x5c": list,
}  # fmt: skip
_TYPE_NAMES = {str: "a string", list: "an array of strings"}


def _is(value: object, expected: type) -> bool:
    if expected is list:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)
    return isinstance(value, expected)


def generate_key(alg: str = DEFAULT_ALGORITHM, *, rsa_bits: int = 2048) -> jwk.JWK:
    """A new private signing key for `alg`, with `kid` = RFC 7638 SHA-256 thumbprint."""
    try:
        algorithm = SIGNING_ALGORITHMS[alg]
    except KeyError:
        raise InvalidKeyError(
            f"unsupported algorithm {alg!r}; choose one of {', '.join(SIGNING_ALGORITHMS)}"
        ) from None
    params = dict(algorithm.params)
    if params["kty"] == "RSA":
        if rsa_bits not in RSA_SIZES:
            raise InvalidKeyError(
                f"RSA keys are {', '.join(map(str, RSA_SIZES))} bits, not {rsa_bits}"
            )
        params["size"] = rsa_bits
    key = jwk.JWK.generate(**params)
    key.update(kid=key.thumbprint(), alg=algorithm.name, use="sig")
    return key


def default_alg(key: jwk.JWK) -> str | None:
    """The algorithm a key without `alg` is most likely used with (for imports)."""
    kty, crv = key.get("kty"), key.get("crv")
    if kty == "RSA":
        return "RS256"
    if kty == "EC":
        return _EC_ALG_BY_CURVE.get(crv)
    if kty == "OKP" and crv in _OKP_SIGNATURE_CURVES:
        return "EdDSA"
    return None


def rsa_bits(key: jwk.JWK) -> int:
    """Size of an RSA key's modulus in bits."""
    n = str(key.get("n", ""))
    return int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big").bit_length()


def validate(key: jwk.JWK) -> None:
    """Refuse any key that must not be published or sign; the message says why."""
    kty = key.get("kty")
    if kty == "oct":
        raise InvalidKeyError(
            "symmetric (oct) keys are refused: a shared secret is never published"
        )
    check = _TYPE_CHECKS.get(kty)
    if check is None:
        raise InvalidKeyError(f"unsupported key type {kty!r}")
    check(key, key.get("alg"), key.get("crv"))
    for member, expected in _MEMBER_TYPES.items():
        value = key.get(member)
        if value is not None and not _is(value, expected):
            raise InvalidKeyError(f"member {member} must be {_TYPE_NAMES[expected]}")
    if key.get("use") != "sig":
        raise InvalidKeyError(f"use must be 'sig', not {key.get('use')!r}")
    key_ops = key.get("key_ops")
    if key_ops is not None and not set(key_ops) <= _ALLOWED_KEY_OPS:
        raise InvalidKeyError(f"key_ops {key_ops!r} are not signature operations")
    kid, thumbprint = key.get("kid"), key.thumbprint()
    if kid != thumbprint:
        raise InvalidKeyError(f"kid {kid!r} is not the key's RFC 7638 thumbprint {thumbprint!r}")
    if key.has_private:
        check_private_half(key)


_PROBE = b"agentrouter-auth: does the private half match the public half?"


def check_private_half(key: jwk.JWK) -> None:
    """Refuse a private key whose private members do not belong to its public members.

    The kid and the published set come from the public members, and tokens are signed with the
    private ones: if they disagree, the ring would sign tokens no verifier accepts (Ed25519
    signs with `d` alone) or fail on every token (RSA, EC). So sign a probe with the private
    half and verify it with the public half alone. For RSA and EC, loading the private half
    already runs the library's consistency checks (p*q = n, d*G = (x, y)); they fail here too.
    """
    alg = str(key.get("alg"))
    try:
        signed = jws.JWS(_PROBE)
        signed.add_signature(key, alg=alg, protected=json.dumps({"alg": alg}))
        probe = jws.JWS()
        probe.deserialize(signed.serialize())
        probe.verify(public_copy(key))
    except (ValueError, TypeError, KeyError, JWException, UnsupportedAlgorithm) as err:
        detail = "signature does not verify" if isinstance(err, JWException) else str(err)
        raise InvalidKeyError(
            f"the private half does not belong to the public key {key.get('kid')} ({detail})"
        ) from err


def _check_rsa(key: jwk.JWK, alg: object, _crv: object) -> None:
    bits = rsa_bits(key)
    if bits < MIN_RSA_BITS:
        raise InvalidKeyError(f"RSA key of {bits} bits is refused (at least {MIN_RSA_BITS})")
    if alg not in _RSA_ALGS:
        raise InvalidKeyError(f"alg {alg!r} cannot be used with an RSA key")


def _check_ec(_key: jwk.JWK, alg: object, crv: object) -> None:
    expected = _EC_ALG_BY_CURVE.get(str(crv))
    if expected is None:
        raise InvalidKeyError(f"unknown or unsupported curve {crv!r} for an EC signature key")
    if alg != expected:
        raise InvalidKeyError(f"alg {alg!r} does not match curve {crv} ({expected})")


def _check_okp(_key: jwk.JWK, alg: object, crv: object) -> None:
    if crv not in _OKP_SIGNATURE_CURVES:
        raise InvalidKeyError(f"unknown or unsupported curve {crv!r} for an OKP signature key")
    if alg != "EdDSA":
        raise InvalidKeyError(f"alg {alg!r} cannot be used with an {crv} key (EdDSA)")


_TYPE_CHECKS: dict[str, Callable[[jwk.JWK, object, object], None]] = {
    "RSA": _check_rsa,
    "EC": _check_ec,
    "OKP": _check_okp,
}


def public_copy(key: jwk.JWK) -> jwk.JWK:
    """The public half of `key` as its own JWK."""
    _refuse_symmetric(key)
    return jwk.JWK(**key.export_public(as_dict=True))


def _refuse_symmetric(key: jwk.JWK) -> None:
    if key.get("kty") == "oct":
        raise InvalidKeyError(
            "symmetric (oct) keys are refused: a shared secret is never published"
        )
