"""A small Connect peer that forces what a real server rarely does, for the SDKs' tests.

Every SDK is tested against the real server and against this peer, which answers
`…/agentrouter.auth.v1.AuthService/GetJWKS` under any path prefix, by the prefix's last two
segments:

- `…/fail/<code>/agentrouter.auth.v1.AuthService/GetJWKS`: a Connect error with that code
  (`not_found`, `unavailable`, …) and the message `forced <code>`, under the HTTP status the
  Connect protocol gives the code;
- `…/slow/<milliseconds>/agentrouter.auth.v1.AuthService/GetJWKS`: the answer, that late;
- anything else: a GetJWKSResponse holding one key whose kid is `peer-key`.

It answers in the encoding the call asked for (Connect GET's `encoding` query parameter, or
the POST's Content-Type: proto or JSON). It records every request; `GET /_requests` returns
them as JSON (method, path, query and headers, lower-cased names), oldest first, so a test in
any language can check what its SDK sent.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from google.protobuf import json_format

from agentrouter.auth.v1 import auth_pb2

METHOD_PATH = "/agentrouter.auth.v1.AuthService/GetJWKS"
PEER_KID = "peer-key"
# The HTTP status of each Connect error code (connectrpc.com/docs/protocol#error-codes).
HTTP_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403,
    "resource_exhausted": 429, "failed_precondition": 400, "aborted": 409,
    "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}  # fmt: skip


class Peer:
    """The running peer: its base URL and what it was sent."""

    def __init__(self, server: ThreadingHTTPServer) -> None:
        self._server = server
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"


def _handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read what was recorded instead."""

        def do_GET(self) -> None:
            if self.path == "/_requests":
                with peer.lock:
                    body = json.dumps(peer.requests).encode()
                self._send(200, "application/json", body)
                return
            self._call()

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            self._call()

        def do_OPTIONS(self) -> None:  # a browser's CORS preflight
            self._record()
            self.send_response(204)
            self.send_header("access-control-allow-origin", "*")
            self.send_header("access-control-allow-methods", "GET, POST")
            requested = self.headers.get("access-control-request-headers")
            if requested:
                self.send_header("access-control-allow-headers", requested)
            self.send_header("content-length", "0")
            self.end_headers()

        def _record(self) -> None:
            parts = urlsplit(self.path)
            with peer.lock:
                peer.requests.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": parts.query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                    }
                )

        def _call(self) -> None:
            self._record()
            parts = urlsplit(self.path)
            if not parts.path.endswith(METHOD_PATH):
                self._send(404, "text/plain", b"not found")
                return
            prefix = parts.path.removesuffix(METHOD_PATH).strip("/").split("/")
            kind, value = (prefix[-2], prefix[-1]) if len(prefix) >= 2 else ("", "")
            query = parse_qs(parts.query)
            if self.command == "GET":
                as_json = query.get("encoding", ["proto"])[0] == "json"
            else:
                as_json = "json" in (self.headers.get("content-type") or "")
            if kind == "fail":
                error = {"code": value, "message": f"forced {value}"}
                status = HTTP_STATUS.get(value, 500)
                self._send(status, "application/json", json.dumps(error).encode())
                return
            if kind == "slow":
                time.sleep(int(value) / 1000)
            answer = auth_pb2.GetJWKSResponse(
                keys=[auth_pb2.JWK(kty="OKP", crv="Ed25519", x="AAAA", kid=PEER_KID, alg="EdDSA")]
            )
            if as_json:
                body = json_format.MessageToJson(answer, indent=None).encode()
                self._send(200, "application/json", body)
            else:
                self._send(200, "application/proto", answer.SerializeToString())

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.send_header("access-control-allow-origin", "*")
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that timed out has gone
                self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def running_peer() -> Iterator[Peer]:
    """A peer on a free loopback port, for the duration of the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    peer = Peer(server)
    server.RequestHandlerClass = _handler(peer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
