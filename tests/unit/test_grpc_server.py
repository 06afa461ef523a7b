"""grpc.server: the listener's assembly; an address it cannot bind is a BindError, which the
CLI reports in one line."""

from __future__ import annotations

import asyncio
import socket

import pytest

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.grpc.server import BindError, start_grpc_server
from agentrouter_auth.rendered import render_message

from .conftest import MakeServicer

ANSWER = render_message(auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="k", kty="OKP")]))


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
