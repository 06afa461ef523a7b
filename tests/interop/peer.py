"""A small Connect peer that forces what a real server rarely does, for the SDKs' tests.

Every SDK is tested against the real server and against this peer, which answers
`…/agentrouter.auth.v1.AuthService/GetJWKS` under any path prefix, by the prefix's last two
segments:

- `…/fail/<code>/agentrouter.auth.v1.AuthService/GetJWKS`: a Connect error with that code
  (`not_found`, `unavailable`, …) and the message `forced <code>`, under the HTTP status the
  Connect protocol gives the code;
- `…/slow/<milliseconds>/agentrouter.auth.v1.AuthService/GetJWKS`: the answer, that late;
- `…/hostile/<code>/…`: that error, with HOSTILE_MESSAGE (terminal escapes, CR/LF, bidi);
- `…/big/<MiB>/…` and `…/chunked/<MiB>/…`: a valid answer (one key whose `x` is that many MiB
  of `A`), streamed, with a Content-Length or chunked without one;
- `…/bomb/<MiB>/…`: the same answer gzipped (`Content-Encoding: gzip`), a few hundred KiB on
  the wire;
- `…/bigerror/<MiB>/…`: an `unavailable` error whose message is that many MiB, and
  `…/errorbomb/<MiB>/…` the same error gzipped;
- `…/drip/<milliseconds>/…`: the headers of a valid answer at once, then its body one byte
  every that many milliseconds (a few hundred bytes: minutes);
- `…/redirect/<where>/…`: a 307 to the same path without these two segments, on another
  origin: `port` (the second listener: same host, another port), `host` (`localhost` instead
  of `127.0.0.1`, same port), `same` (the same origin) or `plain` (from the TLS listener to
  the second, plain-HTTP one: https → http on the same host);
- anything else: a GetJWKSResponse holding one key whose kid is `peer-key`.

It listens on three ports: `url` (plain HTTP), `second_url` (plain HTTP, another port) and
`tls_url` (HTTPS, with a certificate for 127.0.0.1 and localhost signed by `ca_file`).

It answers in the encoding the call asked for (Connect GET's `encoding` query parameter, or
the POST's Content-Type: proto or JSON). It records every request; `GET /_requests` returns
them as JSON (method, path, query, headers with lower-cased names, and the `origin` that
received it), oldest first, on every listener, so a test in any language can check what its SDK
sent, and where.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import ipaddress
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format

from agentrouter.auth.v1 import auth_pb2

METHOD_PATH = "/agentrouter.auth.v1.AuthService/GetJWKS"
PEER_KID = "peer-key"
# What `…/hostile/<code>/` answers: everything a terminal would act on instead of printing.
HOSTILE_MESSAGE = (
    "forced\x1b[2J\x1b[31m red\x1b[0m\r\nsecond line\x07\x00 \u202eevil\u202c \x9b31m"
    "\x7f\u2066iso\u2069 \tend"
)
MIB = 1 << 20
# The HTTP status of each Connect error code (connectrpc.com/docs/protocol#error-codes).
HTTP_STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504,
    "not_found": 404, "already_exists": 409, "permission_denied": 403,
    "resource_exhausted": 429, "failed_precondition": 400, "aborted": 409,
    "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}  # fmt: skip


class Peer:
    """The running peer: its base URLs and what it was sent."""

    def __init__(self, servers: list[ThreadingHTTPServer], ca_file: Path) -> None:
        self._servers = servers
        self.ca_file = ca_file
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def _port(self, index: int) -> int:
        return int(self._servers[index].server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port(0)}"

    @property
    def second_url(self) -> str:
        """Another listener on the same host: another origin (RFC 6454) than `url`."""
        return f"http://127.0.0.1:{self._port(1)}"

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self._port(2)}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, length: int) -> bytes:
    """The tag and length of a length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(length)


def _big_answer(size: int) -> tuple[bytes, int]:
    """The head of a valid GetJWKSResponse whose one key's `x` is `size` bytes of `A` (which
    follow the head), and the answer's total length."""
    jwk = auth_pb2.JWK(kty="OKP", crv="Ed25519", kid=PEER_KID, alg="EdDSA").SerializeToString()
    x_field = _field(auth_pb2.JWK.X_FIELD_NUMBER, size)
    key_length = len(jwk) + len(x_field) + size
    head = _field(auth_pb2.GetJWKSResponse.KEYS_FIELD_NUMBER, key_length) + jwk + x_field
    return head, len(head) + size


def _filler(size: int) -> Iterator[bytes]:
    chunk = b"A" * MIB
    while size > 0:
        yield chunk[: min(size, MIB)]
        size -= MIB


@functools.cache
def _bomb(mib: int, *, error: bool = False) -> bytes:
    """The big answer (or error) of `mib` MiB, gzipped: a few hundred KiB."""
    head, tail = _big_answer(mib * MIB)[0], b""
    if error:
        head, tail = b'{"code":"unavailable","message":"', b'"}'
    gzip = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunks = (head, *_filler(mib * MIB), tail)
    return b"".join([*(gzip.compress(chunk) for chunk in chunks), gzip.flush()])


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that hang up (as a client over its limit or past its deadline
        does); anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


def _handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read what was recorded instead."""

        def do_GET(self) -> None:
            if self.path == "/_requests":
                with peer.lock:
                    body = json.dumps(peer.requests).encode()
                self._send(200, "application/json", body)
                return
            self._call()

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            self.rfile.read(length)
            self._call()

        def do_OPTIONS(self) -> None:  # a browser's CORS preflight
            self._record()
            self.send_response(204)
            self.send_header("access-control-allow-origin", "*")
            self.send_header("access-control-allow-methods", "GET, POST")
            requested = self.headers.get("access-control-request-headers")
            if requested:
                self.send_header("access-control-allow-headers", requested)
            self.send_header("content-length", "0")
            self.end_headers()

        def _origin(self) -> str:
            """The origin the client asked for: the listener's scheme and the Host header."""
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            return f"{scheme}://{self.headers.get('host', '')}"

        def _record(self) -> None:
            parts = urlsplit(self.path)
            with peer.lock:
                peer.requests.append(
                    {
                        "method": self.command,
                        "path": parts.path,
                        "query": parts.query,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "origin": self._origin(),
                    }
                )

        def _call(self) -> None:
            self._record()
            parts = urlsplit(self.path)
            if not parts.path.endswith(METHOD_PATH):
                self._send(404, "text/plain", b"not found")
                return
            prefix = parts.path.removesuffix(METHOD_PATH).strip("/").split("/")
            kind, value = (prefix[-2], prefix[-1]) if len(prefix) >= 2 else ("", "")
            query = parse_qs(parts.query)
            if self.command == "GET":
                as_json = query.get("encoding", ["proto"])[0] == "json"
            else:
                as_json = "json" in (self.headers.get("content-type") or "")
            if kind == "fail":
                error = {"code": value, "message": f"forced {value}"}
                status = HTTP_STATUS.get(value, 500)
                self._send(status, "application/json", json.dumps(error).encode())
                return
            if kind == "hostile":
                error = {"code": value, "message": HOSTILE_MESSAGE}
                self._send(
                    HTTP_STATUS.get(value, 500), "application/json", json.dumps(error).encode()
                )
                return
            if kind == "bigerror":
                self._stream_big_error(int(value) * MIB)
                return
            if kind in ("big", "chunked"):
                self._stream_big(int(value) * MIB, chunked=kind == "chunked")
                return
            if kind == "bomb":
                self._send(200, "application/proto", _bomb(int(value)), encoding="gzip")
                return
            if kind == "errorbomb":
                body = _bomb(int(value), error=True)
                self._send(503, "application/json", body, encoding="gzip")
                return
            if kind == "drip":
                self._drip(int(value) / 1000)
                return
            if kind == "redirect":
                self._redirect(value, "/".join(prefix[:-2]), parts.query)
                return
            if kind == "slow":
                time.sleep(int(value) / 1000)
            answer = auth_pb2.GetJWKSResponse(
                keys=[auth_pb2.JWK(kty="OKP", crv="Ed25519", x="AAAA", kid=PEER_KID, alg="EdDSA")]
            )
            if as_json:
                body = json_format.MessageToJson(answer, indent=None).encode()
                self._send(200, "application/json", body)
            else:
                self._send(200, "application/proto", answer.SerializeToString())

        def _stream_big(self, size: int, *, chunked: bool) -> None:
            head, length = _big_answer(size)
            self.send_response(200)
            self.send_header("content-type", "application/proto")
            if chunked:
                self.send_header("transfer-encoding", "chunked")
            else:
                self.send_header("content-length", str(length))
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that gave up has gone
                for chunk in (head, *_filler(size)):
                    if chunked:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    else:
                        self.wfile.write(chunk)
                if chunked:
                    self.wfile.write(b"0\r\n\r\n")
            self.close_connection = True

        def _stream_big_error(self, size: int) -> None:
            head, tail = b'{"code":"unavailable","message":"', b'"}'
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(head) + size + len(tail)))
            self.end_headers()
            with contextlib.suppress(OSError):
                for chunk in (head, *_filler(size), tail):
                    self.wfile.write(chunk)
            self.close_connection = True

        def _drip(self, interval: float) -> None:
            head, length = _big_answer(300)
            body = head + b"A" * 300
            self.send_response(200)
            self.send_header("content-type", "application/proto")
            self.send_header("content-length", str(length))
            self.end_headers()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
                for offset in range(len(body)):
                    self.wfile.write(body[offset : offset + 1])
                    self.wfile.flush()
                    time.sleep(interval)

        def _redirect(self, where: str, rest: str, query: str) -> None:
            origin = {
                "port": peer.second_url,
                "host": peer.url.replace("127.0.0.1", "localhost"),
                "same": self._origin(),
                "plain": peer.second_url,
            }.get(where)
            if origin is None:
                self._send(404, "text/plain", b"no such redirect")
                return
            path = (f"/{rest}" if rest else "") + METHOD_PATH
            self.send_response(307)
            self.send_header("location", f"{origin}{path}?{query}")
            self.send_header("content-length", "0")
            self.end_headers()

        def _send(
            self, status: int, content_type: str, body: bytes, *, encoding: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("content-type", content_type)
            if encoding:
                self.send_header("content-encoding", encoding)
            self.send_header("content-length", str(len(body)))
            self.send_header("access-control-allow-origin", "*")
            self.end_headers()
            with contextlib.suppress(OSError):  # a client that timed out has gone
                self.wfile.write(body)

    return Handler


def _certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost: the CA file, the
    certificate file and its key file."""
    now = datetime.datetime.now(datetime.UTC)

    def issue(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey, ca: bool,
    ) -> x509.Certificate:  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer test CA")])
    ca = issue("peer test CA", ca_key, ca_name, ca_key, True)
    server = issue("127.0.0.1", server_key, ca_name, ca_key, False)
    files = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@contextlib.contextmanager
def running_peer() -> Iterator[Peer]:
    """A peer on three free loopback ports, for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="peer-") as tmp:
        ca_file, cert_file, key_file = _certificate(Path(tmp))
        servers: list[ThreadingHTTPServer] = [
            _Server(("127.0.0.1", 0), BaseHTTPRequestHandler) for _ in range(3)
        ]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        servers[2].socket = context.wrap_socket(servers[2].socket, server_side=True)
        peer = Peer(servers, ca_file)
        threads = []
        for server in servers:
            server.RequestHandlerClass = _handler(peer)
            threads.append(threading.Thread(target=server.serve_forever, daemon=True))
            threads[-1].start()
        try:
            yield peer
        finally:
            for server, thread in zip(servers, threads, strict=True):
                server.shutdown()
                server.server_close()
                thread.join(timeout=10)


@dataclass(frozen=True)
class Measured:
    """How a client process ended, what it printed, and the most memory it held."""

    returncode: int
    output: str
    timed_out: bool
    peak_rss: int  # bytes: the largest resident set of the process (or a child it waited for)

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss / MIB


# Runs the client and writes its exit status and peak RSS (KiB) to the file argv[1]. A launcher,
# because Linux carries a forking process's high-water RSS into its child's: measured straight
# from the test process, which holds the peer's answers, a client would inherit their size.
_LAUNCHER = """
import resource, subprocess, sys
status = subprocess.call(sys.argv[2:])
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
with open(sys.argv[1], "w") as report:
    report.write(f"{status} {peak}")
"""


def run_measured(
    argv: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Measured:
    """Run a client to its end, or kill it (and its process group) after `timeout` seconds,
    and measure its peak RSS (its own, and that of any child it waited for)."""
    with tempfile.TemporaryDirectory(prefix="measured-") as tmp:
        report = Path(tmp) / "report"
        process = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(report), *argv], cwd=cwd, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher leads the group: its own id
            output, _ = process.communicate()
            return Measured(-1, output.decode(errors="replace"), True, 0)
        status, peak_kib = report.read_text().split()
    text = output.decode(errors="replace")
    return Measured(int(status), text, False, int(peak_kib) * 1024)
