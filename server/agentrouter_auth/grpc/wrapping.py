"""Every method handler registered on the listener, served wrapped (by the budget, the guard
and the call metrics), the wrapped handler built once per method."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeAlias

import grpc

Wrap: TypeAlias = (
    "Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]]"
)
"""Builds the handler that serves calls of a method (`/pkg.Service/Method`) from its own."""


class WrappedHandlers(grpc.GenericRpcHandler):
    """The method handlers of `handlers`, each served as `wrap(method, handler)`.

    A generic handler rather than an interceptor: grpcio runs a server's interceptors as a
    chain of coroutines on every call, while a generic handler is asked synchronously, and the
    wrapped handler of each method is built once (on its first call) and reused. Only methods
    that have a handler are kept, so the cache is as small as the set of served methods."""

    def __init__(self, handlers: Sequence[grpc.GenericRpcHandler], wrap: Wrap) -> None:
        self._handlers = tuple(handlers)
        self._wrap = wrap
        self._wrapped: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The wrapped handler of the call's method (None for an unknown method: grpcio
        answers it UNIMPLEMENTED)."""
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            for generic in self._handlers:
                handler = generic.service(handler_call_details)
                if handler is not None:
                    wrapped = self._wrapped[method] = self._wrap(method, handler)
                    break
        return wrapped


class Registry:
    """Collects the generic handlers that generated `add_…_to_server` functions register, so
    that they can be served wrapped."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Ignored: the generic handler of the same service serves the same methods."""
