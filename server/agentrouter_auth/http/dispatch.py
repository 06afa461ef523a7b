"""Which handler answers a request on the HTTP listener: one table.

The service's own endpoints are found by their exact path. Every other request goes to the
first row whose path prefix and Content-Type prefix it has: under the service's RPC prefix
(`/agentrouter.auth.v1.AuthService/`) gRPC-Web, native gRPC (refused: it belongs on the gRPC
port) and Connect; anywhere else REST. A row with a protocol is recorded under it (metrics,
access log), and the protocols of this table (plus native gRPC's) are the values of the
metrics' `protocol` label. A new transport on the HTTP port is one adapter and one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentrouter_auth import status
from agentrouter_auth.asgi_types import App, Message
from agentrouter_auth.connect import (
    DEFAULT_READ_MAX_BYTES,
    UnaryPath,
    code_of_bare_status,
    connect_app,
    connect_code_at_start,
    connect_code_in_body,
    grpc_web_code_at_start,
    grpc_web_code_in_body,
)
from agentrouter_auth.http.health import liveness, readiness
from agentrouter_auth.http.metrics_endpoint import metrics_endpoint
from agentrouter_auth.http.recording import Protocol
from agentrouter_auth.http.representation import (
    Representation,
    RpcCors,
    connect_error,
    grpc_refusal,
)
from agentrouter_auth.rpc import bind
from agentrouter_auth.service import AuthService
from agentrouter_auth.transcode import Transcoder, routes_for
from agentrouter_auth.transcode.errors import code_of_status_json

if TYPE_CHECKING:
    from agentrouter_auth.runtime import Runtime

Build = Callable[["Runtime"], App]
"""Builds a row's app once per HTTP app, from the process's runtime."""

RPC_PREFIX = f"/{AuthService.SERVICE.full_name}/"


def rest_code_at_start(http_status: int, start: Message) -> status.Code | None:
    """A REST answer below 400 is OK; an error's code is in its google.rpc.Status body."""
    return status.Code.OK if http_status < 400 else None


REST = Protocol("rest", rest_code_at_start, code_of_status_json)
CONNECT = Protocol("connect", connect_code_at_start, connect_code_in_body, code_of_bare_status)
GRPC_WEB = Protocol("grpcweb", grpc_web_code_at_start, grpc_web_code_in_body, code_of_bare_status)


@dataclass(frozen=True, slots=True)
class Row:
    """Requests whose path and Content-Type start so go to the app `build` makes."""

    path_prefix: str
    content_type: bytes
    protocol: Protocol | None
    build: Build


def rest_app(runtime: Runtime) -> App:
    """REST: the transcoder on the servicer's `google.api.http` routes."""
    service = runtime.service
    handlers = {method.name: method.call for method in bind(service)}
    return Transcoder(routes_for(service.SERVICE, handlers), responder=Representation())


def connectrpc(runtime: Runtime) -> App:
    """Connect and gRPC-Web: one connectrpc app serves both, open to browsers of any origin."""
    return RpcCors(
        connect_app(runtime.service, error=connect_error, read_max_bytes=DEFAULT_READ_MAX_BYTES)
    )


def connect(runtime: Runtime) -> App:
    """Connect and gRPC-Web: the unary calls of rendered answers from their stored bytes, every
    other request by the connectrpc app (`connectrpc`)."""
    return UnaryPath(bind(runtime.service), connectrpc(runtime), DEFAULT_READ_MAX_BYTES)


def native_grpc_refusal(runtime: Runtime) -> App:
    """gRPC needs HTTP trailers, which ASGI servers do not carry: point to the gRPC port.

    The client sees UNIMPLEMENTED with the reason (`grpc_refusal`: a trailers-only answer)
    rather than a broken stream.
    """
    message = f"native gRPC is served on the gRPC port ({runtime.config.grpc_addr.port})"
    return grpc_refusal(status.Code.UNIMPLEMENTED, message)


ENDPOINTS: dict[str, Build] = {
    "/healthz": liveness,
    "/readyz": readiness,
    "/metrics": metrics_endpoint,
}
ROWS: tuple[Row, ...] = (
    Row(RPC_PREFIX, b"application/grpc-web", GRPC_WEB, connect),
    Row(RPC_PREFIX, b"application/grpc", None, native_grpc_refusal),
    Row(RPC_PREFIX, b"", CONNECT, connect),
    Row("", b"", REST, rest_app),  # anything else
)
PROTOCOLS = tuple(dict.fromkeys(row.protocol.name for row in ROWS if row.protocol is not None))
"""The HTTP listener's protocols, as metrics label them."""
