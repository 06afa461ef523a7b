"""Clients nobody here wrote: buf curl, @connectrpc/connect-node, grpcio and grpc.health."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.serverproc import ServerProcess

from .conftest import NODE_DIR, run

pytestmark = pytest.mark.integration
METHOD = "agentrouter.auth.v1.AuthService/GetJWKS"
BUF = str(Path(shutil.which("buf", path=str(Path(__import__("sys").executable).parent)) or "buf"))


def rest(server: ServerProcess) -> object:
    return httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()


@pytest.mark.parametrize(
    ("protocol", "port_of", "extra"),
    [
        ("connect", "http_port", []),
        ("grpcweb", "http_port", []),
        ("grpc", "port", ["--http2-prior-knowledge"]),
    ],
)
def test_buf_curl(
    server: ServerProcess, image: Path, protocol: str, port_of: str, extra: list[str]
) -> None:
    port = getattr(server, port_of)
    result = run(
        [BUF, "curl", "--schema", str(image), "--protocol", protocol, *extra,
         "-H", "Authorization: Bearer any-api-key", f"http://127.0.0.1:{port}/{METHOD}"]
    )  # fmt: skip
    assert json.loads(result.stdout) == rest(server)


def test_buf_curl_lists_methods_through_reflection(server: ServerProcess) -> None:
    result = run(
        [BUF, "curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-methods",
         f"http://127.0.0.1:{server.port}"]
    )  # fmt: skip
    assert METHOD in result.stdout.split()


def test_connect_node_over_every_protocol(server: ServerProcess, image: Path) -> None:
    result = run(
        ["node", "clients.mjs", str(image), server.base_url, f"http://127.0.0.1:{server.port}"],
        cwd=NODE_DIR,
    )
    answers = json.loads(result.stdout)
    assert sorted(answers) == [
        "connect-binary",
        "connect-get",
        "connect-json",
        "grpc-h2c",
        "grpc-web",
    ]
    expected = rest(server)
    for protocol, answer in answers.items():
        assert answer == expected, protocol


def test_grpcio_health_check(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agentrouter.auth.v1.AuthService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)  # type: ignore[attr-defined]
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)  # type: ignore[attr-defined]
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
