"""http.dispatch: which handler answers a request of the HTTP listener, and under which
protocol it is counted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth import metrics
from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.dispatch import PROTOCOLS, ROWS

from .conftest import Call

JWKS = "/.well-known/jwks.json"
RPC = "/agentrouter.auth.v1.AuthService/GetJWKS"


def counted(app: HttpApp) -> dict[str, float]:
    """Requests counted so far, by protocol (all methods and codes)."""
    app.runtime.recorder.flush()
    totals = dict.fromkeys(PROTOCOLS, 0.0)
    for family in metrics.REQUESTS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["protocol"] in totals:
                totals[sample.labels["protocol"]] += sample.value
    return totals


def test_the_protocols_are_the_tables_and_grpc_is_added_once(http_app: HttpApp) -> None:
    assert PROTOCOLS == ("grpcweb", "connect", "rest")
    assert {row.protocol.name for row in ROWS if row.protocol} == set(PROTOCOLS)
    assert http_app.runtime.recorder.protocols == (*PROTOCOLS, "grpc")


grpc_web_frame = b"\x00\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "protocol"),
    [
        ("GET", JWKS, {}, b"", "rest"),
        ("GET", "/nowhere", {}, b"", "rest"),
        ("POST", RPC, {"content-type": "application/json"}, b"{}", "connect"),
        ("GET", RPC + "?encoding=json&message={}", {}, b"", "connect"),
        ("POST", RPC, {"content-type": "application/grpc-web+proto"}, grpc_web_frame, "grpcweb"),
        ("POST", "/agentrouter.auth.v1.AuthService/Nope",
         {"content-type": "application/proto"}, b"", "connect"),
    ],
)  # fmt: skip
def test_each_request_goes_to_its_protocol_and_is_counted_under_it(
    http_app: HttpApp,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes,
    protocol: str,
    call: Call,
) -> None:
    before = counted(http_app)
    response = call(http_app, method, path, headers=headers, content=content)
    assert response.status_code < 500
    after = counted(http_app)
    grown = {name: after[name] - before[name] for name in PROTOCOLS}
    assert grown == {name: float(name == protocol) for name in PROTOCOLS}


def test_every_protocol_answers_from_the_same_bytes(http_app: HttpApp, call: Call) -> None:
    rest = call(http_app, "GET", JWKS)
    connect = call(http_app, "POST", RPC, headers={"content-type": "application/json"},
                      content=b"{}")  # fmt: skip
    binary = call(http_app, "POST", RPC, headers={"content-type": "application/proto"})
    assert rest.content == connect.content
    assert (
        auth_pb2.GetJWKSResponse.FromString(binary.content)
        == http_app.runtime.ring.snapshot().message
    )
    assert binary.content == http_app.runtime.ring.snapshot().proto


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_the_services_own_endpoints_are_not_counted(
    http_app: HttpApp, path: str, call: Call
) -> None:
    before = counted(http_app)
    response = call(http_app, "GET", path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert counted(http_app) == before


def test_native_grpc_is_sent_to_the_grpc_port_and_not_counted(
    http_app: HttpApp, call: Call
) -> None:
    before = counted(http_app)
    response = call(http_app, "POST", RPC, headers={"content-type": "application/grpc"})
    assert response.status_code == 200
    assert response.headers["grpc-status"] == "12"
    assert "gRPC port (9090)" in response.headers["grpc-message"]
    assert counted(http_app) == before


def test_a_path_outside_every_prefix_is_rests_404(http_app: HttpApp) -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "OPTIONS", "path": "*", "raw_path": b"*",
             "query_string": b"", "headers": []}  # fmt: skip
    asyncio.run(http_app(scope, receive, send))
    assert sent[0]["status"] == 404
