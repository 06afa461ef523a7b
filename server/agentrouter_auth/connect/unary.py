"""Unary Connect and gRPC-Web calls answered from a rendered answer's stored bytes.

connectrpc runs every call through the same machinery (a header multidict, a request
context, a deadline scope, a task that watches for a disconnect, interceptor runs), which costs
several times what writing this service's stored bytes does. `UnaryPath` answers, itself, the
requests it recognises completely: a well-formed unary Connect call (GET or POST, proto or
JSON, gzip or not) or gRPC-Web call of an RPC without side effects, whose answer is a
`Rendered` one. It hands every other request to the connectrpc app untouched (the body it read
is replayed), and any request whose answer is not a `Rendered` one too (an RPC without side
effects can be called twice). So every error and every rule it does not check itself is
connectrpc's answer, by construction; the answers it writes are held to connectrpc's by a
differential test over a matrix of requests (tests/unit/test_connect_unary.py).

What it checks is what connectrpc 0.13 checks, read the way connectrpc reads it: the first
value of each header (a repeated one hands the request over), `connect-protocol-version`, the
deadline header's syntax, the codec from the content type or `encoding`, the compression of
the request and the one the client accepts, base64 as strictly as `ConnectApp`, the message
decoded by the same codecs. A Connect GET's valid deadline is met: nothing between reading the
request and writing the answer waits (the RPC's coroutine answers from memory); a request with
a body and a deadline is handed over, since its body is read under the deadline.
The headers of an answer are the HTTP listener's (http.representation): on a Connect GET, the
caching headers of a representation, and 304 to an `If-None-Match` that names it.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from connectrpc.compression.gzip import GzipCompression
from google.protobuf.descriptor_pb2 import MethodOptions
from google.protobuf.message import Message

from agentrouter_auth.asgi_types import App, Receive, Scope, Send
from agentrouter_auth.connect.app import (
    RenderedJSONCodec,
    RenderedProtoCodec,
    first_values,
    is_base64,
)
from agentrouter_auth.http.representation import send_connect_answer, send_grpc_web_answer
from agentrouter_auth.rendered import Rendered
from agentrouter_auth.rpc import Method

_CODECS: dict[str, RenderedProtoCodec | RenderedJSONCodec] = {
    "proto": RenderedProtoCodec(),
    "json": RenderedJSONCodec(),
}
_GZIP = GzipCompression()
_GET_PARAMS = ("encoding", "message", "base64", "compression")
_DECODED = 512  # requests kept decoded
_DECODED_BODY = 1024  # the longest body or query kept decoded
_KEPT_MESSAGE = 1024  # the largest decoded message kept (unknown fields count: gzip inflates)
_GRPC_WEB = "application/grpc-web"
_WANTED = frozenset(
    (
        b"content-type",
        b"content-length",
        b"connect-protocol-version",
        b"connect-timeout-ms",
        b"content-encoding",
        b"accept-encoding",
        b"if-none-match",
        b"grpc-timeout",
        b"grpc-encoding",
        b"grpc-accept-encoding",
    )
)


class _HandOver(Exception):  # noqa: N818 - a signal, not an error: connectrpc answers instead
    """The request is connectrpc's to answer."""


@dataclass(frozen=True, slots=True)
class _Rpc:
    """An RPC served here: its coroutine, its request type and what `scope["route"]` says."""

    call: Any
    request_class: type[Message]
    route: tuple[str, str]


class UnaryPath:
    """Answers the unary calls it recognises completely from stored bytes; hands every other
    request to `connect` (the connectrpc app with the listener's CORS)."""

    def __init__(self, methods: Sequence[Method], connect: App, read_max_bytes: int) -> None:
        self._rpcs = {
            m.path: _Rpc(m.call, m.request_class, (m.name, m.path))
            for m in methods
            if m.descriptor.GetOptions().idempotency_level == MethodOptions.NO_SIDE_EFFECTS
        }
        self._connect = connect
        self._read_max_bytes = read_max_bytes
        self._decoded = _Decoded(_DECODED)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP requests only)."""
        rpc = self._rpcs.get(scope["path"])
        method = scope["method"]
        if rpc is None or method not in ("GET", "POST"):
            await self._connect(scope, receive, send)
            return
        headers = _headers(scope)
        if headers is None:
            await self._connect(scope, receive, send)
            return
        content_type = headers.get(b"content-type", "")
        if content_type == _GRPC_WEB or content_type.startswith(_GRPC_WEB + "+"):
            if method == "POST" and b"grpc-timeout" not in headers:
                await self._call_with_body(rpc, scope, headers, receive, send, grpc_web=True)
                return
        elif not content_type.startswith("application/grpc") and _connect_headers_ok(
            headers, get=method == "GET"
        ):
            if method == "GET":
                await self._connect_get(rpc, scope, headers, receive, send)
            else:
                await self._call_with_body(rpc, scope, headers, receive, send, grpc_web=False)
            return
        await self._connect(scope, receive, send)

    async def _connect_get(
        self, rpc: _Rpc, scope: Scope, headers: dict[bytes, str], receive: Receive, send: Send
    ) -> None:
        try:
            query = bytes(scope.get("query_string") or b"")
            codec_name, request = self._decoded.get(
                ("GET", rpc.route, query), lambda: self._decode_get(rpc, query)
            )
            answer = await rpc.call(request)
            if not isinstance(answer, Rendered):
                raise _HandOver
        except Exception:  # anything unexpected is connectrpc's to answer, error or not
            await self._connect(scope, receive, send)
            return
        scope["route"] = rpc.route
        gzipped = _accepts_gzip(headers.get(b"accept-encoding", ""))
        if_none_match = headers.get(b"if-none-match")
        await send_connect_answer(
            send,
            answer,
            codec_name,
            gzipped=gzipped,
            get=True,
            if_none_match=None if if_none_match is None else if_none_match.encode(),
        )

    def _decode_get(self, rpc: _Rpc, query: bytes) -> tuple[str, Message]:
        """The codec and the request of a Connect GET, as connectrpc decodes them."""
        params = first_values(query.decode(), _GET_PARAMS)
        codec_name = params.get("encoding", "")
        codec = _CODECS.get(codec_name)
        text = params.get("message")
        if codec is None or text is None:
            raise _HandOver
        if params.get("base64") == "1":
            if not is_base64(text):
                raise _HandOver
            data = base64.urlsafe_b64decode(text + "===")
        else:
            data = text.encode()
        data = self._decompress(params.get("compression") or "identity", data)
        return codec_name, codec.decode(data, rpc.request_class)

    async def _call_with_body(
        self,
        rpc: _Rpc,
        scope: Scope,
        headers: dict[bytes, str],
        receive: Receive,
        send: Send,
        *,
        grpc_web: bool,
    ) -> None:
        """Answer a call whose request is its body (a Connect POST, or a gRPC-Web call: one
        message frame), or hand it over (the body read is replayed) when the request or its
        answer is not one this path writes."""
        content_type = headers.get(b"content-type", "")
        if grpc_web:
            codec_name = (
                content_type[len(_GRPC_WEB) + 1 :] if content_type != _GRPC_WEB else "proto"
            )
            compression = headers.get(b"grpc-encoding") or "identity"
        else:
            codec_name = content_type.partition(";")[0].strip().lower().removeprefix("application/")
            compression = headers.get(b"content-encoding") or "identity"
        events, body = await _read_body(receive, headers, self._read_max_bytes)
        try:
            if codec_name not in _CODECS or body is None:
                raise _HandOver
            key = ("POST", rpc.route, codec_name, compression, grpc_web, body)
            _, request = self._decoded.get(
                key, lambda: self._decode_body(rpc, codec_name, compression, grpc_web, body)
            )
            answer = await rpc.call(request)
            if not isinstance(answer, Rendered):
                raise _HandOver
        except Exception:
            await self._connect(scope, _Replay(events, receive), send)
            return
        scope["route"] = rpc.route
        if grpc_web:
            gzipped = _accepts_gzip(headers.get(b"grpc-accept-encoding", ""))
            await send_grpc_web_answer(send, answer, codec_name, gzipped=gzipped)
        else:
            gzipped = _accepts_gzip(headers.get(b"accept-encoding", ""))
            await send_connect_answer(send, answer, codec_name, gzipped=gzipped, get=False)

    def _decode_body(
        self, rpc: _Rpc, codec_name: str, compression: str, framed: bool, body: bytes
    ) -> tuple[str, Message]:
        """The request of a body (`framed`: a gRPC-Web message frame), as connectrpc decodes it."""
        data = self._frame(body, compression) if framed else self._decompress(compression, body)
        return codec_name, _CODECS[codec_name].decode(data, rpc.request_class)

    def _frame(self, body: bytes, compression: str) -> bytes:
        """The message of a request body that is exactly one well-formed message frame (the
        body is at most the read limit: `_read_body` saw to it)."""
        if len(body) < 5 or body[0] & ~1 or int.from_bytes(body[1:5], "big") != len(body) - 5:
            raise _HandOver
        if compression not in ("identity", "gzip"):
            raise _HandOver
        data = body[5:]
        if body[0] & 1:
            if compression == "identity":
                raise _HandOver
            data = self._decompress(compression, data)
        return data

    def _decompress(self, compression: str, data: bytes) -> bytes:
        if compression == "gzip":
            return _GZIP.decompress(data, self._read_max_bytes) if data else data
        if compression != "identity" or len(data) > self._read_max_bytes:
            raise _HandOver
        return data


class _Decoded:
    """Requests decoded once, kept by their bytes (least recently used first out).

    Clients send the same few requests (an SDK's query string, `{}`): each is decoded once,
    and its message shared by the calls that sent the same bytes (the servicer's coroutines
    never change their request). Failures are not kept, nor a long query or body, nor a
    message that decodes large (a small gzip body can carry 64 KiB of unknown fields): at most
    `size` x _KEPT_MESSAGE bytes of messages are held.
    """

    __slots__ = ("_kept", "_size")

    def __init__(self, size: int) -> None:
        self._kept: OrderedDict[tuple[Any, ...], tuple[str, Message]] = OrderedDict()
        self._size = size

    def get(
        self, key: tuple[Any, ...], decode: Callable[[], tuple[str, Message]]
    ) -> tuple[str, Message]:
        """The decoded request of `key` (whose last item is the request's bytes)."""
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        decoded = decode()
        if len(key[-1]) <= _DECODED_BODY and decoded[1].ByteSize() <= _KEPT_MESSAGE:
            self._kept[key] = decoded
            if len(self._kept) > self._size:
                self._kept.popitem(last=False)
        return decoded


def _headers(scope: Scope) -> dict[bytes, str] | None:
    """The request headers this path reads, once each and ASCII, or None (hand it over)."""
    found: dict[bytes, str] = {}
    for name, value in scope.get("headers") or ():
        if not (value.isascii() and name.isascii()):
            return None  # connectrpc decodes every header as UTF-8: its answer decides
        if name in _WANTED:
            if name in found:
                return None
            found[name] = value.decode()
    return found


def _connect_headers_ok(headers: dict[bytes, str], *, get: bool) -> bool:
    """Whether connectrpc accepts the Connect protocol version and deadline headers as sent;
    a deadline only on a GET (a POST waits for its body, under connectrpc's deadline), and not
    one already over (0 ms)."""
    if headers.get(b"connect-protocol-version", "1") != "1":
        return False
    timeout = headers.get(b"connect-timeout-ms")
    if not timeout:
        return True
    return get and len(timeout) <= 10 and timeout.isdigit() and int(timeout) > 0


def _accepts_gzip(accept_encoding: str) -> bool:
    """connectrpc's choice of response compression: the first listed name it supports (gzip or
    identity), exactly as written, without q-values."""
    for listed in accept_encoding.split(","):
        name = listed.strip()
        if name in ("gzip", "identity"):
            return name == "gzip"
    return False


async def _read_body(
    receive: Receive, headers: dict[bytes, str], limit: int
) -> tuple[list[Any], bytes | None]:
    """The events read and the whole body; None for the body when the request is not a
    complete body of at most `limit` bytes (a disconnect, too long, too late: connectrpc
    answers). Once a `Content-Length` body is all there, the server's last (empty) body event
    is not waited for: the server has read the body off the connection already."""
    events: list[Any] = []
    size = 0
    length = headers.get(b"content-length", "")
    expected = int(length) if length.isdigit() else -1
    while True:
        try:
            event = await receive()
        except Exception:  # the body's deadline (http.limits): connectrpc answers it, reading again
            return events, None
        events.append(event)
        if event["type"] != "http.request":
            return events, None
        size += len(event.get("body", b""))
        if size > limit:
            return events, None
        if size == expected or not event.get("more_body", False):
            return events, b"".join(bytes(e.get("body", b"")) for e in events)


class _Replay:
    """`receive` that gives back the events already read, then the rest of the request."""

    __slots__ = ("_events", "_receive")

    def __init__(self, events: list[Any], receive: Receive) -> None:
        self._events = events[::-1]
        self._receive = receive

    async def __call__(self) -> Any:  # noqa: ANN401 - an ASGI event
        return self._events.pop() if self._events else await self._receive()
