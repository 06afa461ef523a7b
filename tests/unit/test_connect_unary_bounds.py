"""connect.unary: what the lean path keeps decoded stays small whatever clients send, and the
native gRPC refusal on the RPC path is never cacheable (a shared cache could otherwise keep it
under the Connect GET URL every SDK calls)."""

from __future__ import annotations

import base64
import gzip
from collections import Counter
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.connect import UnaryPath, unary
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


class CountingCodec:
    """A codec of the lean path that counts what it decodes, by the bytes it was given."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.decoded: Counter[bytes] = Counter()

    def decode(self, data: bytes, message_class: type[Message]) -> Message:
        self.decoded[data] += 1
        return cast("Message", self.codec.decode(data, message_class))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.codec, name)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> dict[str, CountingCodec]:
    codecs = {name: CountingCodec(codec) for name, codec in unary._CODECS.items()}
    monkeypatch.setattr(unary, "_CODECS", codecs)
    return codecs


def test_a_request_that_decodes_large_is_answered_but_not_kept(
    http_app: HttpApp, call: Call, counting: dict[str, CountingCodec]
) -> None:
    app = connect(http_app.runtime)
    assert isinstance(app, UnaryPath)
    grpc_web = {"content-type": "application/grpc-web+proto", "grpc-encoding": "gzip"}
    for _ in range(2):  # the same requests twice: each decoded again, none kept
        for n in range(5):
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
            frame = big_request(n + 2000)
            web = call(
                app,
                "POST",
                PATH,
                content=b"\1" + len(frame).to_bytes(4, "big") + frame,
                headers=grpc_web,
            )
            assert web.content.endswith(b"grpc-status: 0\r\n"), web.content[-80:]
    large = [count for data, count in counting["proto"].decoded.items() if len(data) > 60000]
    assert large == [2] * 15, f"large requests decoded {large} times: kept after the first"
    # The small requests clients really send are decoded once and kept.
    for _ in range(3):
        assert call(app, "GET", f"{PATH}?encoding=json&message=%7B%7D").status_code == 200
        posted = call(
            app, "POST", PATH, content=b"{}", headers={"content-type": "application/json"}
        )
        assert posted.status_code == 200
    assert counting["json"].decoded[b"{}"] == 2  # one GET, one POST: each kept after its first
    # A long body is not kept either, however small its message (the key would hold it).
    padded = b"{" + b" " * 2000 + b"}"
    for _ in range(2):
        posted = call(
            app, "POST", PATH, content=padded, headers={"content-type": "application/json"}
        )
        assert posted.status_code == 200
    assert counting["json"].decoded[padded] == 2


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
