"""`start_grpc_server`: the gRPC listener assembled, bound and started.

The servicer's handlers (`adapter`), health and reflection (`health`) are registered, then
served wrapped: each call within its pool of the `budget` and its request's deadline (`guard`,
which reports early cancellations to `resets`), and the service's calls counted (`recording`).
grpcio's channel options enforce the rest of `GrpcLimits` (`server_options`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from agentrouter_auth.config import INT_MAX, GrpcLimits, TLSConfig
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.grpc.adapter import service_handler
from agentrouter_auth.grpc.budget import CallBudget
from agentrouter_auth.grpc.guard import RequestGuard
from agentrouter_auth.grpc.health import Health, add_health_and_reflection
from agentrouter_auth.grpc.recording import CallMetrics
from agentrouter_auth.grpc.resets import ResetMonitor
from agentrouter_auth.grpc.wrapping import Registry, WrappedHandlers
from agentrouter_auth.rpc import Servicer

if TYPE_CHECKING:  # imported by the workers only: prometheus-client must first see
    # PROMETHEUS_MULTIPROC_DIR, which `serve` sets after its own imports.
    from agentrouter_auth.metrics import Recorder


class BindError(AgentRouterAuthError, OSError):
    """The gRPC listener could not bind its address."""


class GrpcServer:
    """A started grpcio server, the port it bound and its health entries."""

    def __init__(self, server: grpc.aio.Server, port: int, health: Health) -> None:
        self.server = server
        self.port = port
        self.health = health

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and for its service."""
        await self.health.set_serving(serving)

    async def set_keyring_health(self, healthy: bool) -> None:
        """Report whether the key ring does its job (`RingStatus.serving`)."""
        await self.health.set_keyring_health(healthy)

    async def stop(self, grace: float) -> None:
        """Turn health NOT_SERVING, stop accepting, and let in-flight calls finish."""
        await self.set_serving(False)
        await self.server.stop(grace)


async def start_grpc_server(
    service: Servicer,
    host: str,
    port: int,
    *,
    tls: TLSConfig | None = None,
    recorder: Recorder | None = None,
    limits: GrpcLimits | None = None,
) -> GrpcServer:
    """Bind `host:port` (port 0 picks a free one), register every service and start serving
    within `limits` (GrpcLimits() when not given)."""
    limits = limits or GrpcLimits()
    resets = ResetMonitor(limits.max_resets)
    service_name = service.SERVICE.full_name
    registry = Registry()
    registry.add_generic_rpc_handlers((service_handler(service),))
    health = add_health_and_reflection(registry, service_name)
    # Every method guarded and budgeted (the budget first, so that a refused call reads
    # nothing); the service's calls counted around both, so that metrics count the answers
    # they give.
    guard = RequestGuard(limits.request_timeout, resets, limits.max_connection_pending)
    budget = CallBudget(limits)
    counted = CallMetrics(recorder, service_name) if recorder is not None else None

    def wrap(
        method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = budget.wrap(method, guard.wrap(method, handler))
        return handler if counted is None else counted.wrap(method, handler)

    server = grpc.aio.server(
        handlers=(WrappedHandlers(registry.handlers, wrap),),
        options=server_options(limits),
    )
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        if tls is None:
            bound = server.add_insecure_port(target)
        else:
            bound = server.add_secure_port(target, _credentials(tls))
    except RuntimeError as err:  # grpcio raises RuntimeError when it cannot bind
        raise BindError(f"cannot listen for gRPC on {target}: {err}") from err
    resets.port = bound
    await server.start()
    started = GrpcServer(server, bound, health)
    await started.set_serving(True)
    await started.set_keyring_health(True)
    return started


def _credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    """The listener's certificate and key, and the CA its clients must present if any."""
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
        require_client_auth=tls.client_ca is not None,
    )


def server_options(limits: GrpcLimits) -> list[tuple[str, int]]:
    """The grpcio channel arguments that enforce `limits`."""
    return [
        ("grpc.max_concurrent_streams", limits.max_streams),
        ("grpc.max_connection_idle_ms", _millis(limits.idle_timeout)),
        ("grpc.max_connection_age_ms", _millis(limits.max_connection_age)),
        ("grpc.max_connection_age_grace_ms", _millis(limits.max_connection_age_grace)),
        ("grpc.server_handshake_timeout_ms", _millis(limits.handshake_timeout)),
        ("grpc.max_receive_message_length", limits.max_message_size),
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
    ]


def _millis(seconds: float) -> int:
    """A channel argument in milliseconds: grpcio reads INT_MAX as "no limit"."""
    return min(INT_MAX, max(1, round(seconds * 1000)))
