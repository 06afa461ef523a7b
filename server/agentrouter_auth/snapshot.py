"""Render a key set's public half once into immutable bytes that every transport serves.

A `Snapshot` is built off the request path whenever the key set changes. Requests only read
the current snapshot and write its bytes, so they never serialize, never touch disk and never
take a lock, and a half-written key file can never reach the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from google.protobuf import json_format
from jwcrypto import jwk

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.keys.check import check_public_members
from agentrouter_auth.keys.material import InvalidKeyError
from agentrouter_auth.rendered import Rendered, render_message

T = TypeVar("T")
JWK_SET_MEDIA_TYPE = "application/jwk-set+json"  # RFC 7517 §8.5.1

# Members every published key must carry: PyJWT ignores keys without `kid`, node jose matches
# on `alg`, and `use` tells verifiers the key is for signatures.
REQUIRED_MEMBERS = ("kty", "kid", "alg", "use")


class KeySetError(AgentRouterAuthError, ValueError):
    """The keys cannot be published as given; the message says which key and why."""


class NotLoadedError(KeySetError):
    """No key set has been loaded yet (the store was unreachable since the process started):
    there is nothing to serve, as opposed to an old set still served."""


class EmptyKeySetError(KeySetError):
    """There is no key to publish: verifiers would reject every token."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One version of the public key set, rendered once for every protocol.

    `jwks.message` is shared by every request and must never be mutated.
    """

    version: int
    jwks: Rendered[auth_pb2.GetJWKSResponse]

    @property
    def message(self) -> auth_pb2.GetJWKSResponse:
        """The GetJWKS response."""
        return self.jwks.message

    @property
    def proto(self) -> bytes:
        """The response's protobuf bytes."""
        return self.jwks.proto

    @property
    def json(self) -> bytes:
        """The RFC 7517 document: the response's compact proto3 JSON."""
        return self.jwks.json

    @property
    def etag(self) -> str:
        """The strong ETag of `json`."""
        return self.jwks.etag

    @property
    def kids(self) -> tuple[str, ...]:
        """Key IDs in the published order."""
        return tuple(key.kid for key in self.message.keys)


class SnapshotSource(Protocol):
    """Anything that can say which snapshot is current (a static set, the key ring)."""

    def snapshot(self) -> Snapshot:
        """The snapshot to serve now."""
        ...


class PerSnapshot(Generic[T]):
    """A value derived from the current snapshot, built once per key-set version.

    For answers that depend on the key set and on settings the snapshot does not hold (a cache
    lifetime, an issuer): the first request after a reload builds it, the others reuse it.
    """

    def __init__(self, source: SnapshotSource, build: Callable[[Snapshot], T]) -> None:
        self._source = source
        self._build = build
        self._cached: tuple[Snapshot, T] | None = None

    def current(self) -> T:
        """The value for the snapshot being served now."""
        snapshot = self._source.snapshot()
        cached = self._cached
        if cached is None or cached[0] is not snapshot:
            cached = self._cached = (snapshot, self._build(snapshot))
        return cached[1]


class StaticKeySet:
    """A snapshot that never changes: for tests and for serving a fixed set."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        """The one snapshot this source holds."""
        return self._snapshot


def public_members(key: jwk.JWK) -> dict[str, Any]:
    """The public JWK members of `key`, refusing keys that cannot be published safely."""
    name = key.get("kid") or "<no kid>"
    try:
        check_public_members({"kty": key.get("kty")})  # before export_public, which raises
        members: dict[str, Any] = key.export_public(as_dict=True)
        # export_public strips private members; the shared check guards against a regression
        check_public_members(members)
    except InvalidKeyError as err:
        raise KeySetError(f"key {name}: {err}") from err
    missing = [member for member in REQUIRED_MEMBERS if not members.get(member)]
    if missing:
        raise KeySetError(f"key {name}: missing required member(s) {', '.join(missing)}")
    return members


def render(keys: Iterable[jwk.JWK], version: int = 0) -> Snapshot:
    """Render the public half of `keys` into a snapshot, keys sorted by `kid`.

    The JSON bytes are the compact proto3 JSON form of the response message, whose field JSON
    names are the RFC member names, so REST, Connect JSON and the binary protocols publish the
    same document. Members the contract does not model (for example `ext`) are dropped.
    """
    by_kid: dict[str, auth_pb2.JWK] = {}
    for key in keys:
        members = public_members(key)
        kid = members["kid"]
        if kid in by_kid:
            raise KeySetError(f"key {kid}: duplicate kid")
        try:
            by_kid[kid] = json_format.ParseDict(members, auth_pb2.JWK(), ignore_unknown_fields=True)
        except json_format.ParseError as err:
            raise KeySetError(f"key {kid}: a member has the wrong type: {err}") from err
    if not by_kid:
        raise EmptyKeySetError("the key set is empty: there is nothing to verify tokens with")
    message = auth_pb2.GetJWKSResponse(keys=[by_kid[kid] for kid in sorted(by_kid)])
    return Snapshot(version, render_message(message, media_types=(JWK_SET_MEDIA_TYPE,)))
