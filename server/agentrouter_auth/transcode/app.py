"""The transcoder's ASGI app: find the route, build the request, call the handler, hand the
answer to a responder.

How an answer is written (its body's form, its headers, caching, CORS) is the responder's
business, not the transcoder's: the application passes its `Responder`, and the transcoder
writes no header itself. The app names the route a request matched in `scope["route"]` as
(RPC name, or "" when no method of the path answers; the path template), so that metrics and
logs can name it without ever recording the raw path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from google.protobuf.message import Message

from agentrouter_auth.asgi_types import Receive, Scope, Send
from agentrouter_auth.status import Code, RpcError
from agentrouter_auth.transcode.errors import TranscodeError, body_too_large
from agentrouter_auth.transcode.fields import assign, merge_body, merge_query, message_class
from agentrouter_auth.transcode.routes import Bindings, Route, Router, request_path

DEFAULT_MAX_BODY_BYTES = 64 * 1024


class Responder(Protocol):
    """Writes the transcoder's answers."""

    async def answer(self, scope: Scope, send: Send, answer: object, *, head: bool) -> None:
        """Write what a handler returned (`head`: headers only)."""

    async def error(self, scope: Scope, send: Send, error: TranscodeError, *, head: bool) -> None:
        """Write an error (`head`: headers only)."""

    async def options(self, scope: Scope, send: Send, allow: bytes) -> None:
        """Answer an OPTIONS request on a path whose methods are `allow`."""


class Transcoder:
    """An ASGI app that answers the REST bindings of its routes."""

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        responder: Responder,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.routes = tuple(routes)
        self.responder = responder
        self.max_body_bytes = max_body_bytes
        self._router = Router(self.routes)
        self._literal = self._router.literal  # one dict lookup finds most requests' resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request (the ASGI entry point)."""
        method: str = scope["method"]
        try:
            matches = None
            resource = self._literal.get(request_path(scope))
            if resource is None:
                resource, matches = self._router.match(scope)
            route = resource.methods.get("GET" if method == "HEAD" else method)
            if route is None:
                scope["route"] = resource.name
                if method == "OPTIONS":
                    await self.responder.options(scope, send, resource.allow)
                    return
                raise _not_allowed(method, scope["path"], resource.allow)
            scope["route"] = route.name
            request = route.shared_request
            if request is None:
                bound = {} if matches is None else next(b for r, b in matches if r is route)
                request = await self._build_request(route, bound, scope, receive)
            answer = await route.handler(request)
            if route.response_body:
                answer = _response_field(route, answer)
            await self.responder.answer(scope, send, answer, head=method == "HEAD")
        except RpcError as err:
            await self.responder.error(scope, send, TranscodeError.of(err), head=method == "HEAD")

    async def _build_request(
        self, route: Route, bound: Bindings, scope: Scope, receive: Receive
    ) -> Message:
        request = message_class(route.rpc.input_type)()
        query = scope.get("query_string", b"")
        if not route.body and not bound and not query:
            return request
        if route.body:
            raw = await self._read_body(scope, receive)
            merge_body(raw, request if route.body == "*" else getattr(request, route.body))
        for path, value in bound.items():
            assign(request, path, [value], source="path")
        if route.body != "*" and query:
            merge_query(request, query, body_field=route.body)
        return request

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    problem = "malformed Content-Length"
                    raise TranscodeError(Code.INVALID_ARGUMENT, problem) from None
                if declared > self.max_body_bytes:
                    raise body_too_large(self.max_body_bytes)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise TranscodeError(Code.CANCELLED, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise body_too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _not_allowed(method: str, path: str, allow: bytes) -> TranscodeError:
    return TranscodeError(
        Code.UNIMPLEMENTED,
        f"method {method} is not allowed on {path}",
        allow=allow,
        http_status=405,
    )


def _response_field(route: Route, answer: object) -> object:
    """The field of the answer that `response_body` names (a message's field only)."""
    if not isinstance(answer, Message):
        raise TranscodeError(Code.INTERNAL, f"{route.name[0]}: response_body needs a message")
    return getattr(answer, route.response_body)
