"""The AuthService servicer: one coroutine per RPC, and no transport.

gRPC, Connect, gRPC-Web and REST are adapters built from the service descriptor (`rpc.bind`):
each calls the coroutine named after the RPC and writes its answer in its own protocol. A
method returns a message or a `Rendered` answer (its bytes rendered once per key-set version),
and raises `RpcError` for any status other than OK. The endpoints are public: no credential is
required, and request metadata (an Authorization header included) is never consulted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeVar

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.rendered import Freshness, Rendered, render_message
from agentrouter_auth.snapshot import NotLoadedError, PerSnapshot, Snapshot, SnapshotSource
from agentrouter_auth.status import Code, RpcError


@dataclass(frozen=True, slots=True)
class Discovery:
    """The issuer whose tokens the keys verify, and where its key set is published."""

    issuer: str
    jwks_uri: str


class AuthService:
    """Answers AuthService's RPCs from the current snapshot of the key set."""

    SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]

    def __init__(
        self,
        source: SnapshotSource,
        *,
        freshness: Freshness | None = None,
        discovery: Discovery | None = None,
    ) -> None:
        self._jwks = PerSnapshot(source, lambda shot: replace(shot.jwks, freshness=freshness))
        self._openid = (
            PerSnapshot(source, lambda shot: _openid_configuration(shot, discovery, freshness))
            if discovery is not None
            else None
        )

    async def get_jwks(
        self, request: auth_pb2.GetJWKSRequest
    ) -> Rendered[auth_pb2.GetJWKSResponse]:
        """The public key set: the snapshot's RFC 7517 document, cacheable for `freshness`."""
        return _current(self._jwks)

    async def get_open_id_configuration(
        self, request: auth_pb2.GetOpenIDConfigurationRequest
    ) -> Rendered[auth_pb2.GetOpenIDConfigurationResponse]:
        """The issuer's OpenID Connect Discovery document; NOT_FOUND without an issuer."""
        if self._openid is None:
            raise RpcError(Code.NOT_FOUND, "no issuer is configured (--issuer)")
        return _current(self._openid)


T = TypeVar("T")


def _current(answers: PerSnapshot[T]) -> T:
    """The answer for the snapshot served now; UNAVAILABLE before the first key set loads."""
    try:
        return answers.current()
    except NotLoadedError:
        raise RpcError(Code.UNAVAILABLE, "the key set has not been loaded yet") from None


def _openid_configuration(
    snapshot: Snapshot, discovery: Discovery, freshness: Freshness | None
) -> Rendered[auth_pb2.GetOpenIDConfigurationResponse]:
    """The discovery document of `discovery` for the keys `snapshot` publishes."""
    algorithms = sorted({key.alg for key in snapshot.jwks.message.keys})
    message = auth_pb2.GetOpenIDConfigurationResponse(
        issuer=discovery.issuer,
        jwks_uri=discovery.jwks_uri,
        response_types_supported=["id_token"],
        subject_types_supported=["public"],
        id_token_signing_alg_values_supported=algorithms,
    )
    return render_message(message, freshness=freshness)
