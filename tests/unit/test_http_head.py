"""http.head: the request head's size and Host, checked before any handler of the HTTP port
(the real server's answers are in tests/integration/test_http_semantics.py and
test_http_limits.py)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.head import MAX_HEAD_BYTES, refusal

JWKS = b"/.well-known/jwks.json"


def scope(
    headers: list[tuple[bytes, bytes]],
    *,
    version: str = "1.1",
    method: str = "GET",
    raw_path: bytes = JWKS,
    query: bytes = b"",
) -> dict[str, Any]:
    return {"type": "http", "method": method, "http_version": version, "path": raw_path.decode(),
            "raw_path": raw_path, "query_string": query, "headers": headers}  # fmt: skip


def head_size(request: dict[str, Any]) -> int:
    """The size of the head a client sent for `request`, written out in full."""
    target = request["raw_path"] + (
        b"?" + request["query_string"] if request["query_string"] else b""
    )
    lines = [request["method"].encode() + b" " + target + b" HTTP/1.1\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in request["headers"]]
    return len(b"".join(lines) + b"\r\n")


HOST = (b"host", b"auth.example")


@pytest.mark.parametrize("query", [b"", b"a=1"])
def test_a_head_of_the_limit_passes_and_one_byte_more_is_431(query: bytes) -> None:
    request = scope([HOST, (b"x-pad", b"")], query=query)
    request["headers"][1] = (b"x-pad", b"a" * (MAX_HEAD_BYTES - head_size(request)))
    assert head_size(request) == MAX_HEAD_BYTES
    assert refusal(request) is None
    request["headers"][1] = (b"x-pad", request["headers"][1][1] + b"a")
    refused = refusal(request)
    assert refused is not None
    assert refused.status == 431


def test_many_header_lines_count_with_their_separators() -> None:
    lines = [(b"x-%03d" % n, b"v" * 655) for n in range(99)]
    request = scope([HOST, *lines])
    assert 99 * 655 < MAX_HEAD_BYTES < head_size(request)  # over only with ": " and CRLF
    refused = refusal(request)
    assert refused is not None
    assert refused.status == 431


@pytest.mark.parametrize(
    "hosts",
    [[], [b"a.example", b"a.example"], [b""], [b"a b"], [b"a.example:8o"], [b"u@a.example"],
     [b"a.example/x"], [b"[::1"], [b"\xff"],
     # A port is a number from 0 to 65535; a Host is one value, not a list (RFC 9110 §5.3).
     [b"a:99999"], [b"a.example:65536"], [b"[::1]:70000"], [b"a:0x50"],
     [b"a:" + b"9" * 40], [b"a,b"], [b"a.example, b.example"], [b"a.example,"]],
)  # fmt: skip
def test_http_1_1_needs_exactly_one_valid_host(hosts: list[bytes]) -> None:
    refused = refusal(scope([(b"host", host) for host in hosts]))
    assert refused is not None
    assert refused.status == 400


@pytest.mark.parametrize(
    "host", [b"a.example", b"A.Example:443", b"127.0.0.1:8080", b"[::1]", b"[::1]:8080",
             b"xn--bcher-kva.example", b"a.example:", b"a.example:65535", b"a:00080"],
)  # fmt: skip
def test_a_valid_host_passes(host: bytes) -> None:
    assert refusal(scope([(b"host", host)])) is None


@pytest.mark.parametrize("version", ["1.0", "1"])  # granian says "1"
def test_http_1_0_may_omit_host_but_not_send_two(version: str) -> None:
    assert refusal(scope([], version=version)) is None
    assert refusal(scope([(b"host", b"")], version=version)) is None  # granian's stand-in
    refused = refusal(scope([HOST, HOST], version=version))
    assert refused is not None
    assert refused.status == 400


def test_http_2_names_its_authority_elsewhere() -> None:
    assert refusal(scope([], version="2")) is None


def answered(app: HttpApp, request: dict[str, Any]) -> tuple[int, dict[bytes, bytes], bytes]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(request, receive, send))
    start, body = sent
    return start["status"], dict(start["headers"]), body["body"]


@pytest.mark.parametrize("path", [JWKS, b"/healthz", b"/agentrouter.auth.v1.AuthService/GetJWKS"])
def test_the_app_refuses_before_any_route_and_closes(http_app: HttpApp, path: bytes) -> None:
    status, headers, body = answered(http_app, scope([], raw_path=path))
    assert (status, headers[b"connection"]) == (400, b"close")
    assert json.loads(body)["code"] == 3
    assert headers[b"content-length"] == str(len(body)).encode()
    big_query = b"x=" + b"a" * MAX_HEAD_BYTES
    status, headers, body = answered(
        http_app, scope([HOST], method="HEAD", raw_path=path, query=big_query)
    )
    assert (status, body) == (431, b"")
    assert answered(http_app, scope([HOST]))[0] == 200
