"""The HTTP listener's ASGI app: REST (transcoded), Connect, gRPC-Web and health endpoints.

A plain ASGI app: it runs under granian (what `agentrouter-auth serve` uses) and under any
other ASGI server. Its lifespan starts the process's gRPC listener and key-ring upkeep.
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from agentrouter.auth.v1 import auth_pb2
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
_JSON = (b"content-type", b"application/json")


class HttpApp:
    """Routes one HTTP request to Connect, the transcoder or a health endpoint."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        service = runtime.service
        self.connect = connect_app(service)
        auth_service = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
        self.transcoder = Transcoder(routes_for(auth_service, service.rest_handlers()))

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket connections are refused by returning without accepting

    async def _http(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        path: str = scope["path"]
        try:
            if path.startswith(CONNECT_PATH_PREFIX):
                if _is_native_grpc(scope):
                    await _grpc_not_here(send, self.runtime)
                else:
                    await self.connect(scope, receive, send)
            elif path == "/healthz":
                await _json(send, 200, {"status": "ok"})
            elif path == "/readyz":
                await self._ready(send)
            else:
                await self.transcoder(scope, receive, send)
        except Exception:
            # Every expected failure is answered where it happens; this is the last resort.
            log.exception("unhandled error answering %s %s", scope.get("method"), path)
            with contextlib.suppress(Exception):  # fails if the response had started
                await send_status(send, TranscodeError(13, "internal error"))

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
                except Exception as err:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _is_native_grpc(scope: ASGIScope) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            return value.startswith(b"application/grpc") and not value.startswith(
                b"application/grpc-web"
            )
    return False


async def _grpc_not_here(send: ASGISend, runtime: Runtime) -> None:
    """gRPC needs HTTP trailers, which ASGI servers do not carry: point to the gRPC port.

    A trailers-only response (the status in the headers) is valid gRPC, so the client sees
    UNIMPLEMENTED with the reason rather than a broken stream.
    """
    message = f"native gRPC is served on the gRPC port ({runtime.config.grpc_addr.port})"
    headers = [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", b"12"),
        (b"grpc-message", message.replace(" ", "%20").encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _json(send: ASGISend, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    headers = [_JSON, (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
