"""Graceful stop: SIGTERM lets in-flight requests finish, then the process exits 0."""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from .serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv

pytestmark = pytest.mark.integration


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(path)], check=True)
    return path


def test_sigterm_lets_an_in_flight_grpc_stream_finish(keys_dir: Path) -> None:
    requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()

    def outgoing() -> Iterator[reflection_pb2.ServerReflectionRequest]:
        while (item := requests.get()) is not None:
            yield item

    with ServerProcess(serve_argv(keys_dir, "--grace-period", "20s")) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(  # type: ignore[operator]
            outgoing(), timeout=30
        )
        watch = health_pb2_grpc.HealthStub(channel).Watch(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="agentrouter.auth.v1.AuthService"), timeout=30
        )
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        requests.put(ask)
        first = next(stream)  # the call is established and in flight
        server.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        time.sleep(1.0)  # the server is draining now
        requests.put(ask)
        second = next(stream)  # still answered inside the grace period
        requests.put(None)
        assert list(stream) == []
        channel.close()
        assert server.terminate(timeout=30) == 0
    assert first.list_services_response == second.list_services_response
    assert server.events("stopping")


def test_sigterm_lets_an_in_flight_http_request_finish(keys_dir: Path) -> None:
    with ServerProcess(serve_argv(keys_dir, "--grace-period", "20s")) as server:
        head = (
            b"POST /agentrouter.auth.v1.AuthService/GetJWKS HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{"
        )
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=20) as raw:
            raw.sendall(head)  # half the body: the request is in flight
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            raw.sendall(b"}")
            reply = b""
            while chunk := raw.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"keys"' in reply
        assert server.terminate(timeout=30) == 0


def test_sigint_stops_cleanly(keys_dir: Path) -> None:
    with ServerProcess(serve_argv(keys_dir)) as server:
        assert server.terminate(signal.SIGINT) == 0
    assert server.events("stopped")


def test_a_busy_port_is_a_one_line_error_before_serving(keys_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*AGENTROUTER_AUTH, "serve", "--keys-dir", str(keys_dir), "--http-addr",
             f"127.0.0.1:{port}", "--grpc-addr", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"agentrouter-auth: error: --http-addr 127.0.0.1:{port}: Address already in use"
    )
