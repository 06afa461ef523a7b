"""http.recording: every request of the HTTP listener is counted and logged with the code its
client read, the RPC and the route template it matched, never its raw path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from agentrouter_auth import metrics
from agentrouter_auth.http.dispatch import CONNECT, GRPC_WEB, REST
from agentrouter_auth.http.recording import Protocol, Recorded
from agentrouter_auth.status import Code
from agentrouter_auth.transcode.errors import status_json

JWKS_ROUTE = ("GetJWKS", "/.well-known/jwks.json")


def answering(
    status: int,
    body: bytes = b"",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    route: tuple[str, str] | None = None,
    trailers: bytes | None = None,
) -> Any:
    """An ASGI app that names `route` and answers so."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if route is not None:
            scope["route"] = route
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": body, "more_body": trailers is not None})
        if trailers is not None:
            await send({"type": "http.response.body", "body": trailers})

    return app


def count(protocol: str, method: str, code: str) -> float:
    value: float = metrics.REQUESTS.labels(protocol, method, code)._value.get()
    return value


def record(
    app: Any, protocol: Protocol, path: str = "/secret-token-in-the-path", method: str = "GET"
) -> list[Any]:
    """Run `app` recorded; return what reached the client's `send`."""
    recorder = metrics.Recorder(("rest", "connect", "grpcweb"))
    recorded = Recorded(app, protocol, recorder, access_log=True)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(recorded(scope, None, send))  # type: ignore[arg-type]
    recorder.flush()
    return sent


@pytest.mark.parametrize(
    ("protocol", "app", "method", "code"),
    [
        (REST, answering(200, b"{}", route=JWKS_ROUTE), "GetJWKS", "OK"),
        (REST, answering(404, status_json(Code.NOT_FOUND, "no route")), "unknown", "NOT_FOUND"),
        (REST, answering(400, status_json(Code.OUT_OF_RANGE, "x"), route=JWKS_ROUTE),
         "GetJWKS", "OUT_OF_RANGE"),
        (REST, answering(405, route=("", "/.well-known/jwks.json")), "unknown", "UNIMPLEMENTED"),
        (CONNECT, answering(429, b'{"code":"resource_exhausted"}', route=JWKS_ROUTE),
         "GetJWKS", "RESOURCE_EXHAUSTED"),
        (CONNECT, answering(404), "unknown", "UNIMPLEMENTED"),
        (GRPC_WEB, answering(200, headers=[(b"grpc-status", b"3")], route=JWKS_ROUTE),
         "GetJWKS", "INVALID_ARGUMENT"),
        (GRPC_WEB, answering(200, b"\x00\x00\x00\x00\x00", route=JWKS_ROUTE,
                             trailers=b"\x80\x00\x00\x00\x10grpc-status: 14\r\n"),
         "GetJWKS", "UNAVAILABLE"),
    ],
)  # fmt: skip
def test_each_request_is_counted_with_the_code_its_client_read(
    protocol: Protocol, app: Any, method: str, code: str
) -> None:
    before = count(protocol.name, method, code)
    record(app, protocol)
    assert count(protocol.name, method, code) - before == 1


def test_the_answer_reaches_the_client_unchanged() -> None:
    sent = record(answering(200, b"body", headers=[(b"x", b"y")], trailers=b"more"), REST)
    assert [m.get("body") for m in sent] == [None, b"body", b"more"]
    assert sent[0]["headers"] == [(b"x", b"y")]


def test_a_304_is_counted_as_not_modified() -> None:
    before = metrics.NOT_MODIFIED._value.get()
    record(answering(304, route=JWKS_ROUTE), REST)
    assert metrics.NOT_MODIFIED._value.get() - before == 1


def test_the_access_log_names_the_route_template_never_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="agentrouter-auth"):
        record(answering(200, route=JWKS_ROUTE), REST, path="/.well-known/jwks.json")
        record(answering(404), REST, path="/secret-token-in-the-path", method="BREW")
    lines = [(r.route, r.status, r.code, r.method, r.protocol) for r in caplog.records]  # type: ignore[attr-defined]
    assert lines == [("/.well-known/jwks.json", 200, "OK", "GET", "rest"),
                     ("unrouted", 404, "NOT_FOUND", "OTHER", "rest")]  # fmt: skip
    assert "secret-token" not in caplog.text


def test_an_app_that_fails_is_not_counted() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    before = count("rest", "unknown", "UNKNOWN")
    with pytest.raises(RuntimeError):
        record(failing, REST)
    assert count("rest", "unknown", "UNKNOWN") == before
