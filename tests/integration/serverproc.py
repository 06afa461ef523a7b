"""Run the real `agentrouter-auth serve` (or `make run`) as a child process on loopback, or the
real gRPC listener in-process; check that a bad configuration is refused in one line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from agentrouter_auth.config import GrpcLimits
from agentrouter_auth.grpc.server import start_grpc_server
from agentrouter_auth.service import AuthService
from agentrouter_auth.snapshot import Snapshot, StaticKeySet

LISTENING = re.compile(
    r"HTTP listening on (?P<http_host>\S+):(?P<http_port>\d+), "
    r"gRPC listening on (?P<host>\S+):(?P<port>\d+)"
)
REPO = Path(__file__).resolve().parent.parent.parent
AGENTROUTER_AUTH = [sys.executable, "-m", "agentrouter_auth"]


def serve_argv(keys_dir: Path | str, *extra: str) -> list[str]:
    """`agentrouter-auth serve` on free loopback ports for both listeners."""
    return [*AGENTROUTER_AUTH, "serve", "--keys-dir", str(keys_dir), "--grpc-addr", "127.0.0.1:0",
            "--http-addr", "127.0.0.1:0", *extra]  # fmt: skip


def sign_token(keys_dir: Path | str, alg: str, claims: Mapping[str, Any], *options: str) -> str:
    """A token from `agentrouter-auth token sign` (`options`: e.g. --issuer, a policy)."""
    argv = [*AGENTROUTER_AUTH, "token", "sign", "--keys-dir", str(keys_dir), "--alg", alg,
            "--claims", json.dumps(claims), *options]  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()


class ServerProcess:
    """A started, ready server: `port` and `http_port` are the ports it reported; `lines` is
    its stderr so far. Entering waits until /readyz answers 200 (with `ready=False`, only until
    it reports its listeners)."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        startup_timeout: float = 60.0,
        env: Mapping[str, str] | None = None,
        tls: ssl.SSLContext | None = None,
        ready: bool = True,
    ) -> None:
        self.argv = list(argv)
        self._ready = ready
        self.scheme = "https" if tls is not None else "http"
        self._verify: ssl.SSLContext | bool = tls if tls is not None else True
        self.env = dict(env) if env is not None else None
        self.startup_timeout = startup_timeout
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.port = 0
        self.http_port = 0
        self.returncode: int | None = None

    def __enter__(self) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.argv,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # kill() reaches the whole group (make and its children)
            env=self.env,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.port:
            line = self._next_line(deadline)
            match = LISTENING.search(line)
            if match:
                self.port = int(match["port"])
                self.http_port = int(match["http_port"])
        if self._ready:
            self._wait_ready(deadline)
        return self

    def drain(self) -> list[str]:
        """Collect what the server has printed so far, without waiting; return all lines."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                self._queue.put(None)  # keep the end marker for terminate()
                return self.lines
            self.lines.append(line)

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The server's JSON log records so far (only those of `event`, if given)."""
        self.drain()
        records = []
        for line in self.lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # text lines, e.g. from a child that predates logging set-up
            if isinstance(record, dict) and (event is None or record.get("event") == event):
                records.append(record)
        return records

    @property
    def base_url(self) -> str:
        """The HTTP listener's URL."""
        return f"http://127.0.0.1:{self.http_port}"

    def _wait_ready(self, deadline: float) -> None:
        while True:
            try:
                url = f"{self.scheme}://127.0.0.1:{self.http_port}/readyz"
                with httpx.Client(timeout=2, verify=self._verify) as client:
                    if client.get(url).status_code == 200:
                        return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                raise TimeoutError(f"server never became ready: {self.lines}")
            time.sleep(0.05)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def _next_line(self, deadline: float) -> str:
        try:
            line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.kill()
            raise TimeoutError(f"server printed no listening line: {self.lines}") from None
        if line is None:
            self.proc.wait()
            raise RuntimeError(f"server exited {self.proc.returncode}: {self.lines}")
        self.lines.append(line)
        return line

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the started process and wait; return the exit status and collect all output.

        Only the leader is signalled, as an orchestrator signals a container's first process:
        the server's supervisor stops its workers itself (make forwards SIGTERM to it). A
        signal to the whole group would also reach the workers directly, and a worker that
        exits before the supervisor has seen the signal looks like a crash to be respawned."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        self.returncode = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + 5
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return self.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.returncode is None:
            self.kill()


def refused_in_one_line(argv: Sequence[str], timeout: float = 60) -> str:
    """Run `argv`, expect it to fail before serving, and return its one line of stderr.

    The command runs in a session of its own, and a command that does not fail in time is
    killed with every process it started: a server that wrongly went on to serve must not
    outlive the test with its workers."""
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{argv[:3]} was not refused within {timeout:g}s") from None
    result = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "listening" not in lines[0]
    return lines[0]


@contextlib.contextmanager
def grpc_listener(snapshot: Snapshot, limits: GrpcLimits | None = None) -> Iterator[int]:
    """The gRPC listener alone, in-process on a free loopback port, serving `snapshot` within
    `limits`, its event loop in a background thread. Yields the port."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    service = AuthService(StaticKeySet(snapshot))
    started = start_grpc_server(service, "127.0.0.1", 0, limits=limits)
    server = asyncio.run_coroutine_threadsafe(started, loop).result(timeout=30)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


T = TypeVar("T")


def eventually(probe: Callable[[], T], accept: Callable[[T], bool], within: float = 15) -> T:
    """Poll `probe` until `accept` holds or `within` seconds pass; return the last value (a
    bounded wait for something the server must do, asserted by the caller)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if accept(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
