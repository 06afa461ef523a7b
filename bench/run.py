"""`make bench`: agentrouter-auth against baselines serving the same bytes, in one run.

Every target runs on loopback for the whole run; measurements alternate between targets
(round after round) so drift on a shared machine hits all of them alike, and results are
reported as ratios to baselines measured in the same run. Absolute numbers are printed too,
but only the ratios are meant to be compared between runs.

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
CONNECT_GET = CONNECT + "?encoding=json&message=%7B%7D"
GRPC_EMPTY_FRAME = b"\x00\x00\x00\x00\x00"  # uncompressed, zero-length GetJWKSRequest
# A policy that pre-publishes, promotes, retires and deletes a key about every second.
ROTATING_POLICY = [
    "--rotation-period", "2s", "--publish-ahead", "1s", "--retain-after", "1s",
    "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "0s",
    "--stale-while-revalidate", "0s",
]  # fmt: skip
REPLICAS = 3
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


# -- processes -------------------------------------------------------------------------------


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
        list(argv), stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True, **kwargs
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
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
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
    )


def h2load(
    target: str, url: str, duration: float, *, data: Path | None = None, headers: Sequence[str] = ()
) -> Result:
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        argv = ["h2load", "-t1", f"-c{CONCURRENCY}", "-m1", "-D", str(max(1, round(duration))),
                "--log-file", log.name, url]  # fmt: skip
        if data is not None:
            argv[1:1] = ["-d", str(data)]
        for header in headers:
            argv[1:1] = ["-H", header]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        durations = sorted(
            int(line.split("\t")[2]) / 1000.0
            for line in Path(log.name).read_text().splitlines()
            if line.count("\t") >= 2
        )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    return Result(
        target=target,
        tool="h2load (h2c)",
        rps=float(_search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)),
        p50_ms=_percentile(durations, 50),
        p99_ms=_percentile(durations, 99),
        requests=len(durations),
        non_2xx=sum(int(n) for n in codes.groups()[1:]) if codes else 0,
        errors=sum(int(n) for n in failed.groups()) if failed else 0,
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
    missing = [tool for tool in ("wrk", "h2load", "nginx") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)} (make bench installs them)")


def check_grpc(port: int, expected: bytes) -> None:
    """One real grpcio call: the gRPC target answers the right message before it is loaded."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=5)
    if reply.SerializeToString(deterministic=True) != expected:
        raise SystemExit(f"bench: the gRPC target on port {port} answered the wrong message")


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
    # The servers have stopped (SIGTERM): their logs are complete.
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
    result = Result(
        target=f"REST while rotating, {REPLICAS} replicas on PostgreSQL",
        tool="wrk (HTTP/1.1), one per replica",
        rps=sum(r.rps for r in each),
        p50_ms=max(r.p50_ms for r in each),  # the slowest replica's
        p99_ms=max(r.p99_ms for r in each),
        requests=sum(r.requests for r in each),
        non_2xx=sum(r.non_2xx for r in each),
        errors=sum(r.errors for r in each),
    )
    facts = {
        "replicas": REPLICAS,
        "seconds": seconds,
        "connections": connections,
        "rps_per_replica": [round(r.rps) for r in each],
        "keys_created": sum(1 for _, _, to in steps if to == "pending"),
        "rotation_steps": sum(steps.values()),
        "steps_taken_twice": sum(1 for count in steps.values() if count > 1),
        "errors_logged": text_lines
        + sum(1 for r in records if r.get("level") in {"error", "critical"}),
        "non_2xx": result.non_2xx,
        "socket_errors": result.errors,
    }
    return result, facts


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
            )
            env = {**os.environ, "BENCH_BODY": str(body), "BENCH_MESSAGE": str(message)}
            asgi_port, connect_port, grpc_port, nginx_port = (free_port() for _ in range(4))
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
            ):  # fmt: skip
                for port in (asgi_port, connect_port, grpc_port, nginx_port):
                    wait_for_port(port)
                check_grpc(ours.grpc, message.read_bytes())
                check_grpc(grpc_port, message.read_bytes())
                base = {
                    "asgi": f"http://127.0.0.1:{asgi_port}",
                    "connect": f"http://127.0.0.1:{connect_port}",
                    "nginx": f"http://127.0.0.1:{nginx_port}",
                }
                grpc_headers = ["content-type: application/grpc", "te: trailers"]
                ours_grpc = f"http://127.0.0.1:{ours.grpc}{CONNECT}"
                bare_grpc = f"http://127.0.0.1:{grpc_port}{CONNECT}"
                d = duration
                plan: dict[str, Callable[[], Result]] = {
                    "rest_http1": partial(wrk, "agentrouter-auth REST", ours.base + JWKS, d),
                    "rest_postgres_http1": partial(
                        wrk, "agentrouter-auth REST, PostgreSQL store", on_postgres.base + JWKS, d
                    ),
                    "bare_asgi_http1": partial(wrk, "bare ASGI (granian)", base["asgi"] + "/", d),
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
                        headers=grpc_headers,
                    ),
                    "bare_grpc": partial(
                        h2load, "bare grpcio", bare_grpc, d, data=frame, headers=grpc_headers
                    ),
                }  # fmt: skip
                warm = min(2.0, duration)
                for name, run in plan.items():  # warm every target up before any measurement
                    if not name.startswith(("nginx", "bare_grpc", "grpc")):
                        wrk("warm-up", base_url_of(run), warm)
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
        with agentrouter_auth(rotating_keys, *ROTATING_POLICY, *reload, rotation="auto") as server:
            seconds = 20.0 if duration >= 10 else max(5.0, 2 * duration)
            result = wrk("REST while rotating every second", server.base + JWKS, seconds)
            manifest = json.loads((rotating_keys / "manifest.json").read_text())
        report.results["rest_during_rotation"] = result
        report.extras["rotation"] = {
            "seconds": seconds,
            "keys_in_manifest_after": len(manifest["keys"]),
            "non_2xx": result.non_2xx,
            "socket_errors": result.errors,
        }
        replicated, facts = replicas_rotating(postgres, kek, work, seconds)
        report.results["rest_during_rotation_replicas"] = replicated
        report.extras["replica_rotation"] = facts
    report.ratios = ratios(report.results)
    write(report, args.out)
    print((args.out / "latest.md").read_text())
    required_zero = ("non_2xx", "socket_errors", "steps_taken_twice", "errors_logged")
    failures = [f"{facts[name]} {name}" for name in required_zero if facts[name]]
    if failures:
        print(f"bench: rotation across replicas: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


RATIOS = {
    "REST / bare ASGI (HTTP/1.1)": ("rest_http1", "bare_asgi_http1", 0.90),
    "REST, PostgreSQL store / directory store": ("rest_postgres_http1", "rest_http1", 0.90),
    "REST / nginx (HTTP/1.1)": ("rest_http1", "nginx_http1", 0.40),
    "REST / bare ASGI (h2c)": ("rest_h2c", "bare_asgi_h2c", 0.90),
    "gRPC / bare grpcio": ("grpc", "bare_grpc", 0.90),
    "Connect GET / bare connectrpc": ("connect_get", "bare_connect_get", 0.90),
    "Connect POST JSON / bare connectrpc": ("connect_post_json", "bare_connect_post_json", 0.90),
    "REST 64 keys / 1 key": ("rest_64_keys", "rest_1_keys", 0.90),
}


def base_url_of(run: Callable[[], Result]) -> str:
    """The URL a planned measurement loads."""
    assert isinstance(run, partial)
    return str(run.args[1])


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
        "generator and servers share it, so compare ratios, not absolute numbers.",
        "",
        "| measurement | target | tool | req/s | p50 ms | p99 ms | non-2xx | errors |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in report.results.items():
        lines.append(
            f"| {name} | {r.target} | {r.tool} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.non_2xx} | {r.errors} |"
        )
    lines += ["", "| ratio | value | target | met |", "| --- | ---: | ---: | :---: |"]
    for label, value in report.ratios.items():
        goal = RATIOS[label][2]
        lines.append(
            f"| {label} | {value:.3f} | ≥ {goal:.2f} | {'yes' if value >= goal else 'no'} |"
        )
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
        f"every second: {rotation.get('non_2xx')} non-2xx, {rotation.get('socket_errors')} "
        "socket errors",
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
    lines.append("")
    return "\n".join(lines)


def chart(report: Report, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(report.results)
    values = [report.results[n].rps for n in names]
    colors = ["#2b6cb0" if not n.startswith(("bare", "nginx")) else "#a0aec0" for n in names]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(names) + 1.5))
    axes.barh(names, values, color=colors)
    axes.invert_yaxis()
    axes.set_xlabel("requests per second (blue: agentrouter-auth, grey: baselines)")
    axes.set_title(f"agentrouter-auth vs baselines, one run, c={report.concurrency}")
    for y, value in enumerate(values):
        axes.text(value, y, f" {value:,.0f}", va="center", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
