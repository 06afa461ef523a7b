"""The ASGI callable types (the specification's names), and the one way to send an answer.

Every HTTP piece here is plain ASGI: the transcoder, the Connect adapter, the HTTP app and its
middleware. They share these aliases rather than each spelling `Callable[...]` again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = Sequence[tuple[bytes, bytes]]


async def respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    """Send a whole answer: `headers` must already carry its Content-Length."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def content_length(body: bytes) -> tuple[bytes, bytes]:
    """The Content-Length header of `body`."""
    return (b"content-length", str(len(body)).encode())


def header(scope: Scope, wanted: bytes) -> bytes:
    """The first value of the request header `wanted` (a lower-case name), or b""."""
    for name, value in scope.get("headers") or ():
        if name == wanted:
            return bytes(value)
    return b""
