"""Baseline: the smallest ASGI app that returns the same bytes as the JWKS route.

A request with a body (a POST) has its body read first, as little as a server allows: events
until the `Content-Length` bytes are there. It is what any app answering Connect POST or
gRPC-Web must at least do on this server, so it bounds what ours can reach."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BODY = Path(os.environ["BENCH_BODY"]).read_bytes()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
    """Constant bytes for every request."""
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        length = int(dict(scope["headers"]).get(b"content-length", b"0"))
        read = 0
        while True:
            event = await receive()
            read += len(event.get("body", b""))
            if read >= length or not event.get("more_body", False):
                break
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
