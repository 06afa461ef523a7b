"""Hostile HTTP/2 clients against the gRPC listener: streams, calls and connections are bounded.

The hostile traffic comes from `HostileClient`, h2 over a plain socket, doing what a grpcio
client never would; the legitimate traffic from grpcio. The first tests run the real server
with its default limits; those whose defaults are too long for a test run the listener
in-process with small `GrpcLimits`.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jwcrypto import jwk

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.config import GrpcLimits
from agentrouter_auth.snapshot import render

from .serverproc import (
    AGENTROUTER_AUTH,
    ServerProcess,
    grpc_listener,
    serve_argv,
)

pytestmark = pytest.mark.integration
DEFAULTS = GrpcLimits()
GET_JWKS = "/agentrouter.auth.v1.AuthService/GetJWKS"
MAX_CONCURRENT_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
REFUSED_STREAM = h2.errors.ErrorCodes.REFUSED_STREAM
# grpc-status values, as they appear in trailers.
INVALID_ARGUMENT, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL = "3", "4", "8", "13"


def message(payload: bytes, *, announced: int | None = None) -> bytes:
    """A gRPC length-prefixed message; `announced` claims another length than is sent."""
    length = len(payload) if announced is None else announced
    return b"\x00" + length.to_bytes(4, "big") + payload


class HostileClient:
    """A raw HTTP/2 client: h2 over a plain socket on loopback.

    Received bytes go to h2 one frame at a time and stop at GOAWAY (h2 rejects what follows
    it), so a GOAWAY is never lost behind the frames sent with it."""

    def __init__(self, port: int, path: str = GET_JWKS) -> None:
        self.port = port
        self.path = path
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        config = h2.config.H2Configuration(client_side=True)
        self.conn = h2.connection.H2Connection(config)
        self.settings: dict[int, int] = {}
        self.status: dict[int, str] = {}  # stream id -> grpc-status of its answer
        self.resets: dict[int, int] = {}  # stream id -> error code of the server's RST_STREAM
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self._next_stream = 1
        self._buffer = bytearray()
        self.conn.initiate_connection()
        self.flush()
        self.read_until(lambda: bool(self.settings), timeout=10)
        assert self.settings or self.closed, "the server sent no SETTINGS"

    def ignore_stream_limit(self) -> None:
        """Open streams beyond the server's MAX_CONCURRENT_STREAMS, as h2 would not."""
        self.conn.remote_settings.max_concurrent_streams = 2**31 - 1
        self.conn.remote_settings.acknowledge()

    def open_stream(self, body: bytes | None = None, *, end_stream: bool = False) -> int:
        """Start a call (HEADERS), with `body` as DATA if given; queue it for `flush`."""
        stream = self._next_stream
        self._next_stream += 2
        headers = [(":method", "POST"), (":scheme", "http"), (":path", self.path),
                   (":authority", f"127.0.0.1:{self.port}"), ("te", "trailers"),
                   ("content-type", "application/grpc")]  # fmt: skip
        self.conn.send_headers(stream, headers, end_stream=end_stream and body is None)
        if body is not None:
            self.conn.send_data(stream, body, end_stream=end_stream)
        return stream

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(self.conn.data_to_send())

    def answered(self) -> set[int]:
        """Streams that got a grpc-status or a RST_STREAM."""
        return set(self.status) | set(self.resets)

    def read_until(self, done: Callable[[], bool], timeout: float) -> None:
        """Read until `done()`, the connection closes, or `timeout` seconds pass."""
        deadline = time.monotonic() + timeout
        while not done() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self._feed(data)

    def drain(self) -> None:
        """Read what has arrived, without waiting."""
        self.sock.settimeout(0)
        try:
            while not self.closed:
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                self._feed(data)
        except BlockingIOError:
            pass
        except OSError:
            self.closed = True

    def close(self) -> None:
        self.sock.close()

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= 9 and self.goaway is None:
            size = 9 + int.from_bytes(self._buffer[:3], "big")
            if len(self._buffer) < size:
                return
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            for event in self.conn.receive_data(frame):
                self._on(event)
            self.flush()  # h2's answers: SETTINGS and PING acknowledgements

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.settings[code] = change.new_value
        elif isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            status = dict(event.headers).get(b"grpc-status")
            if status is not None and event.stream_id is not None:
                self.status[event.stream_id] = status.decode()
        elif isinstance(event, h2.events.StreamReset) and event.stream_id is not None:
            self.resets[event.stream_id] = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`agentrouter-auth serve` with its default limits."""
    keys_dir = tmp_path_factory.mktemp("grpc-limits") / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    with ServerProcess(serve_argv(keys_dir)) as running:
        yield running


def test_streams_above_the_advertised_limit_are_refused(server: ServerProcess) -> None:
    client = HostileClient(server.port)
    assert client.settings.get(MAX_CONCURRENT_STREAMS) == DEFAULTS.max_streams
    client.ignore_stream_limit()
    extra = 50
    for _ in range(DEFAULTS.max_streams + extra):
        client.open_stream()  # HEADERS only: a call that never sends its request
    client.flush()

    def refused() -> int:
        return sum(code == REFUSED_STREAM for code in client.resets.values())

    client.read_until(lambda: refused() >= extra, timeout=10)
    client.close()
    assert refused() >= extra
    assert not client.closed  # refused streams, not a dropped connection


def test_incomplete_idle_and_malformed_calls_are_answered(server: ServerProcess) -> None:
    client = HostileClient(server.port)
    truncated = client.open_stream(message(b"ab", announced=100), end_stream=True)
    empty = client.open_stream(end_stream=True)  # HEADERS with END_STREAM, no message
    garbage = client.open_stream(message(b"\xff" * 5), end_stream=True)
    oversized = client.open_stream(message(b"0123456789", announced=DEFAULTS.max_message_size + 1))
    idle = client.open_stream()  # HEADERS, then nothing
    client.flush()
    streams = {truncated, empty, garbage, oversized, idle}
    client.read_until(lambda: streams <= set(client.status), DEFAULTS.request_timeout + 5)
    client.close()
    assert client.status == {
        truncated: INTERNAL,
        empty: INTERNAL,
        garbage: INVALID_ARGUMENT,
        oversized: RESOURCE_EXHAUSTED,
        idle: DEADLINE_EXCEEDED,
    }
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    for code in ("INTERNAL", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED"):  # answered, so counted
        assert f'code="{code}",method="GetJWKS",protocol="grpc"' in metrics


def test_a_rapid_reset_client_is_disconnected_and_others_are_served(
    server: ServerProcess,
) -> None:
    calls, failures = 0, list[grpc.StatusCode]()
    stop = threading.Event()

    def legitimate() -> None:
        nonlocal calls
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            while not stop.is_set() or (calls == 0 and not failures):
                try:
                    stub.GetJWKS(auth_pb2.GetJWKSRequest(), timeout=10)
                except grpc.RpcError as err:
                    failures.append(err.code())
                else:
                    calls += 1  # answered calls only
                stop.wait(0.01)

    thread = threading.Thread(target=legitimate)
    thread.start()
    try:
        client = HostileClient(server.port)
        for _ in range(200):  # up to 20,000 HEADERS + RST_STREAM pairs
            for _ in range(100):
                stream = client.open_stream()
                client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
            client.flush()
            client.drain()
            if client.closed or client.goaway:
                break
        client.read_until(lambda: client.goaway is not None, timeout=5)
        client.close()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert client.closed or client.goaway is not None
    assert server.events("grpc_connection_reset_flood")
    assert calls > 0
    assert failures == []


def test_an_old_connection_gets_goaway_then_closes(key_pool: list[jwk.JWK]) -> None:
    limits = GrpcLimits(max_connection_age=1, max_connection_age_grace=1, request_timeout=60)
    with grpc_listener(render(key_pool[:1]), limits) as port:
        client = HostileClient(port)
        client.open_stream()  # a call in progress: the connection is never idle
        client.flush()
        client.read_until(lambda: client.goaway is not None, timeout=10)
        client.read_until(lambda: False, timeout=10)
        client.close()
    assert client.goaway is not None
    assert client.goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert client.closed  # once the grace period ended the call


def test_an_idle_connection_gets_goaway(key_pool: list[jwk.JWK]) -> None:
    with grpc_listener(render(key_pool[:1]), GrpcLimits(idle_timeout=1)) as port:
        client = HostileClient(port)
        client.read_until(lambda: client.goaway is not None, timeout=10)
        client.close()
    assert client.goaway is not None


def test_calls_above_the_process_limit_are_refused(key_pool: list[jwk.JWK]) -> None:
    limits = GrpcLimits(max_calls=4, request_timeout=60)
    with grpc_listener(render(key_pool[:1]), limits) as port:
        client = HostileClient(port)
        for _ in range(6):
            client.open_stream()  # calls that hold their slot: they never send a request
        client.flush()
        client.read_until(lambda: len(client.status) >= 2, timeout=10)
        client.read_until(lambda: False, timeout=0.5)
        client.close()
    assert sorted(client.status.values()) == [RESOURCE_EXHAUSTED, RESOURCE_EXHAUSTED]


def test_streaming_calls_work_and_an_idle_request_stream_times_out(
    key_pool: list[jwk.JWK],
) -> None:
    more = threading.Event()

    def requests() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        more.wait(timeout=30)  # then send nothing more, without closing the stream

    with (
        grpc_listener(render(key_pool[:1]), GrpcLimits(request_timeout=1)) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        # typeshed's grpcio-health-checking and grpcio-reflection stubs omit client methods.
        watch = health_pb2_grpc.HealthStub(channel).Watch(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        first_status = next(watch).status
        watch.cancel()
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(requests(), timeout=20)  # type: ignore[operator]
        names = {service.name for service in next(replies).list_services_response.service}
        with pytest.raises(grpc.RpcError) as idle:
            next(replies)
        more.set()
    assert first_status == health_pb2.HealthCheckResponse.SERVING
    assert "agentrouter.auth.v1.AuthService" in names
    assert idle.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "request message was not received within 1s" in str(idle.value.details())


def test_limits_flags_reach_every_worker(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`--grpc-max-streams` set on the command line is what a worker advertises."""
    keys_dir = tmp_path_factory.mktemp("flags") / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    argv = serve_argv(keys_dir, "--grpc-max-streams", "7", "--grpc-request-timeout", "1s")
    with ServerProcess(argv) as server:
        client = HostileClient(server.port)
        assert client.settings[MAX_CONCURRENT_STREAMS] == 7
        stream = client.open_stream()  # HEADERS only: the request never comes
        client.flush()
        client.read_until(lambda: stream in client.answered(), timeout=10)
        assert client.status.get(stream) == DEADLINE_EXCEEDED
