"""connect.unary: what the lean path keeps decoded stays small whatever clients send, and the
native gRPC refusal on the RPC path is never cacheable (a shared cache could otherwise keep it
under the Connect GET URL every SDK calls)."""

from __future__ import annotations

import base64
import gzip

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.connect import UnaryPath
from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.dispatch import connect

from .conftest import Call

PATH = "/agentrouter.auth.v1.AuthService/GetJWKS"


def big_request(n: int) -> bytes:
    """A GetJWKSRequest carrying ~60 KiB in an unknown field (number 15, bytes): it compresses
    to about a hundred bytes."""
    payload = bytes([n % 251]) * 60000 + n.to_bytes(4, "big")
    field = b"\x7a" + _varint(len(payload)) + payload
    return gzip.compress(field, mtime=0)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def test_a_request_that_decodes_large_is_answered_but_not_kept(
    http_app: HttpApp, call: Call
) -> None:
    app = connect(http_app.runtime)
    assert isinstance(app, UnaryPath)
    for n in range(20):
        message = base64.urlsafe_b64encode(big_request(n)).decode().rstrip("=")
        query = f"encoding=proto&base64=1&compression=gzip&message={message}"
        answer = call(app, "GET", f"{PATH}?{query}")
        assert answer.status_code == 200, answer.text
        assert auth_pb2.GetJWKSResponse.FromString(answer.content).keys
        body = call(
            app,
            "POST",
            PATH,
            content=big_request(n + 1000),
            headers={"content-type": "application/proto", "content-encoding": "gzip"},
        )
        assert body.status_code == 200, body.text
    kept = app._decoded_get.cache_info().currsize + app._decoded_body.cache_info().currsize
    assert kept == 0, f"{kept} requests of ~60 KiB each kept decoded"
    # A small request is still kept: the cache works for the requests clients really send.
    assert call(app, "GET", f"{PATH}?encoding=json&message=%7B%7D").status_code == 200
    assert app._decoded_get.cache_info().currsize == 1


def test_the_native_grpc_refusal_is_never_cached(http_app: HttpApp, call: Call) -> None:
    for method in ("GET", "POST"):
        answer = call(
            http_app,
            method,
            f"{PATH}?encoding=json&message=%7B%7D",
            headers={"content-type": "application/grpc"},
        )
        assert answer.headers["grpc-status"] == "12"
        assert answer.headers.get("cache-control") == "no-store", dict(answer.headers)
