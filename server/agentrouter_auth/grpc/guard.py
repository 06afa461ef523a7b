"""`RequestGuard`: every call gets `request_timeout` to deliver each request message, and a
call that ends without its message is answered (grpcio leaves such a call unanswered until the
connection closes). A connection may have only `max_pending` calls waiting for their first
request message. Calls cancelled before their request are reported to the `ResetMonitor`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from agentrouter_auth.grpc.resets import ResetMonitor

# How long a call that ended before its first request message waits to learn whether its
# client cancelled it (then it is not answered) or half-closed it (then it is).
CANCEL_SETTLE_SECONDS = 0.05


class _RequestTimedOut(BaseException):
    """Raised inside a handler by a request read that missed its deadline.

    A BaseException, like asyncio's cancellation, so that a handler's `except Exception`
    lets it through to `RequestGuard`, which answers the call."""


class RequestGuard:
    """Gives every call `timeout` seconds to deliver each request message, and answers a
    call that ends without one; reports calls cancelled before their request to `resets`.

    grpcio reads a unary call's request before the handler runs and, when the call ends
    without it, returns without answering; so each handler is served as its request-streaming
    twin, which reads the request itself (through `context.read`, with a deadline) and then
    runs the original behavior. Handlers must be coroutine functions or async generators,
    as in grpc.aio; a synchronous one is left as it is."""

    def __init__(
        self, timeout: float, resets: ResetMonitor | None = None, max_pending: int | None = None
    ) -> None:
        self.timeout = timeout
        self.resets = resets
        self.max_pending = max_pending
        self._pending: dict[str, int] = {}  # connection (peer) -> its calls awaiting a request
        self._timed_out = f"the request message was not received within {timeout:g}s"
        self._too_many = (
            f"this connection has its limit of {max_pending} calls waiting for their request"
        )

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """`handler`'s guarded request-streaming twin (`handler` itself if it is not async)."""
        kinds: tuple[tuple[Any, Callable[..., Any], Callable[[Any], Any]], ...] = (
            (handler.unary_unary, grpc.stream_unary_rpc_method_handler, self._unary_unary),
            (handler.unary_stream, grpc.stream_stream_rpc_method_handler, self._unary_stream),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler, self._stream_unary),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, self._stream_stream),
        )
        for behavior, make, guarded in kinds:
            if behavior is not None:
                if not _is_async(behavior):
                    return handler
                twin: grpc.RpcMethodHandler[Any, Any] = make(
                    guarded(behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
                return twin
        return handler

    def _unary_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def guarded(_requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: ANN401
            request = await self._request(context)
            return await behavior(request, context)

        return guarded

    def _unary_stream(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(_requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            request = await self._request(context)
            await _respond(behavior(request, context), context)

        return guarded

    def _stream_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def guarded(_requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: ANN401
            try:
                return await behavior(self._requests(context), context)
            except _RequestTimedOut:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._timed_out)

        return guarded

    def _stream_stream(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def guarded(_requests: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            try:
                await _respond(behavior(self._requests(context), context), context)
            except _RequestTimedOut:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._timed_out)

        return guarded

    async def _request(self, context: grpc.aio.ServicerContext[Any, Any]) -> Any:  # noqa: ANN401
        """The call's only request message, or an answer that ends the call."""
        try:
            request = await self._read(context, first=True)
        except _RequestTimedOut:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, self._timed_out)
        if request is grpc.aio.EOF:
            await context.abort(
                grpc.StatusCode.INTERNAL, "the call ended without a complete request message"
            )
        return request

    async def _requests(self, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        first = True
        while (request := await self._read(context, first=first)) is not grpc.aio.EOF:
            first = False
            yield request

    async def _read(self, context: grpc.aio.ServicerContext[Any, Any], *, first: bool) -> Any:  # noqa: ANN401
        """The next request message or EOF, within the deadline; the first one only while
        the connection has fewer than `max_pending` calls waiting for theirs."""
        if not first or self.max_pending is None:
            return await self._read_within(context, first=first)
        peer = context.peer() or ""
        waiting = self._pending.get(peer, 0)
        if waiting >= self.max_pending:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self._too_many)
        self._pending[peer] = waiting + 1
        try:
            return await self._read_within(context, first=first)
        finally:
            if left := self._pending[peer] - 1:
                self._pending[peer] = left
            else:
                del self._pending[peer]

    async def _read_within(
        self, context: grpc.aio.ServicerContext[Any, Any], *, first: bool
    ) -> Any:  # noqa: ANN401
        """The next request message or EOF, within the deadline."""
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    request = await context.read()
                except asyncio.CancelledError:
                    if first:
                        self._cancelled(context)
                    raise
                if first and request is grpc.aio.EOF:
                    # A call that ends without a message reads as EOF, and grpcio cancels
                    # this task a moment later if the call is over (cancelled by its client,
                    # or ended by grpcio: deadline passed, message too large): wait for that
                    # before answering.
                    await asyncio.sleep(CANCEL_SETTLE_SECONDS)
                return request
        except TimeoutError:
            raise _RequestTimedOut from None
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "the request message cannot be parsed"
            )

    def _cancelled(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Count a call cancelled while its first request was awaited as a reset, unless the
        server ended it. grpcio reports both as a cancellation; a call grpcio ended (deadline
        passed, message too large) reads EOF first and never gets here, and one that gets
        here past its deadline or without a peer (grpcio has let the call go) is not counted
        either. So is a client's cancellation that reaches grpcio after the read began."""
        if self.resets is None or context.time_remaining() == 0:
            return
        peer = context.peer()
        if peer:
            self.resets.record(peer)


async def _respond(responses: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:  # noqa: ANN401
    """Write what a response-streaming behavior produces: an async generator's items, or
    nothing for a coroutine that writes through `context` itself."""
    if inspect.isasyncgen(responses):
        async for response in responses:
            await context.write(response)
    else:
        await responses


def _is_async(behavior: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)
