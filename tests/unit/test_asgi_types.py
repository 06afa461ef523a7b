"""asgi_types: the one way an answer is sent, and reading a request header."""

from __future__ import annotations

import asyncio
from typing import Any

from agentrouter_auth.asgi_types import content_length, header, respond


def test_respond_sends_the_start_then_the_whole_body() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [(b"content-type", b"text/plain"), content_length(b"hello")]
    asyncio.run(respond(send, 201, headers, b"hello"))
    assert sent == [
        {"type": "http.response.start", "status": 201, "headers": headers},
        {"type": "http.response.body", "body": b"hello"},
    ]
    assert content_length(b"hello") == (b"content-length", b"5")


def test_header_is_the_first_value_of_a_name_or_empty() -> None:
    scope = {"headers": [(b"accept", b"a"), (b"content-type", b"x"), (b"accept", b"b")]}
    assert header(scope, b"accept") == b"a"
    assert header(scope, b"if-none-match") == b""
    assert header({}, b"accept") == b""
