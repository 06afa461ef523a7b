"""The AuthService servicer: the one place the GetJWKS logic lives, for every transport.

gRPC calls `GetJWKS`, Connect and gRPC-Web call `get_jwks`, and the REST transcoder calls the
handler from `rest_handlers`. All three answer from the same snapshot. The endpoint is public:
no credential is required, and request metadata (an Authorization header included) is never
consulted.
"""

from __future__ import annotations

from typing import Any

import grpc

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.snapshot import Snapshot, SnapshotSource
from agentrouter_auth.transcode import Prerendered, UnaryHandler

JWK_SET_MEDIA_TYPE = "application/jwk-set+json"  # RFC 7517 §8.5.1


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    """Answers GetJWKS from the current snapshot of the key set."""

    def __init__(self, source: SnapshotSource, *, cache_control: str | None = None) -> None:
        self._source = source
        self._cache_control = cache_control
        self._rendered: tuple[Snapshot, Prerendered] | None = None

    @property
    def source(self) -> SnapshotSource:
        """Where the current snapshot comes from (transports reuse its stored bytes)."""
        return self._source

    async def GetJWKS(  # noqa: N802 - the gRPC method name from the contract
        self,
        request: auth_pb2.GetJWKSRequest,
        context: grpc.aio.ServicerContext[auth_pb2.GetJWKSRequest, auth_pb2.GetJWKSResponse],
    ) -> auth_pb2.GetJWKSResponse:
        """gRPC: the public key set of the current snapshot."""
        return self._source.snapshot().message

    async def get_jwks(
        self,
        request: auth_pb2.GetJWKSRequest,
        ctx: Any,  # noqa: ANN401 - connectrpc's RequestContext, unused
        /,
    ) -> auth_pb2.GetJWKSResponse:
        """Connect and gRPC-Web: the same message (its codecs reuse the snapshot's bytes)."""
        return self._source.snapshot().message

    async def rest_get_jwks(self, request: Any) -> Prerendered:  # noqa: ANN401 - any message
        """REST: the snapshot's RFC 7517 bytes with their ETag and cache lifetime."""
        snapshot = self._source.snapshot()
        rendered = self._rendered
        if rendered is None or rendered[0] is not snapshot:  # once per key-set version
            headers = {"cache-control": self._cache_control} if self._cache_control else {}
            rendered = (
                snapshot,
                Prerendered(
                    body=snapshot.json,
                    etag=snapshot.etag,
                    alternate_types=(JWK_SET_MEDIA_TYPE,),
                    headers=tuple((k.encode(), v.encode()) for k, v in headers.items()),
                    gzip_body=snapshot.json_gzip,
                ),
            )
            self._rendered = rendered
        return rendered[1]

    def rest_handlers(self) -> dict[str, UnaryHandler]:
        """Handlers for the transcoder, by RPC name."""
        return {"GetJWKS": self.rest_get_jwks}
