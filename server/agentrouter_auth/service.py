"""The AuthService servicer: one coroutine per RPC, and no transport.

gRPC, Connect, gRPC-Web and REST are adapters built from the service descriptor (`rpc.bind`):
each calls the coroutine named after the RPC and writes its answer in its own protocol. A
method returns a message or a `Rendered` answer (its bytes rendered once per key-set version),
and raises `RpcError` for any status other than OK. The endpoints are public: no credential is
required, and request metadata (an Authorization header included) is never consulted.
"""

from __future__ import annotations

from dataclasses import replace

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.rendered import Freshness, Rendered
from agentrouter_auth.snapshot import PerSnapshot, SnapshotSource


class AuthService:
    """Answers AuthService's RPCs from the current snapshot of the key set."""

    SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]

    def __init__(self, source: SnapshotSource, *, freshness: Freshness | None = None) -> None:
        self._jwks = PerSnapshot(source, lambda shot: replace(shot.jwks, freshness=freshness))

    async def get_jwks(
        self, request: auth_pb2.GetJWKSRequest
    ) -> Rendered[auth_pb2.GetJWKSResponse]:
        """The public key set: the snapshot's RFC 7517 document, cacheable for `freshness`."""
        return self._jwks.current()
