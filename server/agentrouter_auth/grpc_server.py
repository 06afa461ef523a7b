"""The native gRPC transport (grpcio aio): AuthService, grpc.health.v1 and reflection."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.config import TLSConfig
from agentrouter_auth.service import AuthService

if TYPE_CHECKING:  # imported by the workers only: prometheus-client must first see
    # PROMETHEUS_MULTIPROC_DIR, which `serve` sets after its own imports.
    from agentrouter_auth.metrics import Recorder

Req = TypeVar("Req")
Resp = TypeVar("Resp")
AUTH_SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
# Health entry that turns NOT_SERVING while the last key-store reload failed. The server keeps
# serving the last good set meanwhile, so "" and AuthService stay SERVING.
KEYRING_HEALTH_NAME = "agentrouter.auth.v1.AuthService/keyring"


class BindError(OSError):
    """The gRPC listener could not bind its address."""


class GrpcServer:
    """A started grpcio server and the port it bound."""

    def __init__(
        self, server: grpc.aio.Server, port: int, health: health.aio.HealthServicer
    ) -> None:
        self.server = server
        self.port = port
        self.health = health

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and for AuthService."""
        for name in ("", AUTH_SERVICE_NAME):
            await self.health.set(name, _status(serving))

    async def set_keyring_health(self, healthy: bool) -> None:
        """Report whether the last key-store reload succeeded."""
        await self.health.set(KEYRING_HEALTH_NAME, _status(healthy))

    async def stop(self, grace: float) -> None:
        """Turn health NOT_SERVING, stop accepting, and let in-flight calls finish."""
        await self.set_serving(False)
        await self.server.stop(grace)


def auth_method_handlers(service: AuthService) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """AuthService's handlers, as the generated `add_AuthServiceServicer_to_server` builds
    them, except that the response serializer writes the snapshot's stored bytes when the
    response is the snapshot's own message: no serialization per request."""
    source = service.source

    def serialize(message: Message) -> bytes:
        snapshot = source.snapshot()
        if message is snapshot.message:
            return snapshot.proto
        return message.SerializeToString()

    return {
        "GetJWKS": grpc.unary_unary_rpc_method_handler(
            service.GetJWKS,
            request_deserializer=auth_pb2.GetJWKSRequest.FromString,
            response_serializer=serialize,
        )
    }


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts AuthService calls and their latency for /metrics."""

    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def intercept_service(  # type: ignore[override] # typeshed binds the TypeVars oddly
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Wrap AuthService's unary handlers; leave health and reflection alone."""
        handler = await continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if service != AUTH_SERVICE_NAME or handler is None or handler.unary_unary is None:
            return handler
        behavior, record = handler.unary_unary, self._recorder.record

        async def counted(request: Any, context: Any) -> Any:  # noqa: ANN401 - any RPC
            started, code = time.perf_counter(), "UNKNOWN"
            try:
                response = await behavior(request, context)
                code = "OK"
                return response
            finally:
                status = context.code()
                if status is not None and status != grpc.StatusCode.OK:
                    code = status.name
                record("grpc", method, code, started)

        return grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


async def start_grpc_server(
    service: AuthService,
    host: str,
    port: int,
    *,
    tls: TLSConfig | None = None,
    recorder: Recorder | None = None,
) -> GrpcServer:
    """Bind `host:port` (port 0 picks a free one), register every service and start serving."""
    interceptors = [MetricsInterceptor(recorder)] if recorder is not None else []
    server = grpc.aio.server(interceptors=interceptors)
    handlers = auth_method_handlers(service)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(AUTH_SERVICE_NAME, handlers),)
    )
    server.add_registered_method_handlers(AUTH_SERVICE_NAME, handlers)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            AUTH_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(target)
        else:
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None,
            )
            bound = server.add_secure_port(target, credentials)
    except RuntimeError as err:  # grpcio raises RuntimeError when it cannot bind
        raise BindError(f"cannot listen for gRPC on {target}: {err}") from err
    await server.start()
    started = GrpcServer(server, bound, health_servicer)
    await started.set_serving(True)
    await started.set_keyring_health(True)
    return started


def _status(serving: bool) -> int:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
