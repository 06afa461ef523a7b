"""Connect and gRPC-Web for AuthService: the generated connectrpc ASGI app, with codecs that
write the snapshot's pre-rendered bytes instead of serializing the response per request.

connectrpc's default JSON codec pretty-prints; these write compact proto3 JSON, which for the
JWKS response is exactly the RFC 7517 document REST serves.

`ConnectApp` wraps the generated app where connectrpc 0.13 is more lenient than the Connect
protocol: it decodes a GET request's base64 `message` without validation (`!!!` decodes to an
empty message), and it reports a request body that ends in `http.disconnect` as `canceled`,
although that is also how ASGI servers report a body they could not parse (granian turns a
malformed chunk-size line into exactly the same event). Both are `invalid_argument` here.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf import json_format
from google.protobuf.message import Message

from agentrouter.auth.v1.auth_connect import AuthServiceASGIApplication
from agentrouter_auth.protojson import compact_json
from agentrouter_auth.service import AuthService
from agentrouter_auth.snapshot import Snapshot, SnapshotSource
from agentrouter_auth.transcode import ASGIReceive, ASGIScope, ASGISend

CONNECT_PATH_PREFIX = "/agentrouter.auth.v1.AuthService/"
DEFAULT_READ_MAX_BYTES = 64 * 1024
M = TypeVar("M", bound=Message)


class _SnapshotCodec:
    """A Connect codec that writes the current snapshot's message as its stored bytes."""

    codec_name = ""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def name(self) -> str:
        """The Connect codec name."""
        return self.codec_name

    def encode(self, message: Message) -> bytes:
        """The stored bytes when `message` is the snapshot's own, else a fresh encoding."""
        snapshot = self._source.snapshot()
        if message is snapshot.message:
            return self._stored(snapshot)
        return self._serialize(message)

    def _stored(self, snapshot: Snapshot) -> bytes:
        raise NotImplementedError

    def _serialize(self, message: Message) -> bytes:
        raise NotImplementedError


class SnapshotProtoCodec(_SnapshotCodec):
    """Protobuf binary."""

    codec_name = "proto"

    def _stored(self, snapshot: Snapshot) -> bytes:
        return snapshot.proto

    def _serialize(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        """Parse a request."""
        return message_class.FromString(bytes(data))


class SnapshotJSONCodec(_SnapshotCodec):
    """Compact proto3 JSON."""

    codec_name = "json"

    def _stored(self, snapshot: Snapshot) -> bytes:
        return snapshot.json

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
    service: AuthService, *, read_max_bytes: int = DEFAULT_READ_MAX_BYTES
) -> ConnectApp:
    """The Connect + gRPC-Web application for AuthService."""
    return ConnectApp(
        AuthServiceASGIApplication(
            service,
            codecs=[SnapshotProtoCodec(service.source), SnapshotJSONCodec(service.source)],
            read_max_bytes=read_max_bytes,
        )
    )


class ConnectApp:
    """The generated Connect app, held to the protocol where connectrpc is lenient."""

    def __init__(self, app: AuthServiceASGIApplication) -> None:
        self.app = app

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """The ASGI entry point (HTTP requests only)."""
        if scope["method"] == "GET":
            problem = _get_request_problem(scope.get("query_string") or b"")
            if problem is not None:
                await _send_invalid_argument(send, problem)
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

    def __init__(self, receive: ASGIReceive) -> None:
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
    params = _first_values(text, ("base64", "message"))
    if params.get("base64") != "1" or "message" not in params:
        return None
    return None if is_base64(params["message"]) else "message is not valid base64"


def _first_values(query: str, wanted: tuple[str, ...]) -> dict[str, str]:
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


async def _send_invalid_argument(send: ASGISend, message: str) -> None:
    """A Connect unary `invalid_argument` error, as connectrpc writes one."""
    body = json.dumps({"code": Code.INVALID_ARGUMENT.value, "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})
