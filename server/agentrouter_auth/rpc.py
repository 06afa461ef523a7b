"""The RPCs of a service descriptor, each bound to the servicer coroutine of the same name.

Every transport is built from these bindings rather than from a hand-written list, so adding an
RPC is the proto, `make generate` and one servicer method: `rpc GetJWKS` is served by
`async def get_jwks(self, request)`, named as connectrpc's generated code names it. A servicer
that lacks the method of one of its service's RPCs is refused when the transports are built,
never answered UNIMPLEMENTED by one transport alone.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.rendered import Answer

Call = Callable[[Any], Awaitable[Answer]]


class Servicer(Protocol):
    """A transport-neutral servicer: one coroutine per RPC of `SERVICE`."""

    SERVICE: descriptor.ServiceDescriptor


class ServicerError(AgentRouterAuthError, TypeError):
    """The servicer does not serve its service as the descriptor says."""


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC and the servicer coroutine that answers it."""

    descriptor: descriptor.MethodDescriptor
    call: Call
    request_class: type[Message]

    @property
    def name(self) -> str:
        """The RPC's name in the contract (`GetJWKS`)."""
        return self.descriptor.name

    @property
    def path(self) -> str:
        """The RPC's path in gRPC, gRPC-Web and Connect (`/pkg.Service/Method`)."""
        return f"/{self.descriptor.containing_service.full_name}/{self.descriptor.name}"


def bind(servicer: Servicer) -> tuple[Method, ...]:
    """The servicer's coroutine for every RPC of its service, in the descriptor's order."""
    methods = []
    for rpc in servicer.SERVICE.methods:
        name = python_name(rpc.name)
        if rpc.client_streaming or rpc.server_streaming:
            raise ServicerError(f"{rpc.full_name}: only unary RPCs are served")
        call = getattr(servicer, name, None)
        if call is None:
            kind = type(servicer).__name__
            raise ServicerError(f"{kind} has no method {name}() for rpc {rpc.full_name}")
        request_class = message_factory.GetMessageClass(rpc.input_type)
        methods.append(Method(rpc, call, request_class))
    return tuple(methods)


_WORD = re.compile("([^_])([A-Z][a-z]+)")
_CAMEL = re.compile("([a-z])([A-Z])")


def python_name(rpc: str) -> str:
    """The Python name of an RPC, as protoc-gen-connectrpc spells it: GetJWKS → get_jwks."""
    return _CAMEL.sub(r"\1_\2", _WORD.sub(r"\1_\2", rpc)).lower()
