"""Baseline: a grpcio aio server whose GetJWKS returns a prebuilt message.

python bare_grpc.py PORT MESSAGE_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc


class Prebuilt(auth_pb2_grpc.AuthServiceServicer):
    """Returns the same message object every time."""

    def __init__(self, message: auth_pb2.GetJWKSResponse) -> None:
        self.message = message

    async def GetJWKS(self, request: Any, context: Any) -> auth_pb2.GetJWKSResponse:  # noqa: ANN401, N802
        """The prebuilt message."""
        return self.message


async def main(port: int, message_file: str) -> None:
    """Serve until killed."""
    server = grpc.aio.server()
    message = auth_pb2.GetJWKSResponse.FromString(Path(message_file).read_bytes())
    auth_pb2_grpc.add_AuthServiceServicer_to_server(Prebuilt(message), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
