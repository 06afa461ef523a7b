"""`CallBudget`: the calls one worker runs at once, in pools that cannot starve each other.

grpcio's own limit (`maximum_concurrent_rpcs`) refuses a call before knowing its method, so a
client holding health Watch streams (which live as long as their connection) could starve the
key set's readers, or they the probes' health Checks. Here each kind of call has its own pool.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agentrouter_auth.config import GrpcLimits
from agentrouter_auth.grpc.health import HEALTH_CHECK, HEALTH_WATCH


class _Pool:
    """The slots of one kind of call: `size` per worker and, if given, `per_connection` per
    connection (told apart by grpcio's peer string, one per connection)."""

    def __init__(self, what: str, size: int, per_connection: int | None = None) -> None:
        self.size = size
        self.per_connection = per_connection
        self.used = 0
        self._by_peer: dict[str, int] = {}
        self._full = f"this worker is serving its limit of {size} {what}"
        self._connection_full = f"this connection holds its limit of {per_connection} {what}"

    def take(self, peer: str) -> str | None:
        """Take a slot for a call from `peer`; None if taken, else why not."""
        if self.used >= self.size:
            return self._full
        if self.per_connection is not None:
            held = self._by_peer.get(peer, 0)
            if held >= self.per_connection:
                return self._connection_full
            self._by_peer[peer] = held + 1
        self.used += 1
        return None

    def give_back(self, peer: str) -> None:
        self.used -= 1
        if self.per_connection is not None:
            held = self._by_peer.pop(peer) - 1
            if held:
                self._by_peer[peer] = held


class CallBudget:
    """Bounds the calls one worker runs at once, in three pools that cannot starve each other:
    health Watch streams (`max_watches`, and `max_connection_watches` per connection: a Watch
    lives as long as its connection), health Check calls (what load balancers and Kubernetes
    probe; a pool of `max_calls` of their own), and every other call (`max_calls`). A call
    above its pool's limit is answered RESOURCE_EXHAUSTED at once, before its request is read,
    so that it holds nothing.

    Wraps request-streaming handlers (the twins `RequestGuard` serves), so that the budget is
    checked before grpcio reads the request; other handlers are left as they are."""

    def __init__(self, limits: GrpcLimits) -> None:
        self.calls = _Pool("calls", limits.max_calls)
        self.checks = _Pool("health Check calls", limits.max_calls)
        self.watches = _Pool(
            "health Watch streams", limits.max_watches, limits.max_connection_watches
        )

    def pool(self, method: str) -> _Pool:
        """The pool whose slots calls of `method` take."""
        if method == HEALTH_WATCH:
            return self.watches
        if method == HEALTH_CHECK:
            return self.checks
        return self.calls

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler`, its calls counted in the pool of `method`."""
        kinds: tuple[tuple[Any, Callable[..., Any]], ...] = (
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler),
        )
        for behavior, make in kinds:
            if behavior is not None and inspect.iscoroutinefunction(behavior):
                limited: grpc.RpcMethodHandler[Any, Any] = make(
                    self._limited(self.pool(method), behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                return limited
        return handler

    @staticmethod
    def _limited(pool: _Pool, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def limited(requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: ANN401
            peer = context.peer() if pool.per_connection is not None else ""
            refused = pool.take(peer)
            if refused is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
            try:
                return await behavior(requests, context)
            finally:
                pool.give_back(peer)

        return limited
