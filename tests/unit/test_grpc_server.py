"""grpc: the gRPC handlers are built from the service descriptor, write a rendered
answer's stored bytes, and end a call with the code of the servicer's RpcError. (The
listener's limits are tested against the real server in tests/integration.)"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import grpc
import pytest

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.config import GrpcLimits
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.grpc.adapter import method_handlers
from agentrouter_auth.grpc.budget import CallBudget
from agentrouter_auth.grpc.health import HEALTH_CHECK, HEALTH_WATCH
from agentrouter_auth.grpc.server import BindError, start_grpc_server
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


def test_the_call_budget_keeps_watch_check_and_other_calls_apart() -> None:
    budget = CallBudget(GrpcLimits(max_calls=2, max_watches=3, max_connection_watches=2))
    watches, checks, calls = (budget.pool(m) for m in (HEALTH_WATCH, HEALTH_CHECK, GET_JWKS))
    assert len({id(watches), id(checks), id(calls)}) == 3
    full = "this worker is serving its limit of 2 calls"
    assert [calls.take("") for _ in range(3)] == [None, None, full]
    assert checks.take("") is None  # the call pool is full; Check has its own
    assert [watches.take("a"), watches.take("a")] == [None, None]
    assert watches.take("a") == "this connection holds its limit of 2 health Watch streams"
    assert watches.take("b") is None
    assert watches.take("c") == "this worker is serving its limit of 3 health Watch streams"
    watches.give_back("a")
    assert (watches.take("c"), watches.used) == (None, 3)
    calls.give_back("")
    assert calls.take("") is None


def test_an_address_in_use_is_a_bind_error_the_cli_reports_in_one_line(
    servicer: MakeServicer,
) -> None:
    with socket.socket() as taken:  # bound without SO_REUSEPORT: grpcio cannot share it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BindError) as raised:
            asyncio.run(start_grpc_server(servicer(ANSWER), "127.0.0.1", port))
    assert isinstance(raised.value, AgentRouterAuthError), "BindError has no common root"
    assert isinstance(raised.value, OSError)
    assert str(raised.value).startswith(f"cannot listen for gRPC on 127.0.0.1:{port}: ")
