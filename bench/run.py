"""`make bench`: agentrouter-auth against baselines serving the same bytes, in one run.

Every target runs on loopback for the whole run; measurements alternate between targets
(round after round) so drift on a shared machine hits all of them alike, and results are
reported as ratios to baselines measured in the same run. Absolute numbers are printed too,
but only the ratios are meant to be compared between runs.

Every server runs on one CPU (`taskset -c 0`, one worker; the Go peers with GOMAXPROCS=1) and
every load generator on another (`taskset -c 1`), so the generator is not what limits a server.
The Go peer (`bench/goserver`, built by `make bench` into `.build/bin/bench-goserver`) serves
the same proto with connect-go + vanguard-go, answering the message agentrouter-auth publishes;
a bare Go net/http server answers its JSON bytes. The run ends with the issue's "Must hold"
list evaluated as PASS/FAIL lines: a report, so a FAIL does not fail the run; a target that
cannot be built or started does.

Two measurements run agentrouter-auth on a PostgreSQL key store, on a throw-away cluster that
`tests/support/postgres.py` starts (Debian's server binaries, installed by `make bench`): REST
from a PostgreSQL-backed ring against the directory-backed one, and REST load spread over three
replicas sharing one ring while they rotate keys.

The set-up it shares with the tests (free ports, KEK files, that PostgreSQL server, seeded
stores) comes from `tests.support`; run it from the repository root as a module:

    python -m bench.run [--duration SECONDS] [--rounds N] [--out bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, Any

import grpc

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.material import generate_key, public_copy
from tests.support import PostgresServer, PostgresUnavailableError, free_port, seed, write_kek

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGETS = Path(__file__).resolve().parent / "targets"
CONCURRENCY = 32
JWKS = "/.well-known/jwks.json"
CONNECT = "/agentrouter.auth.v1.AuthService/GetJWKS"
# The SDKs' requests: a Connect GET names its protocol version in the query, a POST in a header
# (vanguard-go takes a JSON POST without the header for REST, and so answers 404).
CONNECT_GET = CONNECT + "?encoding=json&message=%7B%7D&connect=v1"
GRPC_EMPTY_FRAME = b"\x00\x00\x00\x00\x00"  # uncompressed, zero-length GetJWKSRequest
# A policy that pre-publishes, promotes, retires and deletes a key about every second.
ROTATING_POLICY = [
    "--rotation-period", "2s", "--publish-ahead", "1s", "--retain-after", "1s",
    "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "0s",
    "--stale-while-revalidate", "0s",
]  # fmt: skip
REPLICAS = 3
GO_PEER = ROOT / ".build" / "bin" / "bench-goserver"
SERVER_CPU, LOAD_CPU = "0", "1"
PINNED = (os.cpu_count() or 1) >= 2  # pinned only where there are two CPUs to pin to
"""Servers sharing one PostgreSQL key ring in the rotation-across-replicas measurement."""


@dataclass
class Result:
    """One load measurement."""

    target: str
    tool: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int = 0
    errors: int = 0
    timeouts: int = 0
    """Of the errors, wrk's timeouts: no answer within 2 s (an overloaded machine shows them)."""


@dataclass
class Report:
    """Everything one run measured."""

    duration: float
    rounds: int
    concurrency: int
    machine: dict[str, Any]
    results: dict[str, Result] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)


@dataclass
class Check:
    """One line of the "Must hold" list: what was required, what was measured, whether it held."""

    requirement: str
    measured: str
    passed: bool

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.requirement}: {self.measured}"


# -- processes -------------------------------------------------------------------------------


def on_server_cpu(argv: Sequence[str]) -> list[str]:
    """`argv` pinned to the servers' CPU (its children inherit the affinity)."""
    return ["taskset", "-c", SERVER_CPU, *argv] if PINNED else list(argv)


def on_load_cpu(argv: Sequence[str]) -> list[str]:
    """`argv` pinned to the load generator's CPU."""
    return ["taskset", "-c", LOAD_CPU, *argv] if PINNED else list(argv)


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def wait_for_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            if response.status == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{url} never answered 200")


@contextlib.contextmanager
def process(
    argv: Sequence[str],
    *,
    stderr: int | IO[bytes] = subprocess.DEVNULL,
    **kwargs: Any,  # noqa: ANN401
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        on_server_cpu(argv),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
        **kwargs,
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_mb(pid: int) -> float:
    """Resident memory of `pid` and its children, in MB."""
    total = 0
    for candidate in [pid, *children(pid)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                child = int(stat.parent.name)
                found += [child, *children(child)]
    return found


def worker_rss_mb(pid: int) -> list[float]:
    """RSS of each direct child (granian worker) of `pid`, in MB."""
    sizes = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                sizes.append(rss_mb(int(stat.parent.name)))
    return sizes


# -- key stores ------------------------------------------------------------------------------


def seed_store(path: Path, count: int) -> Path:
    """A store with one active ES256 key and `count - 1` published public keys."""
    published = [public_copy(generate_key("EdDSA" if i % 2 else "ES256")) for i in range(count - 1)]
    seed(DirectoryStore(path), [generate_key("ES256"), *published], created=1)
    return path


@dataclass
class Server:
    """A running agentrouter-auth."""

    proc: subprocess.Popen[bytes]
    http: int
    grpc: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"


@contextlib.contextmanager
def agentrouter_auth(
    store: Path | str, *extra: str, rotation: str = "off", log: Path | None = None
) -> Iterator[Server]:
    """`serve` on free ports for the key store at `store` (a directory or a PostgreSQL URL, the
    KEK among `extra`); its log lines go to `log` if given."""
    http, grpc_port = free_port(), free_port()
    argv = [str(BIN / "agentrouter-auth"), "serve", "--key-store", str(store), "--http-addr",
            f"127.0.0.1:{http}", "--grpc-addr", f"127.0.0.1:{grpc_port}", "--rotation", rotation,
            # HTTP/2 on: the h2c rows need it, and the bare granian baseline runs in the same
            # (auto-detecting) HTTP mode, so every REST ratio compares like with like.
            "--http2", "on", *extra]  # fmt: skip
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("wb")) if log is not None else subprocess.DEVNULL
        proc = stack.enter_context(process(argv, stderr=stderr))
        wait_for_http(f"http://127.0.0.1:{http}/readyz")
        wait_for_port(grpc_port)
        yield Server(proc, http, grpc_port)


def cli(*args: str) -> None:
    """Run an `agentrouter-auth` command; its one-line error if it fails."""
    result = subprocess.run(
        [str(BIN / "agentrouter-auth"), *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"bench: agentrouter-auth {args[0]} {args[1]}: {result.stderr.strip()}")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster on a free loopback port, as the test suite starts one
    (`tests.support`); removed on exit."""
    try:
        server = PostgresServer.create()
    except PostgresUnavailableError as err:
        raise SystemExit(f"bench: {err}") from None
    try:
        yield server
    finally:
        server.destroy()


# -- load tools ------------------------------------------------------------------------------


def wrk(
    target: str,
    url: str,
    duration: float,
    script: Path | None = None,
    *,
    connections: int = CONCURRENCY,
) -> Result:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    if script is not None:
        argv[1:1] = ["-s", str(script)]
    out = subprocess.run(on_load_cpu(argv), capture_output=True, text=True, check=True).stdout
    latency = {
        m[1]: _ms(m[2], m[3]) for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)", out, re.M)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    requests = re.search(r"(\d+) requests in", out)
    return Result(
        target=target,
        tool="wrk (HTTP/1.1)",
        rps=float(_search(r"Requests/sec:\s+([\d.]+)", out)),
        p50_ms=latency.get("50", float("nan")),
        p99_ms=latency.get("99", float("nan")),
        requests=int(requests[1]) if requests else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        errors=sum(int(n) for n in errors.groups()) if errors else 0,
        timeouts=int(errors[4]) if errors else 0,
    )


def h2load(
    target: str,
    url: str,
    duration: float,
    *,
    data: Path | None = None,
    headers: Sequence[str] = (),
    answer_bytes: int = 0,
) -> Result:
    """h2load over h2c. h2load counts HTTP statuses only: a gRPC error is a 200 too, so with
    `answer_bytes` (the framed message's size) every answer whose average body is shorter than
    that counts as an error."""
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        argv = ["h2load", "-t1", f"-c{CONCURRENCY}", "-m1", "-D", str(max(1, round(duration))),
                "--log-file", log.name, url]  # fmt: skip
        if data is not None:
            argv[1:1] = ["-d", str(data)]
        for header in headers:
            argv[1:1] = ["-H", header]
        out = subprocess.run(on_load_cpu(argv), capture_output=True, text=True, check=True).stdout
        durations = sorted(
            int(line.split("\t")[2]) / 1000.0
            for line in Path(log.name).read_text().splitlines()
            if line.count("\t") >= 2
        )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    errors = sum(int(n) for n in failed.groups()) if failed else 0
    if answer_bytes and durations:
        data_bytes = int(_search(r"space savings [\d.]+%\), [\d.]+\w* \((\d+)\) data", out))
        if data_bytes < answer_bytes * len(durations):
            errors = len(durations)  # short answers: errors, not the message
    return Result(
        target=target,
        tool="h2load (h2c)",
        rps=float(_search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)),
        p50_ms=_percentile(durations, 50),
        p99_ms=_percentile(durations, 99),
        requests=len(durations),
        non_2xx=sum(int(n) for n in codes.groups()[1:]) if codes else 0,
        errors=errors,
    )


def _search(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"no {pattern!r} in:\n{text}")
    return match[1]


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _percentile(sorted_values: list[float], percent: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(percent / 100 * (len(sorted_values) - 1)))
    return sorted_values[index]


# -- the run ---------------------------------------------------------------------------------


def ensure_tools() -> None:
    missing = [tool for tool in ("wrk", "h2load", "nginx", "taskset") if shutil.which(tool) is None]
    if not os.access(GO_PEER, os.X_OK):
        missing.append(str(GO_PEER.relative_to(ROOT)))
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)} (make bench installs them)")


def check_answer(url: str, expected: bytes, *, body: bytes | None = None, **headers: str) -> None:
    """One request (a POST if `body` is given): the target answers 200 with `expected`."""
    request = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        status, answer = response.status, response.read()
    if status != 200 or answer != expected:
        raise SystemExit(f"bench: {url} answered {status} and {len(answer)} other bytes")


def grpc_web_status(answer: bytes, message: bytes) -> str | None:
    """The grpc-status of a gRPC-Web unary answer whose first frame is `message`, else None."""
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    if not answer.startswith(frame) or answer[len(frame) : len(frame) + 1] != b"\x80":
        return None
    trailers = answer[len(frame) + 5 :].decode("ascii", "replace")
    for line in trailers.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "grpc-status":
            return value.strip()
    return None


def check_grpc_web(url: str, message: bytes) -> None:
    """One gRPC-Web call (its errors are HTTP 200 too): the message, then grpc-status 0."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=GRPC_EMPTY_FRAME, headers={"Content-Type": "application/grpc-web+proto"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        answer = response.read()
    if grpc_web_status(answer, message) != "0":
        raise SystemExit(f"bench: {url} answered another gRPC-Web body: {answer[-40:]!r}")


def check_grpc(port: int, expected: bytes) -> None:
    """One real grpcio call: the gRPC target answers the right message before it is loaded
    (h2load counts HTTP statuses only)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=5)
    if reply.SerializeToString(deterministic=True) != expected:
        raise SystemExit(f"bench: the gRPC target on port {port} answered the wrong message")


def verify_targets(ours: Server, base: dict[str, str], body: bytes, message: bytes) -> None:
    """Before any load: agentrouter-auth and the Go peer answer every measured protocol with the
    same bytes (the JSON body, the protobuf message, gRPC-Web's frames, gRPC's message through
    grpcio), and the bare Go server answers the JSON body."""
    go_port = int(base["go"].rsplit(":", 1)[1])
    for url, grpc_port in ((ours.base, ours.grpc), (base["go"], go_port)):
        check_answer(url + JWKS, body)
        check_answer(url + CONNECT_GET, body)
        json_post = {"Content-Type": "application/json", "Connect-Protocol-Version": "1"}
        check_answer(url + CONNECT, body, body=b"{}", **json_post)
        proto_post = {"Content-Type": "application/proto", "Connect-Protocol-Version": "1"}
        check_answer(url + CONNECT, message, body=b"", **proto_post)
        check_grpc_web(url + CONNECT, message)
        check_grpc(grpc_port, message)
    check_answer(base["bare_go"] + JWKS, body)


def nginx_conf(workdir: Path, port: int, body: Path) -> Path:
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {workdir};
  proxy_temp_path {workdir};
  fastcgi_temp_path {workdir};
  uwsgi_temp_path {workdir};
  scgi_temp_path {workdir};
  server {{
    listen 127.0.0.1:{port};
    location = {JWKS} {{
      default_type application/json;
      alias {body};
    }}
  }}
}}
"""
    )
    return conf


def replicas_rotating(
    postgres: PostgresServer, kek: Path, work: Path, seconds: float
) -> tuple[Result, dict[str, Any]]:
    """REST load spread over REPLICAS servers sharing one PostgreSQL ring while they rotate a
    key about every second (each with its own wrk, the connections split between them), and
    what their logs say: the steps taken (each must be taken once) and any error logged."""
    dsn = postgres.create_database("bench_replicas")
    cli("keys", "init", "--key-store", dsn, "--kek-file", str(kek), *ROTATING_POLICY)
    logs = [work / f"replica-{index}.log" for index in range(REPLICAS)]
    connections = [CONCURRENCY // REPLICAS + (i < CONCURRENCY % REPLICAS) for i in range(REPLICAS)]
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                agentrouter_auth(dsn, "--kek-file", str(kek), *ROTATING_POLICY, rotation="auto",
                                 log=log)
            )
            for log in logs
        ]  # fmt: skip
        with ThreadPoolExecutor(REPLICAS) as pool:
            loads = [
                pool.submit(wrk, "replica", server.base + JWKS, seconds, connections=count)
                for server, count in zip(servers, connections, strict=True)
            ]
            each = [load.result() for load in loads]
    result = Result(
        target=f"REST while rotating, {REPLICAS} replicas on PostgreSQL",
        tool="wrk (HTTP/1.1), one per replica",
        rps=sum(r.rps for r in each),
        p50_ms=max(r.p50_ms for r in each),  # the slowest replica's
        p99_ms=max(r.p99_ms for r in each),
        requests=sum(r.requests for r in each),
        non_2xx=sum(r.non_2xx for r in each),
        errors=sum(r.errors for r in each),
        timeouts=sum(r.timeouts for r in each),
    )
    facts = {
        "replicas": REPLICAS,
        "seconds": seconds,
        "connections": connections,
        "rps_per_replica": [round(r.rps) for r in each],
        # The servers have stopped (SIGTERM): their logs are complete.
        **rotation_log(logs),
        "non_2xx": result.non_2xx,
        "socket_errors": result.errors,
        "of_which_timeouts": result.timeouts,
    }
    return result, facts


def rotation_log(logs: Sequence[Path]) -> dict[str, int]:
    """What rotating servers logged: keys created, rotation steps, steps taken more than once
    (by two servers), and error records or lines that are not log records (a traceback)."""
    records, text_lines = [], 0
    for log in logs:
        for line in log.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                text_lines += 1  # not a log record: a traceback, say
    steps = Counter(
        (r["kid"], r["from"], r["to"]) for r in records if r.get("event") == "rotation_step"
    )
    return {
        "keys_created": sum(1 for _, _, to in steps if to == "pending"),
        "rotation_steps": sum(steps.values()),
        "steps_taken_twice": sum(1 for count in steps.values() if count > 1),
        "errors_logged": text_lines
        + sum(1 for r in records if r.get("level") in {"error", "critical"}),
    }


def median(results: list[Result]) -> Result:
    """The run with the median rate (its latencies come with it)."""
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--render", action="store_true", help="rewrite latest.md and latest.png from latest.json"
    )
    args = parser.parse_args(argv)
    if args.render:
        document = json.loads((args.out / "latest.json").read_text())
        document["results"] = {k: Result(**v) for k, v in document["results"].items()}
        document["checks"] = [Check(**c) for c in document.get("checks", [])]
        write(Report(**document), args.out)
        return 0
    ensure_tools()
    duration, rounds = args.duration, args.rounds
    report = Report(
        duration=duration,
        rounds=rounds,
        concurrency=CONCURRENCY,
        machine={
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pinned": f"servers on CPU {SERVER_CPU}, load generators on CPU {LOAD_CPU}"
            if PINNED
            else "not pinned (one CPU)",
            "load_average_before": [round(n, 2) for n in os.getloadavg()],
        },
    )
    with tempfile.TemporaryDirectory() as tmp, postgres_cluster() as postgres:
        work = Path(tmp)
        keys = seed_store(work / "keys-3", 3)
        # The same three keys (kids, states and times) in a PostgreSQL ring.
        kek = write_kek(work / "kek")
        ring_db = postgres.create_database("bench_ring")
        cli("keys", "copy", "--from", str(keys), "--to", ring_db, "--kek-file", str(kek))
        with (
            agentrouter_auth(keys) as ours,
            agentrouter_auth(ring_db, "--kek-file", str(kek)) as on_postgres,
        ):
            body = work / "jwks.json"
            body.write_bytes(urllib.request.urlopen(ours.base + JWKS).read())  # noqa: S310
            from_postgres = urllib.request.urlopen(on_postgres.base + JWKS).read()  # noqa: S310
            if from_postgres != body.read_bytes():
                raise SystemExit("bench: the PostgreSQL-backed server serves another set")
            report.extras["postgres"] = {
                "server_version": postgres.execute("SHOW server_version")[0][0],
                "same_body_as_directory": True,
            }
            message = work / "jwks.binpb"
            with grpc.insecure_channel(f"127.0.0.1:{ours.grpc}") as channel:
                stub = auth_pb2_grpc.AuthServiceStub(channel)
                published = stub.GetJWKS(auth_pb2.GetJWKSRequest(), timeout=5)
            message.write_bytes(published.SerializeToString(deterministic=True))
            report.extras["body_bytes"] = len(body.read_bytes())
            frame = work / "grpc-frame.bin"
            frame.write_bytes(GRPC_EMPTY_FRAME)
            post = work / "post.lua"
            post.write_text(
                'wrk.method = "POST"\nwrk.body = "{}"\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
                'wrk.headers["Connect-Protocol-Version"] = "1"\n'
            )
            grpc_web = work / "grpc-web.lua"
            grpc_web.write_text(
                'wrk.method = "POST"\nwrk.body = "\\0\\0\\0\\0\\0"\n'
                'wrk.headers["Content-Type"] = "application/grpc-web+proto"\n'
            )
            env = {**os.environ, "BENCH_BODY": str(body), "BENCH_MESSAGE": str(message)}
            asgi_port, connect_port, grpc_port, nginx_port, go_port, bare_go_port = (
                free_port() for _ in range(6)
            )
            go_env = {**os.environ, "GOMAXPROCS": "1"}
            go_peer = [str(GO_PEER), "-addr"]
            granian = [str(BIN / "granian"), "--interface", "asgi", "--workers", "1", "--no-ws",
                       "--host", "127.0.0.1"]  # fmt: skip
            with (
                process([*granian, "--port", str(asgi_port), "bare_asgi:app"], cwd=TARGETS,
                        env=env),
                process([*granian, "--port", str(connect_port), "bare_connect:app"], cwd=TARGETS,
                        env=env),
                process([sys.executable, "bare_grpc.py", str(grpc_port), str(message)],
                        cwd=TARGETS, env=env),
                process(["nginx", "-c", str(nginx_conf(work, nginx_port, body))]),
                process([*go_peer, f"127.0.0.1:{go_port}", "-mode", "connect", "-message",
                         str(message)], env=go_env),
                process([*go_peer, f"127.0.0.1:{bare_go_port}", "-mode", "bare", "-json",
                         str(body)], env=go_env),
            ):  # fmt: skip
                for port in (asgi_port, connect_port, grpc_port, nginx_port, go_port, bare_go_port):
                    wait_for_port(port)
                base = {
                    "asgi": f"http://127.0.0.1:{asgi_port}",
                    "connect": f"http://127.0.0.1:{connect_port}",
                    "nginx": f"http://127.0.0.1:{nginx_port}",
                    "go": f"http://127.0.0.1:{go_port}",
                    "bare_go": f"http://127.0.0.1:{bare_go_port}",
                }
                verify_targets(ours, base, body.read_bytes(), message.read_bytes())
                check_grpc(grpc_port, message.read_bytes())
                report.extras["go_peer_answers"] = "the same bytes as agentrouter-auth"
                grpc_headers = ["content-type: application/grpc", "te: trailers"]
                ours_grpc = f"http://127.0.0.1:{ours.grpc}{CONNECT}"
                bare_grpc = f"http://127.0.0.1:{grpc_port}{CONNECT}"
                go_grpc = base["go"] + CONNECT
                framed = len(GRPC_EMPTY_FRAME) + len(message.read_bytes())
                d = duration
                plan: dict[str, Callable[[], Result]] = {
                    "rest_http1": partial(wrk, "agentrouter-auth REST", ours.base + JWKS, d),
                    "rest_postgres_http1": partial(
                        wrk, "agentrouter-auth REST, PostgreSQL store", on_postgres.base + JWKS, d
                    ),
                    "bare_asgi_http1": partial(wrk, "bare ASGI (granian)", base["asgi"] + "/", d),
                    "bare_asgi_post_http1": partial(
                        wrk, "bare ASGI (granian) POST, body read", base["asgi"] + "/", d, post
                    ),
                    "nginx_http1": partial(wrk, "nginx static", base["nginx"] + JWKS, d),
                    "rest_h2c": partial(h2load, "agentrouter-auth REST", ours.base + JWKS, d),
                    "bare_asgi_h2c": partial(
                        h2load, "bare ASGI (granian)", base["asgi"] + "/", d
                    ),
                    "connect_get": partial(
                        wrk, "agentrouter-auth Connect GET", ours.base + CONNECT_GET, d
                    ),
                    "bare_connect_get": partial(
                        wrk, "bare connectrpc Connect GET", base["connect"] + CONNECT_GET, d
                    ),
                    "connect_post_json": partial(
                        wrk, "agentrouter-auth Connect POST JSON", ours.base + CONNECT, d, post
                    ),
                    "bare_connect_post_json": partial(
                        wrk, "bare connectrpc Connect POST JSON", base["connect"] + CONNECT, d,
                        post,
                    ),
                    "grpc": partial(
                        h2load, "agentrouter-auth gRPC", ours_grpc, d, data=frame,
                        headers=grpc_headers, answer_bytes=framed,
                    ),
                    "bare_grpc": partial(
                        h2load, "bare grpcio", bare_grpc, d, data=frame, headers=grpc_headers,
                        answer_bytes=framed,
                    ),
                    "grpc_web": partial(
                        wrk, "agentrouter-auth gRPC-Web", ours.base + CONNECT, d, grpc_web
                    ),
                    "go_rest_http1": partial(wrk, "Go peer REST", base["go"] + JWKS, d),
                    "go_connect_get": partial(
                        wrk, "Go peer Connect GET", base["go"] + CONNECT_GET, d
                    ),
                    "go_connect_post_json": partial(
                        wrk, "Go peer Connect POST JSON", base["go"] + CONNECT, d, post
                    ),
                    "go_grpc_web": partial(
                        wrk, "Go peer gRPC-Web", base["go"] + CONNECT, d, grpc_web
                    ),
                    "go_grpc": partial(
                        h2load, "Go peer gRPC", go_grpc, d, data=frame, headers=grpc_headers,
                        answer_bytes=framed,
                    ),
                    "bare_go_http1": partial(
                        wrk, "bare Go net/http", base["bare_go"] + JWKS, d
                    ),
                }  # fmt: skip
                warm = min(2.0, duration)
                for name, run in plan.items():  # warm every target up before any measurement
                    if not name.startswith(("nginx", "bare_grpc", "grpc", "go_grpc")):
                        url, script = base_url_and_script(run)
                        wrk("warm-up", url, warm, script)
                runs: dict[str, list[Result]] = {name: [] for name in plan}
                for _ in range(rounds):
                    for name, run in plan.items():
                        runs[name].append(run())
                for name, results in runs.items():
                    report.results[name] = median(results)
                report.extras["rss_mb_after_load"] = {
                    "server_total": round(rss_mb(ours.proc.pid), 1),
                    "workers": [round(size, 1) for size in worker_rss_mb(ours.proc.pid)],
                }
        scaling: dict[str, list[Result]] = {}
        for count in (1, 8, 64):
            with agentrouter_auth(seed_store(work / f"keys-{count}", count)) as server:
                wrk("warm-up", server.base + JWKS, min(2.0, duration))
                size = len(urllib.request.urlopen(server.base + JWKS).read())  # noqa: S310
                report.extras[f"body_bytes_{count}_keys"] = size
                scaling[f"rest_{count}_keys"] = [
                    wrk(f"REST, {count} keys", server.base + JWKS, duration) for _ in range(rounds)
                ]
        for name, results in scaling.items():
            report.results[name] = median(results)
        rotating_keys = work / "rotating"
        init = [str(BIN / "agentrouter-auth"), "keys", "init", "--keys-dir", str(rotating_keys)]
        subprocess.run([*init, *ROTATING_POLICY], check=True, capture_output=True)
        reload = ["--reload-interval", "200ms"]
        rotation_log_file = work / "rotating.log"
        with agentrouter_auth(
            rotating_keys, *ROTATING_POLICY, *reload, rotation="auto", log=rotation_log_file
        ) as server:
            seconds = 20.0 if duration >= 10 else max(5.0, 2 * duration)
            result = wrk("REST while rotating every second", server.base + JWKS, seconds)
            manifest = json.loads((rotating_keys / "manifest.json").read_text())
        report.results["rest_during_rotation"] = result
        report.extras["rotation"] = {
            "seconds": seconds,
            "keys_in_manifest_after": len(manifest["keys"]),
            # The steps the server logged: proof that keys did rotate under the load.
            **rotation_log([rotation_log_file]),
            "non_2xx": result.non_2xx,
            "socket_errors": result.errors,
            "of_which_timeouts": result.timeouts,
        }
        replicated, facts = replicas_rotating(postgres, kek, work, seconds)
        report.results["rest_during_rotation_replicas"] = replicated
        report.extras["replica_rotation"] = facts
        report.machine["load_average_after"] = [round(n, 2) for n in os.getloadavg()]
    report.ratios = ratios(report.results)
    report.checks = checks(report)
    write(report, args.out)
    print((args.out / "latest.md").read_text())
    # A report: a FAIL line does not fail the run (a target that could not start already did).
    return 0


RATIOS = {
    "REST / bare ASGI (HTTP/1.1)": ("rest_http1", "bare_asgi_http1", 0.90),
    "REST, PostgreSQL store / directory store": ("rest_postgres_http1", "rest_http1", 0.90),
    "REST / nginx (HTTP/1.1)": ("rest_http1", "nginx_http1", 0.40),
    "REST / bare ASGI (h2c)": ("rest_h2c", "bare_asgi_h2c", 0.90),
    "gRPC / bare grpcio": ("grpc", "bare_grpc", 0.90),
    "Connect GET / bare connectrpc": ("connect_get", "bare_connect_get", 0.90),
    "Connect POST JSON / bare connectrpc": ("connect_post_json", "bare_connect_post_json", 0.90),
    # What a body costs on granian: the ceiling of Connect POST and gRPC-Web against REST.
    "bare ASGI POST / bare ASGI GET": ("bare_asgi_post_http1", "bare_asgi_http1", 0.0),
    "Connect POST JSON / bare ASGI POST": ("connect_post_json", "bare_asgi_post_http1", 0.75),
    "gRPC-Web / bare ASGI POST": ("grpc_web", "bare_asgi_post_http1", 0.75),
    "REST 64 keys / 1 key": ("rest_64_keys", "rest_1_keys", 0.90),
}


GO_PEER_PATHS = {
    "REST `GET /.well-known/jwks.json`": ("rest_http1", "go_rest_http1"),
    "Connect GET": ("connect_get", "go_connect_get"),
    "Connect POST JSON": ("connect_post_json", "go_connect_post_json"),
    "gRPC-Web (proto)": ("grpc_web", "go_grpc_web"),
    "gRPC (h2load, gRPC framing)": ("grpc", "go_grpc"),
}
"""Each protocol: our measurement and the Go peer's (connect-go + vanguard-go), same run."""

# The "Must hold" list of the issue that brought the Go peer in: (requirement, ours, of, factor).
MUST_HOLD_RATIOS = [
    ("Connect GET ≥ 0.9 x our REST", "connect_get", "rest_http1", 0.9),
    ("Connect POST JSON ≥ 0.75 x our REST", "connect_post_json", "rest_http1", 0.75),
    ("gRPC-Web ≥ 0.75 x our REST", "grpc_web", "rest_http1", 0.75),
    ("REST ≥ 1.0 x the Go peer's REST", "rest_http1", "go_rest_http1", 1.0),
    ("Connect GET ≥ 0.6 x the Go peer's Connect GET", "connect_get", "go_connect_get", 0.6),
    ("gRPC ≥ 0.8 x the Go peer's gRPC", "grpc", "go_grpc", 0.8),
]
P99_LIMIT_MS = 5.0
P99_BOUNDED = {"REST": "rest_http1", "Connect GET": "connect_get"}
RSS_PER_WORKER_MB = 72.0
"""The issue's "no higher than today's": 70.8 MB per worker before the lean Connect path, and a run
varies by about 1 MB."""


def checks(report: Report) -> list[Check]:
    """The "Must hold" list evaluated on one run's measurements (a missing one fails)."""
    results, found = report.results, []
    for requirement, ours, of, factor in MUST_HOLD_RATIOS:
        if ours in results and of in results and results[of].rps:
            ratio = results[ours].rps / results[of].rps
            measured = f"{ratio:.2f} ({results[ours].rps:,.0f} / {results[of].rps:,.0f} req/s)"
            found.append(Check(requirement, measured, ratio >= factor))
        else:
            found.append(Check(requirement, "not measured", passed=False))
    for label, name in P99_BOUNDED.items():
        requirement = f"p99 < {P99_LIMIT_MS:g} ms for {label} at {report.concurrency} connections"
        if name in results:
            p99 = results[name].p99_ms
            found.append(Check(requirement, f"{p99:.2f} ms", p99 < P99_LIMIT_MS))
        else:
            found.append(Check(requirement, "not measured", passed=False))
    for label, key in (("one server", "rotation"), ("replicas on PostgreSQL", "replica_rotation")):
        found.append(rotation_check(label, report.extras.get(key)))
    workers = report.extras.get("rss_mb_after_load", {}).get("workers") or []
    requirement = f"RSS per worker ≤ {RSS_PER_WORKER_MB:g} MB"
    if workers:
        found.append(
            Check(requirement, f"{max(workers):.1f} MB", max(workers) <= RSS_PER_WORKER_MB)
        )
    else:
        found.append(Check(requirement, "not measured", passed=False))
    return found


def rotation_check(label: str, facts: dict[str, Any] | None) -> Check:
    """0 errors while a key rotates every second, and proof that it did: at least one step
    every two seconds of load in the servers' logs."""
    requirement = f"0 errors while a key rotates every second ({label})"
    if not facts:
        return Check(requirement, "not measured", passed=False)
    errors = {
        name: facts.get(name, 0)
        for name in ("non_2xx", "socket_errors", "steps_taken_twice", "errors_logged")
    }
    steps = facts.get("rotation_steps", 0)
    measured = f"{steps} steps in {facts['seconds']:g} s, " + ", ".join(
        f"{count} {name}" for name, count in errors.items()
    )
    if facts.get("of_which_timeouts"):
        measured += f" (of the socket errors, {facts['of_which_timeouts']} timeouts)"
    return Check(requirement, measured, steps >= facts["seconds"] / 2 and not any(errors.values()))


def base_url_and_script(run: Callable[[], Result]) -> tuple[str, Path | None]:
    """The URL a planned wrk measurement loads, and its script (a POST's)."""
    assert isinstance(run, partial)
    script = run.args[3] if len(run.args) > 3 else None  # wrk(target, url, duration, script)
    return str(run.args[1]), script


def ratios(results: dict[str, Result]) -> dict[str, float]:
    return {
        label: round(results[a].rps / results[b].rps, 3)
        for label, (a, b, _) in RATIOS.items()
        if a in results and b in results and results[b].rps
    }


def write(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    document = asdict(report)
    (out / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(report))
    chart(report, out / "latest.png")


def markdown(report: Report) -> str:
    lines = [
        f"# agentrouter-auth benchmark ({report.duration:g} s per measurement, median of "
        f"{report.rounds} alternating rounds, {report.concurrency} connections, 1 server worker)",
        "",
        f"Machine: {report.machine['cpus']} CPUs, Python {report.machine['python']}; load "
        "generator and servers share it, so compare ratios, not absolute numbers. "
        f"Pinning: {report.machine.get('pinned', 'none')}. Load average (1, 5, "
        f"15 min) before the run: {report.machine.get('load_average_before')}, after: "
        f"{report.machine.get('load_average_after')}.",
        "",
        "| measurement | target | tool | req/s | p50 ms | p99 ms | non-2xx | errors (timeouts) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report.results.items():
        lines.append(
            f"| {name} | {r.target} | {r.tool} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx} | {r.errors} ({r.timeouts}) |"
        )
    lines += ["", "| ratio | value | target | met |", "| --- | ---: | ---: | :---: |"]
    for label, value in report.ratios.items():
        goal = RATIOS[label][2]
        if not goal:  # a measurement of the server under both, not a target
            lines.append(f"| {label} | {value:.3f} | (what it costs) | |")
            continue
        lines.append(
            f"| {label} | {value:.3f} | ≥ {goal:.2f} | {'yes' if value >= goal else 'no'} |"
        )
    lines += go_peer_table(report)
    slow = [f"{name} ({r.p99_ms:.2f} ms)" for name, r in report.results.items() if r.p99_ms >= 5]
    rss = report.extras.get("rss_mb_after_load", {})
    rotation = report.extras.get("rotation", {})
    replicas = report.extras.get("replica_rotation")
    postgres = report.extras.get("postgres")
    lines += [
        "",
        f"- Body: {report.extras.get('body_bytes')} bytes with 3 keys; "
        + ", ".join(
            f"{n} keys: {report.extras.get(f'body_bytes_{n}_keys')} bytes" for n in (1, 8, 64)
        ),
        f"- p99 under 5 ms: {'every measurement' if not slow else 'all but ' + ', '.join(slow)}",
        f"- RSS after load: {rss.get('server_total')} MB in all (main + workers); "
        f"per worker: {rss.get('workers')} MB",
        f"- Rotation under load: {rotation.get('seconds')} s of REST load while a key rotates "
        f"every second: {rotation.get('rotation_steps')} steps logged, "
        f"{rotation.get('non_2xx')} non-2xx, {rotation.get('socket_errors')} socket errors, "
        f"{rotation.get('errors_logged')} errors logged",
    ]
    if postgres:
        lines.append(
            f"- PostgreSQL store (PostgreSQL {postgres['server_version']}): the same three keys "
            "copied into a database with `keys copy`, served byte for byte as from the directory"
        )
    if replicas:
        lines.append(
            f"- Rotation across replicas: {replicas['seconds']} s of REST load spread over "
            f"{replicas['replicas']} replicas sharing one PostgreSQL ring (one wrk each, "
            f"{'/'.join(map(str, replicas['connections']))} connections) while they rotate keys "
            f"(a step about every second): {replicas['keys_created']} keys created, "
            f"{replicas['rotation_steps']} "
            f"steps, {replicas['steps_taken_twice']} taken twice, {replicas['non_2xx']} non-2xx, "
            f"{replicas['socket_errors']} socket errors, {replicas['errors_logged']} errors logged"
        )
    if report.checks:
        lines += ["", "Must hold (a report: a FAIL does not fail `make bench`):", "", "```"]
        lines += [check.line() for check in report.checks]
        lines.append("```")
    lines.append("")
    return "\n".join(lines)


def go_peer_table(report: Report) -> list[str]:
    """Each protocol against the Go peer (connect-go + vanguard-go) of the same run."""
    results = report.results
    rows = [
        (label, results[ours], results[go])
        for label, (ours, go) in GO_PEER_PATHS.items()
        if ours in results and go in results
    ]
    if not rows:
        return []
    lines = [
        "",
        "Against the Go peer (connect-go + vanguard-go, the same proto and bytes, GOMAXPROCS=1):",
        "",
        "| path | ours req/s | ours p99 ms | Go peer req/s | Go p99 ms | ours / Go |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, ours, go in rows:
        ratio = ours.rps / go.rps if go.rps else float("nan")
        lines.append(
            f"| {label} | {ours.rps:,.0f} | {ours.p99_ms:.2f} | {go.rps:,.0f} | {go.p99_ms:.2f} "
            f"| {ratio:.2f} |"
        )
    bare = results.get("bare_go_http1")
    if bare is not None and bare.rps and "rest_http1" in results:
        lines += [
            "",
            f"Bare Go net/http answering the JSON bytes: {bare.rps:,.0f} req/s; our REST / bare "
            f"Go: {results['rest_http1'].rps / bare.rps:.2f}.",
        ]
    return lines


def chart(report: Report, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(report.results)
    values = [report.results[n].rps for n in names]
    grey, blue, green = "#a0aec0", "#2b6cb0", "#2f855a"
    colors = [
        green if n.startswith(("go_", "bare_go")) else grey if n.startswith(("bare", "nginx"))
        else blue
        for n in names
    ]  # fmt: skip
    pairs = [
        (label, report.results[ours].rps, report.results[go].rps)
        for label, (ours, go) in GO_PEER_PATHS.items()
        if ours in report.results and go in report.results
    ]
    heights = [0.45 * len(names) + 1.5, 0.9 * len(pairs) + 1.5] if pairs else [1.0]
    figure, panels = plt.subplots(
        2 if pairs else 1,
        1,
        figsize=(10, sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axes = panels[0][0]
    axes.barh(names, values, color=colors)
    axes.invert_yaxis()
    axes.set_xlabel(
        "requests per second (blue: agentrouter-auth, grey: Python and nginx baselines, "
        "green: Go peers)"
    )
    axes.set_title(f"agentrouter-auth vs baselines, one run, c={report.concurrency}")
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    if pairs:
        axes = panels[1][0]
        positions = range(len(pairs))
        ours_bars = [p[1] for p in pairs]
        go_bars = [p[2] for p in pairs]
        axes.barh(
            [y - 0.2 for y in positions], ours_bars, 0.4, color=blue, label="agentrouter-auth"
        )
        axes.barh([y + 0.2 for y in positions], go_bars, 0.4, color=green, label="Go peer")
        axes.set_yticks(list(positions), [p[0] for p in pairs])
        axes.invert_yaxis()
        axes.legend(loc="lower right", fontsize=8)
        axes.set_xlabel("requests per second; ours / Go at the right of each pair")
        axes.set_title("each protocol against connect-go + vanguard-go, same run")
        for y, (_, ours, go) in enumerate(pairs):
            axes.text(ours, y - 0.2, f" {ours:,.0f}", va="center", fontsize=8)
            ratio = ours / go if go else float("nan")
            axes.text(go, y + 0.2, f" {go:,.0f}  (ours / Go {ratio:.2f})", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
