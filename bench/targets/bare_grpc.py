"""Baseline: a grpcio aio server whose GetJWKS returns a prebuilt message.

python bare_grpc.py PORT MESSAGE_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc

from agentrouter.auth.v1 import auth_pb2

SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name


async def main(port: int, message_file: str) -> None:
    """Serve until killed."""
    server = grpc.aio.server()
    message = auth_pb2.GetJWKSResponse.FromString(Path(message_file).read_bytes())

    async def get_jwks(request: Any, context: Any) -> auth_pb2.GetJWKSResponse:  # noqa: ANN401
        return message  # the same message object every time

    handler = grpc.unary_unary_rpc_method_handler(
        get_jwks,
        request_deserializer=auth_pb2.GetJWKSRequest.FromString,
        response_serializer=auth_pb2.GetJWKSResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, {"GetJWKS": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
