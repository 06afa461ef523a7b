"""One way every request of the HTTP listener is recorded: ASGI middleware around `send`.

`Recorded` runs a protocol's app with a `send` that notes the answer's HTTP status and the
status code the client reads from it, then counts the request for /metrics (protocol, RPC,
code, latency) and writes the access-log line. Each protocol says where its code is
(`Protocol`): REST in the `google.rpc.Status` body of an error, Connect in its error body,
gRPC-Web in a `grpc-status` header or trailers frame. The RPC and the path template come from
`scope["route"]`, which the protocol's app sets when it recognises the request; a request it
does not is `unknown` and `unrouted`. A raw path is never recorded: a client may put a
credential in it. Native gRPC, on its own listener, is counted by grpc.recording's CallMetrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agentrouter_auth import metrics, status
from agentrouter_auth.asgi_types import App, Message, Receive, Scope, Send
from agentrouter_auth.status import Code

log = logging.getLogger("agentrouter-auth")
UNROUTED = "unrouted"
"""The access log's route for a request no route matched (its raw path is never logged)."""
_UNKNOWN_ROUTE = ("", UNROUTED)


@dataclass(frozen=True, slots=True)
class Protocol:
    """A protocol of the HTTP listener, as metrics name it and as its answers carry a code."""

    name: str
    code_at_start: Callable[[int, Message], Code | None]
    """The code the response start (status, headers) settles, or None to read the body."""
    code_in_body: Callable[[bytes], Code | None]
    """The code a piece of the body settles, or None."""
    code_of_status: Callable[[int], Code] = status.from_http
    """The code when neither settles one: what the HTTP status alone stands for."""


class Recorded:
    """Run `app` and record each request it answers under `protocol`."""

    def __init__(
        self, app: App, protocol: Protocol, recorder: metrics.Recorder, *, access_log: bool
    ) -> None:
        self.app = app
        self.protocol = protocol
        self._recorder = recorder
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP requests only)."""
        started = time.perf_counter()
        watch = _Watch(send, self.protocol)
        await self.app(scope, receive, watch)
        code = watch.code
        if code is None:
            code = self.protocol.code_of_status(watch.status)
        rpc, route = scope.get("route") or _UNKNOWN_ROUTE
        label = status.label(code)
        self._recorder.record(self.protocol.name, rpc or "unknown", label, started)
        if watch.status == 304:
            self._recorder.not_modified()
        if self._access_log:
            _access(scope, route, self.protocol.name, watch.status, label, started=started)


class _Watch:
    """`send` that notes the answer's HTTP status and the code the client reads."""

    __slots__ = ("_protocol", "_send", "code", "status")

    def __init__(self, send: Send, protocol: Protocol) -> None:
        self._send = send
        self._protocol = protocol
        self.status = 0
        self.code: Code | None = None

    def __call__(self, message: Message) -> Awaitable[None]:
        # A plain function that returns the wrapped send's awaitable: no coroutine of its own
        # per event (this runs twice for every request).
        if self.code is None:
            if not self.status:  # the first event starts the response
                self.status = message["status"]
                self.code = self._protocol.code_at_start(self.status, message)
            else:
                self.code = self._protocol.code_in_body(message.get("body", b""))
        return self._send(message)


_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)


def method_of(scope: Scope) -> str:
    """The request's method for a log line: a standard one, or OTHER (the token is free text)."""
    method: str = scope.get("method", "")
    return method if method in _HTTP_METHODS else "OTHER"


def _access(
    scope: Scope, route: str, protocol: str, http_status: int, code: str, *, started: float
) -> None:
    """One access-log line with the route the request matched, never its raw path, query
    string or a header: a client may put a credential in any of them."""
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    method = method_of(scope)
    extra: dict[str, Any] = {
        "event": "request",
        "protocol": protocol,
        "method": method,
        "route": route,
        "status": http_status,
        "code": code,
        "duration_ms": duration_ms,
    }
    log.info("%s %s %s %s", method, route, http_status, code, extra=extra)
