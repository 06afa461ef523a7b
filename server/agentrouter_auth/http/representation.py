"""How an answer is represented on the HTTP port: every response header, for every protocol.

One module decides them all, so changing a header of any answer of the HTTP port is a change
here (and, for a cache lifetime, to the rotation policy that sets it). connectrpc writes the
Connect and gRPC-Web protocols' own headers (content type, encodings, `grpc-status`) on the
answers it makes; the headers added to them are decided here too.

REST (`Representation`, the transcoder's responder):
- a `Rendered` answer: its stored bytes with a strong `ETag` per content coding (the gzip body
  has its own), `If-None-Match` → 304 when it names the representation that would be sent, the
  gzip form when the client accepts it (`Vary: Accept-Encoding`), `Cache-Control` from the
  answer's freshness, and the media type Accept prefers by its q-values among
  `application/json` and the answer's more specific ones (`application/jwk-set+json`; `Vary:
  Accept` too): `application/json` on a tie, and when Accept names none of them; 406 when it
  refuses `application/json` (q=0) and leaves nothing else (`negotiation` reads what the
  request asks). HEAD gets the same headers, no body;
- a plain message: compact proto3 JSON; an error: `google.rpc.Status` JSON, with `Allow` on a
  405 (the methods the transcoder names) and `Vary: Accept` on a 406;
- every answer: `Access-Control-Allow-Origin: *` (the routes are public), and OPTIONS answers
  a CORS preflight.

RPC (Connect, gRPC-Web): `RpcCors` gives the same cross-origin access: a preflight that allows
the protocols' request headers, and gRPC-Web's status headers exposed, so that browser clients
(connect-web, grpc-web) can call them from any page; `connect_error` is a Connect error the
adapter answers itself; `grpc_refusal` a native gRPC answer in its headers alone. A unary
answer written from a `Rendered` answer's stored bytes (connect.unary) is `send_connect_answer`
or `send_grpc_web_answer`: the protocol's own headers as connectrpc writes them, and on a
Connect GET (the cacheable form of a call without side effects) the representation's strong
`ETag`, `Cache-Control` from the answer's freshness, `Vary: Accept-Encoding`, and
`If-None-Match` → 304. Errors are never cached: every RPC answer other than a 200 carries
`Cache-Control: no-store`. `Content-Encoding: identity` is not sent (identity names no coding in a
response, RFC 9110 §8.4.1).

The listener's own answers: health and metrics are never cached (`no-store`: `send_uncached`);
a refused request head (400, 431) or a body that came too late (408) is a `Refusal`, which
closes the connection, as `closing` does for any answer to a request whose body timed out.

Header lists of a rendered answer are built once per answer and representation, and kept in
`Rendered.derived`: a request only picks one.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message as ProtoMessage

from agentrouter_auth import status
from agentrouter_auth.asgi_types import (
    App,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    content_length,
    header,
    respond,
)
from agentrouter_auth.http.negotiation import JSON, accepts_gzip, etag_matches, negotiated_type
from agentrouter_auth.protojson import compact_json
from agentrouter_auth.rendered import Freshness, Rendered
from agentrouter_auth.status import Code
from agentrouter_auth.transcode import TranscodeError
from agentrouter_auth.transcode.errors import status_json

_JSON_TYPE = (b"content-type", JSON.encode())
CORS: Headers = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"etag, content-length"),
)
PREFLIGHT_MAX_AGE = 86400  # seconds a browser may reuse a preflight answer


class Representation:
    """The transcoder's responder for this service's REST routes (and the listener's last-resort
    error)."""

    async def answer(self, scope: Scope, send: Send, answer: object, *, head: bool) -> None:
        """Write a rendered answer from its stored bytes, any other message as JSON."""
        if not isinstance(answer, Rendered):
            if not isinstance(answer, ProtoMessage):
                raise TypeError(f"a handler returned {type(answer).__name__}, not a message")
            body = compact_json(answer)
            headers = [_JSON_TYPE, *CORS, content_length(body)]
            await respond(send, 200, headers, b"" if head else body)
            return
        if_none_match = accept = accept_encoding = None
        for name, value in scope.get("headers") or ():
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"accept":
                accept = value
            elif name == b"accept-encoding":
                accept_encoding = value
        content_type = negotiated_type(accept, answer)
        if content_type is None:
            await _error(send, _not_acceptable(answer), ((b"vary", b"Accept"),), head=head)
            return
        gzipped = accept_encoding is not None and accepts_gzip(accept_encoding)
        etag = answer.etag_gzip if gzipped else answer.etag
        if if_none_match is not None and etag_matches(if_none_match, etag):
            code, headers, body = 304, _variant(answer, None, gzipped=gzipped), b""
        else:
            code = 200
            headers = _variant(answer, content_type, gzipped=gzipped)
            body = b"" if head else answer.json_gzip if gzipped else answer.json
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def error(self, scope: Scope, send: Send, error: TranscodeError, *, head: bool) -> None:
        """Write `error` as google.rpc.Status JSON (a 405 with the path's `Allow`)."""
        await _error(send, error, ((b"allow", error.allow),) if error.allow else (), head=head)

    async def options(self, scope: Scope, send: Send, allow: bytes) -> None:
        """A CORS preflight: any origin, the path's methods, the headers asked for."""
        headers = [
            (b"allow", allow),
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", allow),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
        ]
        requested = header(scope, b"access-control-request-headers")
        if requested:
            headers.append((b"access-control-allow-headers", requested))
        headers.append(content_length(b""))
        await respond(send, 204, headers, b"")


async def _error(send: Send, error: TranscodeError, extra: Headers, *, head: bool) -> None:
    body = status_json(error.code, error.message)
    headers = [_JSON_TYPE, *CORS, *extra, content_length(body)]
    await respond(send, error.http_status, headers, b"" if head else body)


def _not_acceptable(rendered: Rendered[Any]) -> TranscodeError:
    offered = ", ".join((JSON, *rendered.media_types))
    return TranscodeError(
        Code.INVALID_ARGUMENT,
        f"Accept refuses every media type of this resource ({offered})",
        http_status=406,
    )


def cache_control(freshness: Freshness) -> bytes:
    """The `Cache-Control` of an answer a shared cache may keep for `freshness`."""
    return (
        f"public, max-age={int(freshness.max_age)}, "
        f"stale-while-revalidate={int(freshness.stale_while_revalidate)}, "
        f"stale-if-error={int(freshness.stale_if_error)}"
    ).encode()


def _variant(
    rendered: Rendered[Any], content_type: str | None, *, gzipped: bool
) -> list[tuple[bytes, bytes]]:
    """The headers of one representation of `rendered`, built once and reused.

    `content_type` None is the 304 form: validators and caching headers, no entity ones.
    """
    key = (content_type, gzipped)
    headers: list[tuple[bytes, bytes]] | None = rendered.derived.get(key)
    if headers is None:
        vary = b"Accept, Accept-Encoding" if rendered.media_types else b"Accept-Encoding"
        etag = rendered.etag_gzip if gzipped else rendered.etag
        headers = [(b"etag", etag.encode()), (b"vary", vary), *CORS]
        if rendered.freshness is not None:
            headers.append((b"cache-control", cache_control(rendered.freshness)))
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
            if gzipped:
                headers.append((b"content-encoding", b"gzip"))
            headers.append(content_length(rendered.json_gzip if gzipped else rendered.json))
        rendered.derived[key] = headers
    return headers


# -- RPC: Connect and gRPC-Web ------------------------------------------------------------------

# What a browser may send to and read from the RPC routes: Connect's and gRPC-Web's request
# headers (as connectrpc.com/cors lists them) and the bearer token the SDKs send; gRPC-Web's
# status headers, for a trailers-only answer.
RPC_METHODS = b"GET, POST"
RPC_REQUEST_HEADERS = (
    b"authorization, content-type, connect-protocol-version, connect-timeout-ms, "
    b"grpc-timeout, x-grpc-web, x-user-agent"
)
RPC_CORS: Headers = (
    (b"access-control-allow-origin", b"*"),
    (
        b"access-control-expose-headers",
        b"grpc-status, grpc-message, grpc-status-details-bin, etag",
    ),
)
_RPC_PREFLIGHT = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", RPC_METHODS),
    (b"access-control-allow-headers", RPC_REQUEST_HEADERS),
    (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
    (b"allow", RPC_METHODS),
    content_length(b""),
]


class RpcCors:
    """Cross-origin access to an RPC app (Connect and gRPC-Web): OPTIONS is a preflight
    answered here; every other answer gets `RPC_CORS` added to its headers."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP requests only)."""
        if scope["method"] == "OPTIONS":
            await respond(send, 204, _RPC_PREFLIGHT, b"")
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [pair for pair in message.get("headers", ()) if pair != _IDENTITY_CODING]
                if message["status"] != 200:
                    headers.append(_NO_STORE)
                message["headers"] = [*headers, *RPC_CORS]
            await send(message)

        await self.app(scope, receive, send_with_cors)


_IDENTITY_CODING = (b"content-encoding", b"identity")
_NO_STORE = (b"cache-control", b"no-store")
_CONNECT_VARY = (b"vary", b"Accept-Encoding")


def stored_body(rendered: Rendered[Any], codec: str, *, gzipped: bool) -> tuple[bytes, str]:
    """The stored bytes of `rendered` in the codec named `codec` (Connect's `proto` or
    `json`), in gzip or not, and their strong ETag."""
    if codec == "proto":
        if gzipped:
            return rendered.proto_gzip, rendered.etag_proto_gzip
        return rendered.proto, rendered.etag_proto
    if gzipped:
        return rendered.json_gzip, rendered.etag_gzip
    return rendered.json, rendered.etag


async def send_connect_answer(
    send: Send,
    rendered: Rendered[Any],
    codec: str,
    *,
    gzipped: bool,
    get: bool,
    if_none_match: bytes | None = None,
) -> None:
    """A Connect unary answer of `rendered` from its stored bytes; a GET answer is cacheable
    (validator and freshness), and a 304 when `if_none_match` names it."""
    if get and if_none_match is not None:
        etag = stored_body(rendered, codec, gzipped=gzipped)[1]
        if etag_matches(if_none_match, etag):
            not_modified: list[tuple[bytes, bytes]] | None
            not_modified = rendered.derived.get(("connect-304", codec, gzipped))
            if not_modified is None:
                not_modified = [_CONNECT_VARY, *_cacheable(rendered, etag), *RPC_CORS]
                rendered.derived["connect-304", codec, gzipped] = not_modified
            await respond(send, 304, not_modified, b"")
            return
    key = ("connect", codec, gzipped, get)
    answer: tuple[list[tuple[bytes, bytes]], bytes] | None = rendered.derived.get(key)
    if answer is None:
        body, etag = stored_body(rendered, codec, gzipped=gzipped)
        headers = [(b"content-type", b"application/" + codec.encode())]
        if gzipped:
            headers.append((b"content-encoding", b"gzip"))
        headers.append(_CONNECT_VARY)
        if get:
            headers.extend(_cacheable(rendered, etag))
        headers.extend((*RPC_CORS, content_length(body)))
        answer = rendered.derived[key] = (headers, body)
    await respond(send, 200, *answer)


def _cacheable(rendered: Rendered[Any], etag: str) -> list[tuple[bytes, bytes]]:
    headers = [(b"etag", etag.encode())]
    if rendered.freshness is not None:
        headers.append((b"cache-control", cache_control(rendered.freshness)))
    return headers


_GRPC_WEB_TRAILERS = b"grpc-status: 0\r\n"  # what connectrpc writes for OK, no metadata


async def send_grpc_web_answer(
    send: Send, rendered: Rendered[Any], codec: str, *, gzipped: bool
) -> None:
    """A gRPC-Web unary answer of `rendered` from its stored bytes: one message frame and the
    trailers frame, both compressed when the answer is (as connectrpc writes them)."""
    key = ("grpc-web", codec, gzipped)
    answer: tuple[list[tuple[bytes, bytes]], bytes] | None = rendered.derived.get(key)
    if answer is None:
        message = stored_body(rendered, codec, gzipped=gzipped)[0]
        trailers = gzip.compress(_GRPC_WEB_TRAILERS) if gzipped else _GRPC_WEB_TRAILERS
        flag = 1 if gzipped else 0
        body = (
            struct.pack(">BI", flag, len(message))
            + message
            + struct.pack(">BI", 0x80 | flag, len(trailers))
            + trailers
        )
        headers = [
            (b"content-type", b"application/grpc-web+" + codec.encode()),
            (b"grpc-encoding", b"gzip" if gzipped else b"identity"),
            *RPC_CORS,
            content_length(body),
        ]
        answer = rendered.derived[key] = (headers, body)
    await respond(send, 200, *answer)


ConnectErrorWriter = Callable[[Send, Code, str], Awaitable[None]]
"""Writes a Connect unary error (`connect_error`)."""


async def connect_error(send: Send, code: Code, message: str) -> None:
    """A Connect unary error, as connectrpc writes one: `{"code": "invalid_argument", ...}`."""
    body = json.dumps({"code": status.connect_name(code), "message": message}).encode()
    headers = [_JSON_TYPE, content_length(body)]
    await respond(send, status.http_status(code), headers, body)


def grpc_refusal(code: Code, message: str) -> App:
    """A native gRPC answer with no message: its status in the headers (a trailers-only
    response, valid gRPC), so the client reads `code` and `message` rather than a broken
    stream. `message` is printable ASCII without '%': no percent-encoding in grpc-message."""
    headers = [
        (b"content-type", b"application/grpc"),
        (b"grpc-status", str(status.number(code)).encode()),
        (b"grpc-message", message.encode()),
        _NO_STORE,  # a 200 a shared cache must not keep (a GET on the Connect GET URL gets it)
    ]

    async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
        await respond(send, 200, headers, b"")

    return refuse


# -- the listener's own answers -------------------------------------------------------------------


def uncached(content_type: str, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of an answer no cache may keep (health, metrics, a request limit's)."""
    return [
        (b"content-type", content_type.encode()),
        content_length(body),
        (b"cache-control", b"no-store"),
    ]


async def send_uncached(send: Send, http_status: int, content_type: str, body: bytes) -> None:
    """Send an answer no cache may keep: health, metrics."""
    await respond(send, http_status, uncached(content_type, body), body)


class Refusal:
    """A request the listener refuses before any handler (a bad head, a body too late): a
    `google.rpc.Status` JSON answer, prepared once, that closes the connection (what follows
    a refused request on it cannot be trusted)."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, http_status: int, code: Code, message: str) -> None:
        self.status = http_status
        self.body = status_json(code, message)
        self.headers = [*uncached(JSON, self.body), (b"connection", b"close")]

    async def send(self, scope: Scope, send: Send) -> None:
        """Write the answer (no body to a HEAD request)."""
        body = b"" if scope.get("method") == "HEAD" else self.body
        await respond(send, self.status, self.headers, body)


def closing(headers: Headers) -> list[tuple[bytes, bytes]]:
    """`headers` with `Connection: close` instead of any Connection header of their own."""
    kept = [pair for pair in headers if pair[0].lower() != b"connection"]
    return [*kept, (b"connection", b"close")]
