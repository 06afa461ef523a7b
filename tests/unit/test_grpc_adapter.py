"""grpc.adapter: the gRPC handlers are built from the service descriptor, write a rendered
answer's stored bytes, and end a call with the code of the servicer's RpcError. (The
listener's limits are tested against the real server in tests/integration.)"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.grpc.adapter import method_handlers
from agentrouter_auth.grpc.server import start_grpc_server
from agentrouter_auth.rendered import render_message
from agentrouter_auth.status import Code, RpcError

from .conftest import MakeServicer

ANSWER = render_message(auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="k", kty="OKP")]))
GET_JWKS = "/agentrouter.auth.v1.AuthService/GetJWKS"


def call(servicer: Any) -> tuple[grpc.StatusCode, str | None, bytes | None]:
    """One GetJWKS call to a real gRPC listener on loopback: (code, details, raw answer)."""

    async def go() -> tuple[grpc.StatusCode, str | None, bytes | None]:
        server = await start_grpc_server(servicer, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                raw = channel.unary_unary(GET_JWKS, lambda body: body, lambda body: body)
                try:
                    answer = await raw(b"", timeout=10)
                except grpc.aio.AioRpcError as err:
                    return err.code(), err.details(), None
                return grpc.StatusCode.OK, None, answer
        finally:
            await server.stop(0)

    return asyncio.run(go())


def test_every_rpc_of_the_descriptor_has_a_handler(servicer: MakeServicer) -> None:
    handlers = method_handlers(servicer(ANSWER))
    assert set(handlers) == {
        method.name for method in auth_pb2.DESCRIPTOR.services_by_name["AuthService"].methods
    }
    deserialize = handlers["GetJWKS"].request_deserializer
    assert deserialize is not None
    assert deserialize(b"") == auth_pb2.GetJWKSRequest()


def test_a_rendered_answer_is_written_as_its_stored_bytes(servicer: MakeServicer) -> None:
    serialize = method_handlers(servicer(ANSWER))["GetJWKS"].response_serializer
    assert serialize is not None
    assert serialize(ANSWER) is ANSWER.proto  # no serialization per call
    plain = auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="x")])
    assert serialize(plain) == plain.SerializeToString()
    assert call(servicer(ANSWER)) == (grpc.StatusCode.OK, None, ANSWER.proto)


def test_an_rpc_error_ends_the_call_with_its_code(servicer: MakeServicer) -> None:
    code, details, _ = call(servicer(ANSWER, RpcError(Code.UNAVAILABLE, "try later")))
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "try later")
