"""rpc: each RPC of a service descriptor bound to the servicer coroutine of the same name."""

from __future__ import annotations

from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from agentrouter.auth.v1 import auth_connect, auth_pb2
from agentrouter_auth.rpc import ServicerError, bind, python_name

AUTH_SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]


@pytest.mark.parametrize(
    ("rpc", "name"),
    [("GetJWKS", "get_jwks"), ("GetOpenIDConfiguration", "get_open_id_configuration"),
     ("ListBooks", "list_books"), ("HTTPRule", "http_rule"), ("Check", "check")],
)  # fmt: skip
def test_python_names_are_connectrpcs(rpc: str, name: str) -> None:
    assert python_name(rpc) == name


def test_every_rpc_has_the_name_the_generated_connect_code_calls() -> None:
    for method in AUTH_SERVICE.methods:
        assert hasattr(auth_connect.AuthService, python_name(method.name)), method.name


class Servicer:
    SERVICE = AUTH_SERVICE

    async def get_jwks(self, request: Any) -> Any:
        return request

    async def get_open_id_configuration(self, request: Any) -> Any:
        return request


def test_bind_finds_the_coroutine_request_class_and_path_of_each_rpc() -> None:
    servicer = Servicer()
    jwks, discovery = bind(servicer)
    assert (jwks.name, discovery.name) == ("GetJWKS", "GetOpenIDConfiguration")
    assert jwks.call == servicer.get_jwks
    assert discovery.call == servicer.get_open_id_configuration
    assert jwks.request_class is auth_pb2.GetJWKSRequest
    assert discovery.request_class is auth_pb2.GetOpenIDConfigurationRequest
    assert jwks.path == "/agentrouter.auth.v1.AuthService/GetJWKS"
    assert discovery.path == "/agentrouter.auth.v1.AuthService/GetOpenIDConfiguration"


def test_a_servicer_without_an_rpcs_method_is_refused() -> None:
    class Forgetful:
        SERVICE = AUTH_SERVICE

    with pytest.raises(ServicerError, match=r"no method get_jwks\(\) for rpc .*GetJWKS"):
        bind(Forgetful())


def test_streaming_rpcs_are_refused() -> None:
    class Health:
        SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"]

        async def check(self, request: Any) -> Any:
            return request

        async def list(self, request: Any) -> Any:
            return request

        async def watch(self, request: Any) -> Any:
            return request

    with pytest.raises(ServicerError, match="Watch: only unary RPCs are served"):
        bind(Health())  # type: ignore[arg-type] # grpc_health's descriptor is typed as upb's
