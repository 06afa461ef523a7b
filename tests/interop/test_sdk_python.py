"""The Python SDK (`agentrouter_sdk`) and `tare`, against the real server and the error-forcing
peer: the behaviour every SDK shares (see peer.py), in Python."""

from __future__ import annotations

import json
import os
import sys
import time
import unicodedata
from pathlib import Path
from typing import Any

import httpx
import pytest

import agentrouter.auth.v1.auth_pb2
from agentrouter_sdk import AgentRouterError, Client, __version__
from agentrouter_sdk.cli import main as tare
from tars.auth.v1 import auth_pb2
from tests.integration.serverproc import ServerProcess

from .peer import METHOD_PATH, PEER_KID, Peer, run_measured

pytestmark = pytest.mark.integration
TARE = Path(sys.executable).parent / "tare"
# A client that bounds what it reads holds a few MiB of answer; one that does not, hundreds.
MEMORY_BOUND_MIB = 200
# The oversized answers of the peer (see peer.py), each larger than the default limit.
OVERSIZED = ("big/100", "chunked/100", "bomb/300", "bigerror/100", "errorbomb/300")


def served_kids(server: ServerProcess) -> list[str]:
    document = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    return [key["kid"] for key in document["keys"]]


def requests_to(peer: Peer) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = httpx.get(f"{peer.url}/_requests", timeout=10).json()
    return recorded


def test_get_jwks_returns_the_served_keys(server: ServerProcess) -> None:
    with Client(base_url=server.base_url, api_key="sk-test") as client:
        response = client.auth.get_jwks(auth_pb2.GetJWKSRequest())
    assert [key.kid for key in response.keys] == served_kids(server)
    assert isinstance(response, auth_pb2.GetJWKSResponse)


def test_the_sdk_messages_are_the_contracts(server: ServerProcess) -> None:
    """The SDK carries its own generated copy; in a process that also has the server's code,
    both register the same descriptors once and share the classes."""
    sdk_class: object = auth_pb2.GetJWKSResponse
    assert sdk_class is agentrouter.auth.v1.auth_pb2.GetJWKSResponse
    assert auth_pb2.DESCRIPTOR.name == "agentrouter/auth/v1/auth.proto"


@pytest.mark.parametrize("prefix", ["/edge/api", "/edge/api/"])
def test_a_call_is_a_connect_get_under_the_base_urls_path(peer: Peer, prefix: str) -> None:
    with Client(base_url=peer.url + prefix, api_key="sk-123") as client:
        response = client.auth.get_jwks(auth_pb2.GetJWKSRequest())
        client.auth.get_jwks(auth_pb2.GetJWKSRequest())
    assert [key.kid for key in response.keys] == [PEER_KID]
    first, second = requests_to(peer)
    assert first["method"] == "GET"
    assert first["path"] == "/edge/api" + METHOD_PATH
    assert "encoding=proto" in first["query"]
    assert second["query"] == first["query"]  # a stable URL that HTTP caches can key on
    headers = first["headers"]
    assert headers["authorization"] == "Bearer sk-123"
    assert headers["user-agent"].startswith(f"agentrouter-sdk-python/{__version__}")
    assert headers["connect-timeout-ms"] == "10000"


@pytest.mark.parametrize("api_key", [None, ""])
def test_no_api_key_sends_no_authorization(peer: Peer, api_key: str | None) -> None:
    with Client(base_url=peer.url, api_key=api_key) as client:
        client.auth.get_jwks()
    (request,) = requests_to(peer)
    assert "authorization" not in request["headers"]


def test_the_default_timeout_and_a_per_call_override(peer: Peer) -> None:
    with Client(base_url=peer.url, timeout=2.5) as client:
        client.auth.get_jwks()
        client.auth.get_jwks(timeout=0.75)
    default, override = requests_to(peer)
    assert default["headers"]["connect-timeout-ms"] == "2500"
    assert override["headers"]["connect-timeout-ms"] == "750"


def test_a_call_slower_than_its_timeout_fails_deadline_exceeded(peer: Peer) -> None:
    started = time.monotonic()
    with (
        Client(base_url=f"{peer.url}/slow/3000", timeout=10) as client,
        pytest.raises(AgentRouterError) as err,
    ):
        client.auth.get_jwks(timeout=0.3)
    assert err.value.code == "deadline_exceeded"
    assert time.monotonic() - started < 2.5  # well before the peer answers


@pytest.mark.parametrize("code", ["unavailable", "not_found", "permission_denied"])
def test_errors_carry_the_connect_code_and_message(peer: Peer, code: str) -> None:
    with (
        Client(base_url=f"{peer.url}/fail/{code}") as client,
        pytest.raises(AgentRouterError) as err,
    ):
        client.auth.get_jwks()
    assert err.value.code == code
    assert err.value.message == f"forced {code}"
    assert str(err.value) == f"{code}: forced {code}"


@pytest.mark.parametrize(
    "base_url",
    ["", "127.0.0.1:8080", "ftp://host", "http://", "http:///x", "http://host:port",
     "http://h/?q=1", "http://h/#f", "http://user:secret@h/"],
)  # fmt: skip
def test_a_bad_base_url_is_refused_in_one_line(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url") as err:
        Client(base_url=base_url)
    assert "\n" not in str(err.value)
    assert "secret" not in str(err.value)


def test_tare_takes_its_global_flags_anywhere(
    server: ServerProcess, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTROUTER_BASE_URL", raising=False)
    lines = [
        ["--base-url", server.base_url, "api", "auth", "jwks", "get"],
        ["api", "auth", "jwks", "get", "--base-url", server.base_url],
        ["api", "--base-url", server.base_url, "auth", "jwks", "get", "--timeout", "5"],
    ]
    for argv in lines:
        assert tare(argv) == 0
        printed = json.loads(capsys.readouterr().out)
        assert [key["kid"] for key in printed["keys"]] == served_kids(server)


def test_tare_reports_the_servers_error_in_one_line(
    peer: Peer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["api", "auth", "jwks", "get", "--base-url", f"{peer.url}/fail/permission_denied"]
    assert tare([*argv, "--api-key", "k"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "tare: error: permission_denied: forced permission_denied\n"
    assert captured.out == ""
    assert requests_to(peer)[0]["headers"]["authorization"] == "Bearer k"


def test_tare_needs_a_base_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AGENTROUTER_BASE_URL", raising=False)
    assert tare(["api", "auth", "jwks", "get"]) == 2
    assert "AGENTROUTER_BASE_URL" in capsys.readouterr().err


def test_tare_refuses_a_bad_timeout_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_status:
        tare(["api", "auth", "jwks", "get", "--timeout", "0"])
    assert exit_status.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--timeout" in error


@pytest.mark.parametrize(("where", "kept"), [("port", False), ("host", False), ("same", True)])
def test_the_api_key_never_goes_to_another_origin(peer: Peer, where: str, kept: bool) -> None:
    with Client(base_url=f"{peer.url}/py/redirect/{where}", api_key="k-123.secret") as client:
        response = client.auth.get_jwks()
    assert [key.kid for key in response.keys] == [PEER_KID]
    first, landed = requests_to(peer)
    assert first["headers"]["authorization"] == "Bearer k-123.secret"
    assert (landed["origin"] == first["origin"]) == kept  # the redirect this case is about
    if kept:
        assert landed["headers"].get("authorization") == "Bearer k-123.secret"
    else:
        assert "authorization" not in landed["headers"], f"sent to {landed['origin']}"


def test_a_redirect_from_https_to_http_is_not_followed(peer: Peer) -> None:
    """A plaintext hop could answer anything (a discovery document, a key set): the client
    refuses it, and neither the API key nor the request reaches the http listener. Run apart:
    pyqwest trusts the peer's CA through SSL_CERT_FILE, read at start."""
    env = {**os.environ, "SSL_CERT_FILE": str(peer.ca_file), "TIMEOUT": "10", "API_KEY": "k-1"}
    base_url = f"{peer.tls_url}/py/redirect/plain"
    measured = run_measured([sys.executable, "-c", CALLS, base_url], timeout=60, env=env)
    code, message = json.loads(measured.output)
    assert code == "unavailable", measured.output
    assert "from https to http" in message
    (first,) = requests_to(peer)
    assert first["origin"].startswith("https://")
    assert first["headers"]["authorization"] == "Bearer k-1"


# Calls GetJWKS under each base URL given, with the default limit, and prints one JSON line per
# call: the error's code and message, or "ok".
CALLS = """
import json, os, sys
from agentrouter_sdk import AgentRouterError, Client
for base_url in sys.argv[1:]:
    try:
        timeout, api_key = float(os.environ["TIMEOUT"]), os.environ.get("API_KEY")
        with Client(base_url=base_url, api_key=api_key, timeout=timeout) as c:
            c.auth.get_jwks()
        print(json.dumps(["ok", ""]))
    except AgentRouterError as err:
        print(json.dumps([err.code, err.message[:200]]))
"""


def test_an_oversized_answer_fails_resource_exhausted_in_bounded_memory(peer: Peer) -> None:
    """100 MiB answers (with and without a Content-Length, and as an error) and 300-MiB gzip
    bombs (an answer, an error): each fails resource_exhausted, in a process that never holds
    much of them."""
    urls = [f"{peer.url}/py/{path}" for path in OVERSIZED]
    env = {**os.environ, "TIMEOUT": "60"}
    measured = run_measured([sys.executable, "-c", CALLS, *urls], timeout=120, env=env)
    assert not measured.timed_out, measured.output
    assert measured.returncode == 0, measured.output
    outcomes = [json.loads(line) for line in measured.output.splitlines()]
    assert [outcome[0] for outcome in outcomes] == ["resource_exhausted"] * len(OVERSIZED), outcomes
    assert measured.peak_rss_mib < MEMORY_BOUND_MIB, (
        f"peak RSS {measured.peak_rss_mib:.0f} MiB reading oversized answers"
    )


@pytest.mark.parametrize(
    ("path", "max_response_bytes", "fits"),
    [("big/6", 7 << 20, True), ("bomb/6", 7 << 20, True), ("big/2", 1 << 20, False),
     ("bomb/2", 1 << 20, False), ("bigerror/2", 1 << 20, False)],
)  # fmt: skip
def test_the_response_limit_is_configurable(
    peer: Peer, path: str, max_response_bytes: int, fits: bool
) -> None:
    with Client(base_url=f"{peer.url}/py/{path}", max_response_bytes=max_response_bytes) as client:
        if fits:
            assert [key.kid for key in client.auth.get_jwks().keys] == [PEER_KID]
            return
        with pytest.raises(AgentRouterError) as err:
            client.auth.get_jwks()
    assert err.value.code == "resource_exhausted"
    assert str(max_response_bytes) in err.value.message


@pytest.mark.parametrize("max_response_bytes", [0, -1])
def test_a_bad_response_limit_is_refused(max_response_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_response_bytes"):
        Client(base_url="http://127.0.0.1:1", max_response_bytes=max_response_bytes)


def test_the_deadline_covers_a_dripping_body(peer: Peer) -> None:
    """Headers at once, then a byte every 200 ms (a minute in all): the call's 1-s deadline
    ends it. Run apart, so a client that ignored it would be killed, and fail."""
    env = {**os.environ, "TIMEOUT": "1"}
    measured = run_measured(
        [sys.executable, "-c", CALLS, f"{peer.url}/py/drip/200"], timeout=30, env=env
    )
    assert not measured.timed_out, "the call outlived its deadline while the body dripped"
    assert json.loads(measured.output)[0] == "deadline_exceeded", measured.output


def test_tare_reads_an_oversized_answer_in_bounded_memory(peer: Peer) -> None:
    for path in OVERSIZED:
        argv = [str(TARE), "api", "auth", "jwks", "get", "--base-url", f"{peer.url}/tare/{path}"]
        measured = run_measured(argv, timeout=120, env=dict(os.environ))
        assert not measured.timed_out, path
        assert measured.returncode == 1, f"{path}: {measured.output[:300]}"
        assert measured.output.startswith("tare: error: resource_exhausted: "), measured.output[
            :300
        ]
        assert measured.output.count("\n") == 1, measured.output[:300]
        assert measured.peak_rss_mib < MEMORY_BOUND_MIB, (
            f"{path}: peak RSS {measured.peak_rss_mib:.0f} MiB"
        )


def test_tare_prints_no_control_character_the_server_sends(
    peer: Peer, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["api", "auth", "jwks", "get", "--base-url", f"{peer.url}/hostile/permission_denied"]
    assert tare(argv) == 1
    captured = capsys.readouterr()
    line = captured.err.removesuffix("\n")
    assert "\n" not in line, captured.err
    unsafe = [
        f"U+{ord(c):04X}" for c in line if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
    ]
    assert unsafe == [], f"tare printed control characters {unsafe}: {line!r}"
    assert line.startswith("tare: error: permission_denied: forced"), line
    for visible in ("red", "second line", "evil", "iso", "end"):
        assert visible in line, line
