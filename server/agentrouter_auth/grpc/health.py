"""grpc.health.v1 and reflection on the gRPC listener.

Health has three entries: "" (the whole server) and the service's own name, SERVING while the
process serves a key set, and the service's keyring entry (`keyring_health_name`), which turns
NOT_SERVING while the key ring fails its job (the last reload failed, a lifecycle step cannot
be written, a key is dated in the future). The server keeps serving the last good set
meanwhile, so "" and the service stay SERVING.
"""

from __future__ import annotations

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.grpc.wrapping import Registry

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_WATCH = f"/{HEALTH_SERVICE}/Watch"
HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
REFLECTION_PREFIX = "/grpc.reflection."
"""The start of every reflection method's path (v1alpha, which is served, and v1)."""


def keyring_health_name(service_name: str) -> str:
    """The health entry of the key ring behind the service `service_name`."""
    return f"{service_name}/keyring"


KEYRING_HEALTH_NAME = keyring_health_name(
    auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
)
"""The keyring entry of the contract's AuthService (what probes and tests ask for)."""


class Health:
    """The health entries of one served service."""

    def __init__(self, servicer: health.aio.HealthServicer, service_name: str) -> None:
        self.servicer = servicer
        self.service_name = service_name
        self.keyring_name = keyring_health_name(service_name)

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and for its service."""
        for name in ("", self.service_name):
            await self.servicer.set(name, _status(serving))

    async def set_keyring_health(self, healthy: bool) -> None:
        """Report whether the key ring does its job (`RingStatus.serving`): the last reload
        succeeded, lifecycle steps can be written, no key is dated in the future."""
        await self.servicer.set(self.keyring_name, _status(healthy))


def add_health_and_reflection(registry: Registry, service_name: str) -> Health:
    """Register health and reflection (of the service, health and reflection itself)."""
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, registry)  # type: ignore[arg-type]
    names = (service_name, HEALTH_SERVICE, reflection.SERVICE_NAME)
    reflecting = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflecting, registry)  # type: ignore[no-untyped-call]
    return Health(servicer, service_name)


def _status(serving: bool) -> int:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
