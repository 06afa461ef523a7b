"""Hostile clients on the HTTP port: idle and slow connections cannot starve the verifiers.

A public endpoint that every verifier depends on must keep answering while one client holds
thousands of connections that send nothing, or send a request body one byte at a time. These
tests open such connections from this process (loopback only, bounded in count and time) while
a normal client fetches the set on fresh connections.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing

from .serverproc import ServerProcess, serve_argv

pytestmark = pytest.mark.integration
JWKS = "/.well-known/jwks.json"
CONNECT = "/agentrouter.auth.v1.AuthService/GetJWKS"
IDLE_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    KeyRing(DirectoryStore(path), Policy()).init(["ES256"])
    return path


@pytest.fixture(scope="module")
def server(keys_dir: Path) -> Iterator[ServerProcess]:
    argv = serve_argv(keys_dir, "--http-idle-timeout", f"{IDLE_TIMEOUT}s",
                      "--http-body-timeout", f"{BODY_TIMEOUT}s")  # fmt: skip
    with ServerProcess(argv) as proc:
        yield proc


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]


def open_slow_bodies(port: int, count: int) -> list[socket.socket]:
    """`count` Connect POSTs that announce a 1,000-byte body and send its first byte only."""
    head = (
        f"POST {CONNECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(head)
        sockets.append(sock)
    return sockets


def is_open(sock: socket.socket) -> bool:
    """True while the server has neither closed the connection nor answered on it."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed its side (EOF after any answer it sent)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def timed_get(port: int) -> float:
    """One GET of the set on a new connection; its latency in seconds (raises on failure)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", JWKS)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    assert response.status == 200, response.status
    assert json.loads(body)["keys"]
    return elapsed


FLOOD_TIMEOUT = 8.0  # long enough to open 3,100 connections on a busy machine, then measure


@pytest.mark.slow
def test_idle_and_slow_connections_do_not_starve_verifiers(keys_dir: Path) -> None:
    argv = serve_argv(keys_dir, "--http-idle-timeout", f"{FLOOD_TIMEOUT}s",
                      "--http-body-timeout", f"{FLOOD_TIMEOUT}s")  # fmt: skip
    with ServerProcess(argv) as server:
        flood(server.http_port)


def flood(port: int) -> None:
    """2,000 idle connections and 1,100 slow bodies, while a verifier fetches the set."""
    opened = time.monotonic()
    idle = open_idle(port, 2000)
    slow = open_slow_bodies(port, 1100)
    stop = threading.Event()

    def trickle() -> None:
        """A byte every 0.5 s on every slow body, as long as the server takes them."""
        while not stop.wait(0.5):
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.setblocking(False)
                    sock.send(b" ")

    trickler = threading.Thread(target=trickle, daemon=True)
    trickler.start()
    try:
        latencies: list[float] = []
        # Measure while every connection is still held: until 1 s before the first timeout.
        while time.monotonic() < opened + FLOOD_TIMEOUT - 1.0 or len(latencies) < 50:
            latencies.append(timed_get(port))
            time.sleep(0.01)
        held_idle = sum(is_open(sock) for sock in idle)
        assert held_idle == len(idle)  # the load was really there while we measured
        # A starved verifier would wait for a slot, which only the idle timeout frees (8 s):
        # every GET answered in well under that means none waited for one. Latency itself is a
        # benchmark's business (make bench), not a test's.
        assert max(latencies) < FLOOD_TIMEOUT / 4, sorted(latencies)[-5:]

        # The idle ones are closed within the idle timeout (from when they connected), the slow
        # bodies answered and closed once the body timeout has passed.
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline and any(not closed_by_server(s) for s in idle + slow):
            time.sleep(0.2)
        assert sum(closed_by_server(s) for s in idle) == len(idle)
        assert sum(closed_by_server(s) for s in slow) == len(slow)
        assert time.monotonic() - opened < 2 * FLOOD_TIMEOUT
        assert timed_get(port) < 1.0
    finally:
        stop.set()
        trickler.join()
        for sock in idle + slow:
            sock.close()


@pytest.mark.slow
def test_keep_alive_connection_is_closed_after_the_idle_timeout(server: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=IDLE_TIMEOUT + 5)
    with sock:
        sock.sendall(f"GET {JWKS} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        while sock.recv(65536):  # the rest of the response, then EOF when the server closes
            pass
        waited = time.monotonic() - answered
    assert IDLE_TIMEOUT - 0.5 <= waited <= IDLE_TIMEOUT + 2.0


@pytest.mark.slow
def test_slow_headers_are_cut_at_the_idle_timeout(server: ServerProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=IDLE_TIMEOUT + 5)
    started = time.monotonic()
    with sock:
        sock.sendall(b"GET " + JWKS.encode() + b" HTTP/1.1\r\n")
        with contextlib.suppress(OSError):
            for _ in range(int(IDLE_TIMEOUT * 4) + 8):  # a header byte every 0.5 s
                sock.sendall(b"X")
                time.sleep(0.5)
        assert closed_by_server(sock)
    assert time.monotonic() - started <= IDLE_TIMEOUT + 2.0


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [(CONNECT, 504, "deadline_exceeded")],  # Connect's own status for deadline_exceeded
)
@pytest.mark.slow
def test_a_slow_body_is_answered_in_protocol_and_closed(
    server: ServerProcess, path: str, status: int, code: str
) -> None:
    sock = open_slow_bodies(server.http_port, 1)[0]
    started = time.monotonic()
    with sock:
        sock.settimeout(BODY_TIMEOUT + 5)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    elapsed = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head
    assert json.loads(body)["code"] == code
    assert BODY_TIMEOUT - 0.5 <= elapsed <= BODY_TIMEOUT + 2.0


@pytest.mark.slow
def test_above_the_connection_cap_new_clients_wait_at_most_one_idle_timeout(
    keys_dir: Path,
) -> None:
    argv = serve_argv(keys_dir, "--http-idle-timeout", "2s", "--max-connections", "64")
    with ServerProcess(argv) as proc:
        idle = open_idle(proc.http_port, 200)  # beyond the cap: the rest wait in the backlog
        try:
            latency = timed_get(proc.http_port)
        finally:
            for sock in idle:
                sock.close()
        assert latency < 2.0 * 4 + 3  # bounded by idle timeouts, not held for ever
        assert timed_get(proc.http_port) < 1.0


def test_http2_is_opt_in(keys_dir: Path) -> None:
    """h2c by prior knowledge only with --http2 on (HTTP/1.1 alone has the idle timeout)."""
    with (
        ServerProcess(serve_argv(keys_dir)) as proc,
        httpx.Client(http1=False, http2=True, timeout=5) as client,
        pytest.raises(httpx.HTTPError),
    ):
        client.get(proc.base_url + JWKS)
    with ServerProcess(serve_argv(keys_dir, "--http2", "on")) as proc:
        with httpx.Client(http1=False, http2=True, timeout=5) as client:
            response = client.get(proc.base_url + JWKS)
        assert response.status_code == 200
        assert response.http_version == "HTTP/2"
        proc.terminate(signal.SIGTERM)


HEAD_LIMIT = 64 * 1024  # README, Limits: a request head above 64 KiB is answered 431


def head_of(size: int, lines: int) -> bytes:
    """A GET of the set whose head (request line to the blank line) is exactly `size` bytes,
    its padding spread over `lines` header lines."""
    start = f"GET {JWKS} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n".encode()
    padding = size - len(start) - 2 - lines * len(b"X-Pad-00: \r\n")
    assert padding >= lines
    values = [padding // lines + (1 if n < padding % lines else 0) for n in range(lines)]
    fields = b"".join(b"X-Pad-%02d: %s\r\n" % (n, b"a" * v) for n, v in enumerate(values))
    head = start + fields + b"\r\n"
    assert len(head) == size
    return head


def status_of(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


@pytest.mark.parametrize("lines", [1, 20, 90])
def test_a_request_head_of_the_limit_is_served(server: ServerProcess, lines: int) -> None:
    assert status_of(server.http_port, head_of(HEAD_LIMIT, lines)) == 200


@pytest.mark.parametrize("lines", [1, 20, 90])
@pytest.mark.parametrize("size", [HEAD_LIMIT + 1, 70_000, 90_000, 100_000, 110_000])
def test_a_request_head_above_the_limit_is_431(
    server: ServerProcess, size: int, lines: int
) -> None:
    status = status_of(server.http_port, head_of(size, lines))
    assert status == 431, f"a {size}-byte head in {lines} header lines answered {status}"
    assert timed_get(server.http_port) < 1.0
