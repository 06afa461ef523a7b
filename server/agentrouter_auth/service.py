"""The AuthService servicer: the one place the GetJWKS logic lives, for every transport."""

from __future__ import annotations

import grpc

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.snapshot import SnapshotSource


class AuthService(auth_pb2_grpc.AuthServiceServicer):
    """Answers GetJWKS from the current snapshot of the key set.

    The endpoint is public: no credential is required and request metadata (an Authorization
    header included) is not consulted.
    """

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    async def GetJWKS(  # noqa: N802 - the gRPC method name from the contract
        self,
        request: auth_pb2.GetJWKSRequest,
        context: grpc.aio.ServicerContext[auth_pb2.GetJWKSRequest, auth_pb2.GetJWKSResponse],
    ) -> auth_pb2.GetJWKSResponse:
        """Return the public key set of the current snapshot."""
        return self._source.snapshot().message
