"""`CallBudget`: the calls one worker runs at once, in pools that cannot starve each other.

grpcio's own limit (`maximum_concurrent_rpcs`) refuses a call before knowing its method, so a
client holding health Watch streams (which live as long as their connection) could starve the
key set's readers, or they the probes' health Checks. Here each kind of call has its own pool,
of which no connection and no client address may take the whole.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agentrouter_auth.config import GrpcLimits
from agentrouter_auth.grpc.health import HEALTH_CHECK, HEALTH_WATCH, REFLECTION_PREFIX


def peer_address(peer: str) -> str:
    """The client address of grpcio's peer string (`ipv4:127.0.0.2:5555` ->
    `ipv4:127.0.0.2`, `ipv6:[::1]:5555` -> `ipv6:[::1]`): the peer without its port."""
    address, colon, port = peer.rpartition(":")
    return address if colon and port.isdigit() else peer


class _Pool:
    """The slots of one kind of call: `size` per worker, at most `per_address` of them held by
    one client address, and, if given, `per_connection` by one connection (told apart by
    grpcio's peer string, one per connection: address and port)."""

    def __init__(
        self, what: str, size: int, per_address: int, per_connection: int | None = None
    ) -> None:
        self.size = size
        self.per_address = per_address
        self.per_connection = per_connection
        self.used = 0
        self._by_peer: dict[str, int] = {}
        self._by_address: dict[str, int] = {}
        self._full = f"this worker is serving its limit of {size} {what}"
        self._address_full = f"this client address holds its limit of {per_address} {what}"
        self._connection_full = f"this connection holds its limit of {per_connection} {what}"

    def take(self, peer: str) -> str | None:
        """Take a slot for a call from `peer`; None if taken, else why not."""
        if self.used >= self.size:
            return self._full
        address = peer_address(peer)
        if self._by_address.get(address, 0) >= self.per_address:
            return self._address_full
        if self.per_connection is not None and self._by_peer.get(peer, 0) >= self.per_connection:
            return self._connection_full
        _count(self._by_address, address, 1)
        _count(self._by_peer, peer, 1)
        self.used += 1
        return None

    def give_back(self, peer: str) -> None:
        self.used -= 1
        _count(self._by_address, peer_address(peer), -1)
        _count(self._by_peer, peer, -1)


def _count(held: dict[str, int], key: str, change: int) -> None:
    """Add `change` to `held[key]`, keeping no entry at zero (the maps hold only holders)."""
    now = held.get(key, 0) + change
    if now:
        held[key] = now
    else:
        del held[key]


class CallBudget:
    """Bounds the calls one worker runs at once, in four pools that cannot starve each other:
    health Watch streams (`max_watches`, and `max_connection_watches` per connection: a Watch
    lives as long as its connection), reflection streams (`max_reflections`, and
    `max_connection_reflections` per connection), health Check calls (what load balancers and
    Kubernetes probe; a pool of `max_calls` of their own, `max_connection_checks` per
    connection), and every other call (`max_calls`). One client address holds at most
    `max_address_share` percent of each pool (at least one slot), so that a client on one
    address cannot refuse a probe from another, however many connections it opens. A call
    above a limit is answered RESOURCE_EXHAUSTED at once, before its request is read, so that
    it holds nothing.

    Wraps request-streaming handlers (the twins `RequestGuard` serves), so that the budget is
    checked before grpcio reads the request; other handlers are left as they are."""

    def __init__(self, limits: GrpcLimits) -> None:
        def share(size: int) -> int:
            return max(1, size * limits.max_address_share // 100)

        def pool(what: str, size: int, per_connection: int | None = None) -> _Pool:
            return _Pool(what, size, share(size), per_connection)

        self.calls = pool("calls", limits.max_calls)
        self.checks = pool("health Check calls", limits.max_calls, limits.max_connection_checks)
        self.watches = pool(
            "health Watch streams", limits.max_watches, limits.max_connection_watches
        )
        self.reflections = pool(
            "reflection streams", limits.max_reflections, limits.max_connection_reflections
        )

    def pool(self, method: str) -> _Pool:
        """The pool whose slots calls of `method` take."""
        if method == HEALTH_WATCH:
            return self.watches
        if method == HEALTH_CHECK:
            return self.checks
        if method.startswith(REFLECTION_PREFIX):
            return self.reflections
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
            peer = context.peer() or ""
            refused = pool.take(peer)
            if refused is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
            try:
                return await behavior(requests, context)
            finally:
                pool.give_back(peer)

        return limited
