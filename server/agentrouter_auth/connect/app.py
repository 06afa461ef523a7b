"""Connect and gRPC-Web: the generated connectrpc ASGI app, serving the servicer's coroutines
and writing a rendered answer's stored bytes instead of serializing it per request.

The generated app calls `get_jwks(request, ctx)`; the servicer's coroutines take the request
alone, so the app gets one endpoint per RPC of the service descriptor (`rpc.bind`), which calls
the coroutine and turns an `RpcError` into a ConnectError. An endpoint returns what the
coroutine returned: connectrpc hands it to the codec untouched, and these codecs write a
`Rendered` answer's stored bytes (protobuf, or compact proto3 JSON: for the JWKS response,
exactly the RFC 7517 document REST serves). connectrpc's default JSON codec pretty-prints.

`ConnectApp` wraps the generated app where connectrpc 0.13 is more lenient than the Connect
protocol: it decodes a GET request's base64 `message` without validation (`!!!` decodes to an
empty message), and it reports a request body that ends in `http.disconnect` as `canceled`,
although that is also how ASGI servers report a body they could not parse (granian turns a
malformed chunk-size line into exactly the same event). Both are `invalid_argument` here.
It also names each request's RPC in `scope["route"]` for metrics and logs (see
http.recording), and this module says where a Connect or gRPC-Web answer carries its code.
The errors it answers itself are written by the `ErrorWriter` it is given: the headers of every
answer are the HTTP listener's choice (http.representation), not the adapter's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf import json_format
from google.protobuf.message import Message

from agentrouter.auth.v1.auth_connect import AuthServiceASGIApplication
from agentrouter_auth import status
from agentrouter_auth.asgi_types import Message as Event
from agentrouter_auth.asgi_types import Receive, Scope, Send
from agentrouter_auth.protojson import compact_json
from agentrouter_auth.rendered import Rendered
from agentrouter_auth.rpc import Call, Servicer, bind, python_name
from agentrouter_auth.status import RpcError

DEFAULT_READ_MAX_BYTES = 64 * 1024
M = TypeVar("M", bound=Message)
ErrorWriter = Callable[[Send, status.Code, str], Awaitable[None]]
"""Writes a Connect unary error with this code and message: the whole answer."""


class _RenderedCodec:
    """A Connect codec that writes a rendered answer's stored bytes, and serializes any other
    message."""

    codec_name = ""

    def name(self) -> str:
        """The Connect codec name."""
        return self.codec_name

    def encode(self, message: Any) -> bytes:  # noqa: ANN401 - a message or a Rendered answer
        """The bytes of `message`."""
        if isinstance(message, Rendered):
            return self._stored(message)
        return self._serialize(message)

    def _stored(self, rendered: Rendered[Any]) -> bytes:
        raise NotImplementedError

    def _serialize(self, message: Message) -> bytes:
        raise NotImplementedError


class RenderedProtoCodec(_RenderedCodec):
    """Protobuf binary."""

    codec_name = "proto"

    def _stored(self, rendered: Rendered[Any]) -> bytes:
        return rendered.proto

    def _serialize(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        """Parse a request."""
        return message_class.FromString(bytes(data))


class RenderedJSONCodec(_RenderedCodec):
    """Compact proto3 JSON."""

    codec_name = "json"

    def _stored(self, rendered: Rendered[Any]) -> bytes:
        return rendered.json

    def _serialize(self, message: Message) -> bytes:
        return compact_json(message)

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        """Parse a request; unknown fields are ignored, as connectrpc's own codec does.

        A message is a JSON object: protobuf's parser also takes `[]` and `"x"` for an empty
        message. A JSON text whose first non-blank character is `{` and that parses is an
        object, so one look at that character settles it without parsing twice.
        """
        text = bytes(data)
        if text.lstrip(b" \t\r\n")[:1] != b"{":
            raise ValueError("a JSON message must be a JSON object")
        message = message_class()
        json_format.Parse(text, message, ignore_unknown_fields=True)
        return message


def connect_app(
    servicer: Servicer, *, error: ErrorWriter, read_max_bytes: int = DEFAULT_READ_MAX_BYTES
) -> ConnectApp:
    """The Connect + gRPC-Web application of `servicer`, one endpoint per RPC; `error` writes
    the errors the app answers before connectrpc sees a request."""
    methods = bind(servicer)
    endpoints = SimpleNamespace(**{python_name(m.name): _endpoint(m.call) for m in methods})
    generated = AuthServiceASGIApplication(
        endpoints,  # the generated Protocol: one coroutine per RPC, by name
        codecs=[RenderedProtoCodec(), RenderedJSONCodec()],
        read_max_bytes=read_max_bytes,
    )
    return ConnectApp(generated, {m.path: (m.name, m.path) for m in methods}, error)


def _endpoint(call: Call) -> Any:  # noqa: ANN401 - connectrpc's endpoint function
    """The endpoint the generated app calls for an RPC: `call(request)`, errors as Connect's."""

    async def endpoint(request: Message, ctx: object, /) -> object:
        try:
            return await call(request)
        except RpcError as err:
            raise ConnectError(Code(status.connect_name(err.code)), err.message) from None

    return endpoint


class ConnectApp:
    """The generated Connect app, held to the protocol where connectrpc is lenient."""

    def __init__(
        self,
        app: AuthServiceASGIApplication,
        routes: dict[str, tuple[str, str]],
        error: ErrorWriter,
    ) -> None:
        self.app = app
        self._routes = routes  # path -> (RPC name, path): what scope["route"] says
        self._error = error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP requests only)."""
        route = self._routes.get(scope["path"])
        if route is not None:
            scope["route"] = route
        if scope["method"] == "GET":
            problem = _get_request_problem(scope.get("query_string") or b"")
            if problem is not None:
                await self._error(send, status.Code.INVALID_ARGUMENT, problem)
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, _BodyReceive(receive), send)


class _BodyReceive:
    """`receive` for a request with a body: a body that stops short is malformed.

    ASGI has one event for "the body cannot be read": `http.disconnect`. granian sends it alike
    for a malformed chunk, a body cut short by the client closing its side, and a client gone
    for good, and the first two are malformed requests that deserve a 400. A client that is
    truly gone never reads the answer either way. Once the body is complete, `http.disconnect`
    passes through: connectrpc then watches it to cancel a call whose client left.
    """

    __slots__ = ("_done", "_receive")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._done = False

    async def __call__(self) -> Any:  # noqa: ANN401 - an ASGI event
        message = await self._receive()
        if not self._done:
            kind = message["type"]
            if kind == "http.request":
                self._done = not message.get("more_body", False)
            elif kind == "http.disconnect":
                self._done = True
                raise ConnectError(
                    Code.INVALID_ARGUMENT, "the request body is malformed or incomplete"
                )
        return message


# Connect GET: `base64=1` means the message is base64, URL-safe or standard, padded or not
# (https://connectrpc.com/docs/protocol/#unary-get-request). connectrpc's decoder skips any
# character outside the alphabet, so it is checked here first.
_BASE64 = re.compile(r"[A-Za-z0-9_-]*|[A-Za-z0-9+/]*")  # one alphabet or the other


def is_base64(text: str) -> bool:
    """Whether `text` is base64 in one alphabet, URL-safe or standard, padded or not: exactly
    what decodes without skipping a character (Python then ignores unused trailing bits)."""
    data = text.rstrip("=")
    padding = len(text) - len(data)
    if len(data) % 4 == 1 or (padding and (len(text) % 4 or padding > 2)):
        return False
    return _BASE64.fullmatch(data) is not None


def _get_request_problem(query: bytes) -> str | None:
    """Why connectrpc must not decode this GET request's message, or None."""
    try:
        text = query.decode("utf-8")
    except UnicodeDecodeError:
        return "query string is not UTF-8"
    params = first_values(text, ("base64", "message"))
    if params.get("base64") != "1" or "message" not in params:
        return None
    return None if is_base64(params["message"]) else "message is not valid base64"


def first_values(query: str, wanted: tuple[str, ...]) -> dict[str, str]:
    """The first value of each `wanted` parameter, decoded as connectrpc reads them
    (`parse_qs(query, keep_blank_values=True)`), without building the whole mapping: parse_qs
    costs several microseconds, and connectrpc parses the query again anyway."""
    found: dict[str, str] = {}
    for field in query.split("&"):
        if not field:
            continue
        name, _, value = field.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if name in wanted and name not in found:
            found[name] = unquote_plus(value)
    return found


# -- where the client reads the code (for http.recording) --------------------------------------


def connect_code_at_start(http_status: int, start: Event) -> status.Code | None:
    """A Connect answer is OK when its status is 200; an error's code is in its body."""
    return status.Code.OK if http_status == 200 else None


def connect_code_in_body(body: bytes) -> status.Code | None:
    """The code of a Connect error body (`{"code": "resource_exhausted", ...}`), or None."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    name = document.get("code") if isinstance(document, dict) else None
    return status.from_connect_name(name) if isinstance(name, str) else None


def code_of_bare_status(http_status: int) -> status.Code:
    """The code of an answer without a Connect error body: connectrpc's bare 404 (no such
    procedure), 405 and 415, and anything else by its HTTP status."""
    if http_status == 404:
        return status.Code.UNIMPLEMENTED
    return status.from_http(http_status)


_GRPC_WEB_TRAILERS_FLAG = 0x80


def grpc_web_code_at_start(http_status: int, start: Event) -> status.Code | None:
    """The `grpc-status` header of a trailers-only gRPC-Web answer; else it is in the body."""
    for name, value in start.get("headers", ()):
        if name == b"grpc-status":
            return _grpc_status(value)
    return None


def grpc_web_code_in_body(body: bytes) -> status.Code | None:
    """The `grpc-status` of a gRPC-Web trailers frame (flag 0x80; connectrpc writes it as the
    body's last event), or None for any other piece of the body."""
    if not (body[:1] and body[0] & _GRPC_WEB_TRAILERS_FLAG):
        return None
    for line in body[5:].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"grpc-status":
            return _grpc_status(value.strip())
    return None


def _grpc_status(value: bytes) -> status.Code:
    try:
        return status.from_number(int(value))
    except ValueError:
        return status.Code.UNKNOWN
