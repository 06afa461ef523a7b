"""The HTTP listener's ASGI app: REST (transcoded), Connect, gRPC-Web and health endpoints.

A plain ASGI app: it runs under granian (what `agentrouter-auth serve` uses) and under any
other ASGI server. Its lifespan starts the process's gRPC listener and key-ring upkeep.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from typing import Any

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth import metrics
from agentrouter_auth.connect import CONNECT_PATH_PREFIX, connect_app
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
        self.registry = metrics.registry_for(runtime.ring)
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
                    _access(scope, "rest", outcome.http_status, code, started)
        except Exception:
            # Every expected failure is answered where it happens; this is the last resort.
            log.exception("unhandled error answering %s %s", scope.get("method"), path)
            with contextlib.suppress(Exception):  # fails if the response had started
                await send_status(send, TranscodeError(13, "internal error"))

    async def _rpc(
        self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend, started: float
    ) -> None:
        """Connect or gRPC-Web (native gRPC belongs on the gRPC port)."""
        content_type = _header(scope, b"content-type")
        method = scope["path"][len(CONNECT_PATH_PREFIX) :]
        if method not in _AUTH_METHODS:
            method = "unknown"
        if content_type.startswith(b"application/grpc") and not content_type.startswith(
            b"application/grpc-web"
        ):
            await _grpc_not_here(send, self.runtime)
            return
        protocol = "grpcweb" if content_type.startswith(b"application/grpc-web") else "connect"
        watched = _StatusWatch(send)
        await self.connect(scope, receive, watched)
        self.recorder.record(protocol, method, watched.code, started)
        if self.access_log:
            _access(scope, protocol, watched.http_status, watched.code, started)

    async def _ready(self, send: ASGISend) -> None:
        runtime = self.runtime
        status = runtime.ring.status()
        body: dict[str, Any] = {"status": "ready", "keys": status.version, "keyring": "ok"}
        code = 200
        if runtime.draining:
            body["status"], code = "draining", 503
        if status.error:
            body["keyring"] = status.error  # still ready: the last good set is served
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
# Connect's HTTP statuses for errors (connectrpc.com/docs/protocol), read back into codes.
_CONNECT_HTTP_CODES = {
    200: "OK", 400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
    404: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 412: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED", 415: "UNIMPLEMENTED", 429: "UNAVAILABLE", 431: "RESOURCE_EXHAUSTED",
    499: "CANCELLED", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip
_GRPC_STATUS = re.compile(rb"grpc-status:\s*(\d+)", re.I)


class _StatusWatch:
    """Passes ASGI events through and notes the response's HTTP status and gRPC code."""

    def __init__(self, send: ASGISend) -> None:
        self._send = send
        self.http_status = 0
        self.code = "UNKNOWN"

    async def __call__(self, message: Any) -> None:  # noqa: ANN401 - an ASGI event
        kind = message["type"]
        if kind == "http.response.start":
            self.http_status = message["status"]
            self.code = _CONNECT_HTTP_CODES.get(self.http_status, "UNKNOWN")
            for name, value in message.get("headers", ()):
                if name == b"grpc-status":  # gRPC-Web trailers-only response
                    self.code = metrics.code_name(int(value))
        elif kind == "http.response.body":
            match = _GRPC_STATUS.search(message.get("body", b"")[-256:])
            if match:  # gRPC-Web trailers, carried in the body
                self.code = metrics.code_name(int(match[1]))
        await self._send(message)


def _header(scope: ASGIScope, wanted: bytes) -> bytes:
    for name, value in scope.get("headers") or ():
        if name == wanted:
            return bytes(value)
    return b""


def _access(scope: ASGIScope, protocol: str, status: int, code: str, started: float) -> None:
    """One access-log line. Never the query string or a header: they may carry credentials."""
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    log.info(
        "%s %s %s %s",
        scope["method"],
        scope["path"],
        status,
        code,
        extra={
            "event": "request",
            "protocol": protocol,
            "method": scope["method"],
            "path": scope["path"],
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
