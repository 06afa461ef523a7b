"""The native gRPC transport (grpcio aio): the servicer's RPCs, grpc.health.v1 and reflection.

The servicer's handlers are built from its service descriptor (`rpc.bind`): each calls the
coroutine named after the RPC, turns an `RpcError` into the call's status, and its response
serializer writes a `Rendered` answer's stored protobuf bytes, so no call serializes.

The listener faces clients that may be hostile, so everything a client can hold has a bound
(`GrpcLimits`): HTTP/2 streams per connection, calls per process, the time a call gets to
deliver its request, connections, their idle time and age. grpcio enforces most of them; three
it lacks are added here. `CallBudget` bounds the calls running at once, with health Watch
streams (which live as long as their connection) and health Check (what probes call) each
counted apart, so that no kind of call can starve another: grpcio's own limit
(`maximum_concurrent_rpcs`) refuses a call before knowing its method. `RequestGuard` gives
every call `request_timeout` to deliver each request message and answers a call that ends
without its message (grpcio leaves such a call unanswered until the connection closes).
`ResetMonitor` closes a connection whose client cancels call after call before sending a
request (HTTP/2 rapid reset): grpcio's HTTP/2 transport only refuses streams above
MAX_CONCURRENT_STREAMS and never sends GOAWAY for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import os
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from agentrouter_auth import status
from agentrouter_auth.config import INT_MAX, GrpcLimits, TLSConfig
from agentrouter_auth.rendered import Answer, Rendered
from agentrouter_auth.rpc import Call, Servicer, bind
from agentrouter_auth.service import AuthService
from agentrouter_auth.status import RpcError

if TYPE_CHECKING:  # imported by the workers only: prometheus-client must first see
    # PROMETHEUS_MULTIPROC_DIR, which `serve` sets after its own imports.
    from agentrouter_auth.metrics import Recorder

Req = TypeVar("Req")
Resp = TypeVar("Resp")
PROTOCOL = "grpc"  # the `protocol` label of native gRPC calls in metrics
# Health entry that turns NOT_SERVING while the last key-store reload failed. The server keeps
# serving the last good set meanwhile, so "" and AuthService stay SERVING.
KEYRING_HEALTH_NAME = f"{AuthService.SERVICE.full_name}/keyring"
# The window over which `GrpcLimits.max_resets` is counted.
RESET_WINDOW_SECONDS = 10.0
# How long a call that ended before its first request message waits to learn whether its
# client cancelled it (then it is not answered) or half-closed it (then it is).
CANCEL_SETTLE_SECONDS = 0.05
_MAX_TRACKED_PEERS = 1024  # above it, ResetMonitor forgets counts older than its window
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
HEALTH_WATCH = f"/{HEALTH_SERVICE}/Watch"
HEALTH_CHECK = f"/{HEALTH_SERVICE}/Check"
log = logging.getLogger("agentrouter-auth")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BindError(OSError):
    """The gRPC listener could not bind its address."""


class GrpcServer:
    """A started grpcio server and the port it bound."""

    def __init__(
        self,
        server: grpc.aio.Server,
        port: int,
        health: health.aio.HealthServicer,
        service_name: str,
    ) -> None:
        self.server = server
        self.port = port
        self.health = health
        self.service_name = service_name

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING or NOT_SERVING for the whole server and for its service."""
        for name in ("", self.service_name):
            await self.health.set(name, _status(serving))

    async def set_keyring_health(self, healthy: bool) -> None:
        """Report whether the key ring does its job (`RingStatus.serving`): the last reload
        succeeded, lifecycle steps can be written, no key is dated in the future."""
        await self.health.set(KEYRING_HEALTH_NAME, _status(healthy))

    async def stop(self, grace: float) -> None:
        """Turn health NOT_SERVING, stop accepting, and let in-flight calls finish."""
        await self.set_serving(False)
        await self.server.stop(grace)


def method_handlers(servicer: Servicer) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """The servicer's handlers by RPC name, as the generated `add_…Servicer_to_server` builds
    them, except that each behavior calls the servicer's coroutine with the request alone and
    the response serializer writes a rendered answer's stored bytes."""
    return {
        method.name: grpc.unary_unary_rpc_method_handler(
            _behavior(method.call),
            request_deserializer=method.request_class.FromString,
            response_serializer=_serialize,
        )
        for method in bind(servicer)
    }


def _behavior(call: Call) -> Callable[..., Awaitable[Answer]]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Answer:  # noqa: ANN401
        try:
            return await call(request)
        except RpcError as err:
            await context.abort(err.code, err.message)

    return behavior


def _serialize(answer: Answer) -> bytes:
    if isinstance(answer, Rendered):
        return answer.proto
    return answer.SerializeToString()


class WrappedHandlers(grpc.GenericRpcHandler):
    """The method handlers of `handlers`, each served as `wrap(method, handler)`.

    A generic handler rather than an interceptor: grpcio runs a server's interceptors as a
    chain of coroutines on every call, while a generic handler is asked synchronously, and the
    wrapped handler of each method is built once (on its first call) and reused. Only methods
    that have a handler are kept, so the cache is as small as the set of served methods."""

    def __init__(
        self,
        handlers: Sequence[grpc.GenericRpcHandler],
        wrap: Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]],
    ) -> None:
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


class _Registry:
    """Collects the generic handlers that generated `add_…_to_server` functions register, so
    that they can be served wrapped."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: object) -> None:
        """Ignored: the generic handler of the same service serves the same methods."""


class CallMetrics:
    """Counts the answered calls of one service (`service_name`) and their latency."""

    def __init__(self, recorder: Recorder, service_name: str) -> None:
        self._recorder = recorder
        self._service_name = service_name

    def wrap(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        """Count the service's request-unary handlers; leave health and reflection alone."""
        service, _, name = method.lstrip("/").partition("/")
        if service != self._service_name:
            return handler
        kinds: tuple[tuple[Any, Callable[..., grpc.RpcMethodHandler[Any, Any]]], ...] = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler),  # as RequestGuard serves
        )
        for behavior, make in kinds:
            if behavior is not None:
                return make(
                    self._counted(name, behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler

    def _counted(self, name: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        record = self._recorder.record

        async def counted(request: Any, context: Any) -> Any:  # noqa: ANN401 - any RPC
            started = time.perf_counter()
            try:
                response = await behavior(request, context)
            except asyncio.CancelledError:
                raise  # the client left: nothing was answered
            except BaseException:
                record(PROTOCOL, name, _code_name(context, status.Code.UNKNOWN), started)
                raise
            record(PROTOCOL, name, _code_name(context, status.Code.OK), started)
            return response

        return counted


def _code_name(context: Any, default: status.Code) -> str:  # noqa: ANN401 - a ServicerContext
    """The label of the code the handler set on `context` (by `abort` or `set_code`), or of
    `default`."""
    code = context.code()
    if code is None or code == status.Code.OK:
        code = default
    return status.label(code)


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


class _RequestTimedOut(BaseException):
    """Raised inside a handler by a request read that missed its deadline.

    A BaseException, like asyncio's cancellation, so that a handler's `except Exception`
    lets it through to `RequestGuard`, which answers the call."""


class ResetMonitor:
    """Counts, per connection, the calls cancelled by the client before their request
    message arrived; closes a connection that cancels more than `limit` in a window.

    grpcio offers no way to close one connection, so the connection's socket is found among
    this process's file descriptors by its two addresses and shut down: grpcio then sees the
    connection end and releases it and its calls."""

    def __init__(self, limit: int, window: float = RESET_WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self.port = 0  # the listener's port, known once bound
        self._counts: dict[str, tuple[float, int]] = {}

    def record(self, peer: str) -> None:
        """Count one early cancellation by `peer` (grpcio's peer string of the connection)."""
        now = time.monotonic()
        started, count = self._counts.get(peer, (now, 0))
        if now - started > self.window:
            started, count = now, 0
        count += 1
        if count <= self.limit:
            self._counts[peer] = (started, count)
            if len(self._counts) > _MAX_TRACKED_PEERS:
                self._forget_before(now - self.window)
            return
        self._counts.pop(peer, None)
        closed = close_connection(peer, self.port)
        log.warning(
            "closed gRPC connection %s: %d calls cancelled before their request within %gs",
            peer,
            count,
            self.window,
            extra={"event": "grpc_connection_reset_flood", "peer": peer, "closed": closed},
        )

    def _forget_before(self, horizon: float) -> None:
        for peer in [p for p, (started, _) in self._counts.items() if started < horizon]:
            del self._counts[peer]


def close_connection(peer: str, local_port: int) -> bool:
    """Shut down this process's TCP socket from `local_port` to `peer` (a grpcio peer string
    such as `ipv4:127.0.0.1:5000` or `ipv6:%5B::1%5D:5000`); False when none is found."""
    address = _peer_address(peer)
    if address is None or not local_port:
        return False
    for fd in _open_descriptors():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            duplicate = os.dup(fd)  # the dup keeps the socket alive while it is examined
        except OSError:
            continue
        with contextlib.suppress(OSError), socket.socket(fileno=duplicate) as sock:
            if sock.family not in _INET or sock.getsockname()[1] != local_port:
                continue
            host, port = sock.getpeername()[:2]
            if (_ip(host), port) == address:
                sock.shutdown(socket.SHUT_RDWR)
                return True
    return False


_INET = (socket.AF_INET, socket.AF_INET6)


def _peer_address(peer: str) -> tuple[IPAddress, int] | None:
    kind, _, rest = unquote(peer).partition(":")
    host, _, port = rest.rpartition(":")
    if kind not in ("ipv4", "ipv6") or not port.isdigit():
        return None
    try:
        return _ip(host.strip("[]")), int(port)
    except ValueError:
        return None


def _ip(host: str) -> IPAddress:
    """The address `host` names; an IPv4-mapped IPv6 address (as a dual-stack listener sees
    an IPv4 peer) as its IPv4 address."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _open_descriptors() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # not Linux: try every possible descriptor
        return list(range(os.sysconf("SC_OPEN_MAX")))


class RequestGuard:
    """Gives every call `timeout` seconds to deliver each request message, and answers a
    call that ends without one; reports calls cancelled before their request to `resets`.

    grpcio reads a unary call's request before the handler runs and, when the call ends
    without it, returns without answering; so each handler is served as its request-streaming
    twin, which reads the request itself (through `context.read`, with a deadline) and then
    runs the original behavior. Handlers must be coroutine functions or async generators,
    as in grpc.aio; a synchronous one is left as it is."""

    def __init__(self, timeout: float, resets: ResetMonitor | None = None) -> None:
        self.timeout = timeout
        self.resets = resets
        self._timed_out = f"the request message was not received within {timeout:g}s"

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
    registry = _Registry()
    registry.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service_name, method_handlers(service)),)
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registry)  # type: ignore[arg-type]
    names = (
        service_name,
        HEALTH_SERVICE,
        reflection.SERVICE_NAME,
    )
    reflecting = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflecting, registry)  # type: ignore[no-untyped-call]
    # Every method guarded and budgeted (the budget first, so that a refused call reads
    # nothing); the service's calls counted around both, so that metrics count the answers
    # they give.
    guard = RequestGuard(limits.request_timeout, resets)
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
            credentials = grpc.ssl_server_credentials(
                [(tls.key.read_bytes(), tls.cert.read_bytes())],
                root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
                require_client_auth=tls.client_ca is not None,
            )
            bound = server.add_secure_port(target, credentials)
    except RuntimeError as err:  # grpcio raises RuntimeError when it cannot bind
        raise BindError(f"cannot listen for gRPC on {target}: {err}") from err
    resets.port = bound
    await server.start()
    started = GrpcServer(server, bound, health_servicer, service_name)
    await started.set_serving(True)
    await started.set_keyring_health(True)
    return started


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


def _status(serving: bool) -> int:
    return (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
