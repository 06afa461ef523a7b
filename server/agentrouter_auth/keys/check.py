"""The one check of a stored key, shared by every store and by the snapshot.

Whatever keeps keys (a directory of files, database rows, anything a backend adds) hands the
ring only keys that pass `check_stored_key` against their entry: a valid asymmetric signature
key (`material.validate`: no symmetric key, kid = RFC 7638 thumbprint, an allowed alg, a private
half that belongs to the public one), the key its entry names with the alg its entry says, and
a private half wherever the entry's state signs. What is published passes
`check_public_members`: no symmetric key, no private member.
"""

from __future__ import annotations

from collections.abc import Mapping

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentrouter_auth.keys.material import InvalidKeyError, validate
from agentrouter_auth.keys.store import SIGNING_STATES, Entry

PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
"""The JWK members that hold private or secret key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1)."""
SYMMETRIC = "symmetric (oct) keys are refused: a shared secret is never published"


def check_public_members(members: Mapping[str, object]) -> None:
    """Refuse public members that must never be published: a symmetric key, or a private
    member among them. InvalidKeyError says why."""
    if members.get("kty") == "oct":
        raise InvalidKeyError(SYMMETRIC)
    leaked = sorted(PRIVATE_MEMBERS.intersection(members))
    if leaked:
        raise InvalidKeyError(f"the public JWK holds private member(s) {', '.join(leaked)}")


def parse_key(raw: bytes) -> jwk.JWK:
    """A JWK from its stored text; InvalidKeyError if it is none."""
    try:
        return jwk.JWK.from_json(raw.decode("utf-8"))
    except (ValueError, KeyError, TypeError, JWException, UnicodeDecodeError) as err:
        reason = "empty file" if not raw.strip() else f"{type(err).__name__}: {err}"
        raise InvalidKeyError(f"not a valid JWK ({reason})") from err


def check_stored_key(
    entry: Entry, key: jwk.JWK, *, record: str, private: bool | None = None
) -> None:
    """Refuse `key` as the stored key of `entry` unless it is valid (`validate`), is the key
    `entry` names with the alg it says, and holds a private half wherever `entry`'s state signs.

    `record` names where the entry is kept, for the message ("the manifest", "the row").
    `private` says whether the key has a private half when `key` is its public half only (a
    store that keeps the private half sealed apart, checked once opened); by default,
    `key.has_private`. InvalidKeyError says what is wrong.
    """
    validate(key)
    if key.get("kid") != entry.kid:
        raise InvalidKeyError(f"holds key {key.get('kid')}, not {entry.kid} as {record} says")
    if key.get("alg") != entry.alg:
        raise InvalidKeyError(f"alg {key.get('alg')} but {record} says {entry.alg}")
    has_private = key.has_private if private is None else private
    if entry.state in SIGNING_STATES and not has_private:
        raise InvalidKeyError(f"{entry.state.value} key has no private half to sign with")
