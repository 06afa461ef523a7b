"""The HTTP listener's ASGI app: REST (transcoded), Connect, gRPC-Web and health endpoints.

A plain ASGI app: it runs under granian (what `agentrouter-auth serve` uses) and under any
other ASGI server. Its lifespan starts the process's gRPC listener and key-ring upkeep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth import metrics
from agentrouter_auth.connect import CONNECT_PATH_PREFIX, connect_app
from agentrouter_auth.request_limits import RequestBodyTimeoutError
from agentrouter_auth.runtime import Runtime
from agentrouter_auth.transcode import (
    ASGIReceive,
    ASGIScope,
    ASGISend,
    TranscodeError,
    Transcoder,
    routes_for,
    send_status,
)

log = logging.getLogger("agentrouter-auth")


class HttpApp:
    """Routes one HTTP request to Connect, the transcoder or a health endpoint."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        service = runtime.service
        self.connect = connect_app(service)
        auth_service = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
        self.transcoder = Transcoder(routes_for(auth_service, service.rest_handlers()))
        self.recorder = runtime.recorder
        self.registry = metrics.registry_for(
            runtime.ring, reload_interval=runtime.config.reload_interval
        )
        self.access_log = runtime.config.access_log

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket connections are refused by returning without accepting

    async def _http(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        try:
            if path.startswith(CONNECT_PATH_PREFIX):
                await self._rpc(scope, receive, send, started)
            elif path == "/healthz":
                await _json(send, 200, {"status": "ok", "pid": os.getpid()})
            elif path == "/readyz":
                await self._ready(send)
            elif path == "/metrics":
                self.recorder.flush()
                await _send(send, 200, metrics.CONTENT_TYPE, metrics.exposition(self.registry))
            else:
                outcome = await self.transcoder.handle(scope, receive, send)
                if outcome.http_status == 304:
                    self.recorder.not_modified()
                code = metrics.code_name(outcome.code)
                self.recorder.record("rest", outcome.rpc or "unknown", code, started)
                if self.access_log:
                    route = outcome.template or UNROUTED
                    _access(scope, route, "rest", outcome.http_status, code, started=started)
        except RequestBodyTimeoutError:
            raise  # answered 408 by BodyDeadline around this app
        except Exception:
            # Every expected failure is answered where it happens; this is the last resort.
            # Not the raw path: a client may put a credential in it.
            log.exception("unhandled error answering a %s request", _method_of(scope))
            with contextlib.suppress(Exception):  # fails if the response had started
                await send_status(send, TranscodeError(13, "internal error"))

    async def _rpc(
        self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend, started: float
    ) -> None:
        """Connect or gRPC-Web (native gRPC belongs on the gRPC port)."""
        content_type = _header(scope, b"content-type")
        method = scope["path"][len(CONNECT_PATH_PREFIX) :]
        route = scope["path"]
        if method not in _AUTH_METHODS:
            method, route = "unknown", UNROUTED
        if content_type.startswith(b"application/grpc") and not content_type.startswith(
            b"application/grpc-web"
        ):
            await _grpc_not_here(send, self.runtime)
            return
        grpc_web = content_type.startswith(b"application/grpc-web")
        protocol = "grpcweb" if grpc_web else "connect"
        watched = _StatusWatch(send, grpc_web=grpc_web)
        await self.connect(scope, receive, watched)
        self.recorder.record(protocol, method, watched.code, started)
        if self.access_log:
            _access(scope, route, protocol, watched.http_status, watched.code, started=started)

    async def _ready(self, send: ASGISend) -> None:
        runtime = self.runtime
        status = runtime.ring.status()
        body: dict[str, Any] = {"status": "ready", "keys": status.version, "keyring": "ok"}
        code = 200
        if runtime.draining:
            body["status"], code = "draining", 503
        if status.error:
            # Still ready: the last good set is served. The reason names files, so it is in
            # the log (key_set_reload_failed), never in an answer to anyone who asks.
            body["keyring"] = "error"
            body["reason"] = "a change to the key store was refused; see the server log"
        await _json(send, code, body)

    async def _lifespan(self, receive: ASGIReceive, send: ASGISend) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                    metrics.worker_started()
                except Exception as err:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                metrics.worker_stopped()
                await send({"type": "lifespan.shutdown.complete"})
                return


_AUTH_METHODS = frozenset(
    m.name for m in auth_pb2.DESCRIPTOR.services_by_name["AuthService"].methods
)
UNROUTED = "unrouted"
"""The access log's route for a request no route matched (its raw path is never logged)."""
# Connect's HTTP statuses for errors (connectrpc.com/docs/protocol), read back into codes. Only
# for answers without a Connect error body (connectrpc's bare 404, 405 and 415): a body names
# its code, which is the only way to tell apart codes that share a status (400, 409, 500).
_CONNECT_HTTP_CODES = {
    200: "OK", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "UNIMPLEMENTED", 405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED",
    412: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 415: "UNIMPLEMENTED",
    429: "RESOURCE_EXHAUSTED", 431: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 501: "UNIMPLEMENTED",
    502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_GRPC_WEB_TRAILERS_FLAG = 0x80


class _StatusWatch:
    """Passes ASGI events through and notes the response's HTTP status and gRPC code.

    The code comes from what the client reads: a gRPC-Web `grpc-status` (a header of a
    trailers-only answer, or the trailers frame at the end of the body), the `code` of a
    Connect error body, or else the HTTP status.
    """

    __slots__ = ("_grpc_web", "_send", "code", "http_status")

    def __init__(self, send: ASGISend, *, grpc_web: bool) -> None:
        self._send = send
        self._grpc_web = grpc_web
        self.http_status = 0
        self.code = "UNKNOWN"

    async def __call__(self, message: Any) -> None:  # noqa: ANN401 - an ASGI event
        kind = message["type"]
        if kind == "http.response.start":
            self.http_status = message["status"]
            self.code = _CONNECT_HTTP_CODES.get(self.http_status, "UNKNOWN")
            for name, value in message.get("headers", ()):
                if name == b"grpc-status":  # gRPC-Web trailers-only response
                    self.code = _grpc_code(value)
        elif kind == "http.response.body":
            body = message.get("body", b"")
            if self._grpc_web:
                # connectrpc writes the trailers frame (flag 0x80) as the body's last event.
                if body[:1] and body[0] & _GRPC_WEB_TRAILERS_FLAG:
                    self.code = _trailers_code(body[5:]) or self.code
            elif self.http_status != 200 and body:
                self.code = _connect_error_code(body) or self.code
        await self._send(message)


def _trailers_code(block: bytes) -> str | None:
    """The `grpc-status` of a gRPC-Web trailers block (HTTP/1 header lines), if any."""
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"grpc-status":
            return _grpc_code(value.strip())
    return None


def _grpc_code(value: bytes) -> str:
    try:
        return metrics.code_name(int(value))
    except ValueError:
        return "UNKNOWN"


def _connect_error_code(body: bytes) -> str | None:
    """The code of a Connect error body (`{"code": "resource_exhausted", ...}`), as gRPC names
    it, or None when the body is not one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    name = document.get("code") if isinstance(document, dict) else None
    if not isinstance(name, str):
        return None
    return metrics.connect_code_name(name)


def _header(scope: ASGIScope, wanted: bytes) -> bytes:
    for name, value in scope.get("headers") or ():
        if name == wanted:
            return bytes(value)
    return b""


_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"}
)


def _method_of(scope: ASGIScope) -> str:
    """The request's method for a log line: a standard one, or OTHER (the token is free text)."""
    method: str = scope.get("method", "")
    return method if method in _HTTP_METHODS else "OTHER"


def _access(
    scope: ASGIScope, route: str, protocol: str, status: int, code: str, *, started: float
) -> None:
    """One access-log line with the route the request matched, never its raw path, query
    string or a header: a client may put a credential in any of them."""
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    method = _method_of(scope)
    log.info(
        "%s %s %s %s",
        method,
        route,
        status,
        code,
        extra={
            "event": "request",
            "protocol": protocol,
            "method": method,
            "route": route,
            "status": status,
            "code": code,
            "duration_ms": duration_ms,
        },
    )


async def _grpc_not_here(send: ASGISend, runtime: Runtime) -> None:
    """gRPC needs HTTP trailers, which ASGI servers do not carry: point to the gRPC port.

    A trailers-only response (the status in the headers) is valid gRPC, so the client sees
    UNIMPLEMENTED with the reason rather than a broken stream.
    """
    message = f"native gRPC is served on the gRPC port ({runtime.config.grpc_addr.port})"
    headers = [  # printable ASCII without '%' needs no percent-encoding in grpc-message
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"12"),
        (b"grpc-message", message.encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _json(send: ASGISend, status: int, document: dict[str, Any]) -> None:
    await _send(send, status, "application/json", json.dumps(document).encode())


async def _send(send: ASGISend, status: int, content_type: str, body: bytes) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
