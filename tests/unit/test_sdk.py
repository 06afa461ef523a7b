"""The SDK's client contract, against a tiny HTTP peer that records what it receives."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

import agentrouter.auth.v1.auth_pb2
from agentrouter_sdk import AgentRouterError, Client
from agentrouter_sdk.cli import main as tare


class Peer(BaseHTTPRequestHandler):
    """Answers every request with the configured Connect error, after an optional delay."""

    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []
    delay: ClassVar[float] = 0.0
    error: ClassVar[dict[str, str]] = {"code": "permission_denied", "message": "nope"}

    def do_GET(self) -> None:
        Peer.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        time.sleep(Peer.delay)
        body = json.dumps(Peer.error).encode()
        self.send_response(403)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a client that timed out and hung up is what the timeout test wants


@pytest.fixture
def peer() -> Iterator[str]:
    Peer.seen.clear()
    Peer.delay = 0.0
    server = QuietServer(("127.0.0.1", 0), Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_tars_alias_is_the_generated_module() -> None:
    import tars.auth.v1.auth_pb2  # noqa: PLC0415
    from tars.auth.v1 import auth_pb2  # noqa: PLC0415

    assert auth_pb2 is agentrouter.auth.v1.auth_pb2
    assert tars.auth.v1.auth_pb2 is agentrouter.auth.v1.auth_pb2


def test_get_jwks_sends_the_api_key_as_a_bearer_token_over_connect_get(peer: str) -> None:
    with Client(base_url=peer, api_key="sk-123") as client, pytest.raises(AgentRouterError) as err:
        client.auth.get_jwks()
    assert err.value.code == "permission_denied"
    assert err.value.message == "nope"
    assert str(err.value) == "permission_denied: nope"
    ((path, headers),) = Peer.seen
    assert path.startswith("/agentrouter.auth.v1.AuthService/GetJWKS?")
    assert headers["authorization"] == "Bearer sk-123"
    with Client(base_url=peer, api_key="sk-123") as client, pytest.raises(AgentRouterError):
        client.auth.get_jwks()
    assert Peer.seen[1][0] == path  # a stable URL (no gzip timestamp) HTTP caches can key on


def test_no_api_key_sends_no_authorization(peer: str) -> None:
    with Client(base_url=peer) as client, pytest.raises(AgentRouterError):
        client.auth.get_jwks()
    assert "authorization" not in Peer.seen[0][1]


def test_the_timeout_is_enforced(peer: str) -> None:
    Peer.delay = 2.0
    started = time.monotonic()
    with (
        Client(base_url=peer, api_key="k", timeout=0.3) as client,
        pytest.raises(AgentRouterError) as err,
    ):
        client.auth.get_jwks()
    assert err.value.code == "deadline_exceeded"
    assert time.monotonic() - started < 1.9


def test_base_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        Client(base_url="127.0.0.1:8080")


def test_tare_reports_the_servers_error(peer: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tare(["--base-url", peer, "--api-key", "k", "api", "auth", "jwks", "get"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "tare: error: permission_denied: nope\n"
    assert captured.out == ""


def test_tare_needs_a_base_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTROUTER_BASE_URL", raising=False)
    assert tare(["api", "auth", "jwks", "get"]) == 2
    assert "AGENTROUTER_BASE_URL" in capsys.readouterr().err
