"""For the Python SDK's key cache and verifier tests: a local JWKS peer (a real HTTP server on
loopback whose answers the test sets), signing keys, tokens and a fake clock."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

START = 1_800_000_000.0  # the fake clock's start, seconds since the epoch


class FakeClock:
    """The one fake: the time the cache and the verifier read, moved by the test."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey

    def jwk(self, **extra: Any) -> dict[str, Any]:
        """The public JWK of this key, as the server publishes it."""
        public = self.private.public_key()
        algorithm = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        member: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)  # type: ignore[attr-defined]
        member.update({"kid": self.kid, "alg": self.alg, "use": "sig", **extra})
        return member

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(
            claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **header}
        )


def new_key(kid: str, alg: str = "ES256") -> SigningKey:
    private: PrivateKey
    if alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ed25519.Ed25519PrivateKey.generate()
    return SigningKey(kid, alg, private)


def b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def key_set(*members: dict[str, Any]) -> bytes:
    return json.dumps({"keys": list(members)}).encode()


@dataclass
class Answer:
    """What the peer answers: status, body, headers; `etag` also makes it answer 304 to a
    matching If-None-Match; `other_304` makes it answer 304 with that tag to any
    If-None-Match; `hold` holds the answer back until `release` is set."""

    status: int = 200
    body: bytes = b""
    cache_control: str | None = "max-age=60, stale-while-revalidate=30, stale-if-error=300"
    etag: str | None = None
    hold: bool = False
    location: str | None = None
    other_304: str | None = None
    content_type: str = "application/json"


@dataclass
class JwksPeer:
    url: str
    answer: Answer
    requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)
    # Answers given before `answer`, one a request, in order.
    first: list[Answer] = field(default_factory=list)

    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Poll until the peer has answered `count` requests (bounded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= count and self.answered.is_set():
                return
            time.sleep(0.01)
        raise AssertionError(f"the peer saw {self.count()} requests, not {count}")


@contextmanager
def jwks_peer(answer: Answer, tls: ssl.SSLContext | None = None) -> Iterator[JwksPeer]:
    """A JWKS peer on a free loopback port, for the duration of the block (HTTPS with `tls`)."""
    state: list[JwksPeer] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            peer = state[0]
            with peer.lock:
                peer.answered.clear()
                peer.requests.append(
                    {"path": self.path, **{k.lower(): v for k, v in self.headers.items()}}
                )
                now = peer.first.pop(0) if peer.first else peer.answer
            if now.hold:
                peer.release.wait(30)
            asked = self.headers.get("if-none-match")
            other = now.other_304 is not None and asked is not None
            match = other or (now.etag is not None and asked == now.etag)
            self.send_response(304 if match else now.status)
            if now.cache_control is not None:
                self.send_header("cache-control", now.cache_control)
            etag = now.other_304 if other else now.etag
            if etag is not None:
                self.send_header("etag", etag)
            if now.location is not None:
                self.send_header("location", now.location)
            body = b"" if match else now.body
            self.send_header("content-type", now.content_type)
            if not match:
                self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            peer.answered.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    scheme = "http" if tls is None else "https"
    state.append(JwksPeer(f"{scheme}://127.0.0.1:{server.server_address[1]}", answer))
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state[0]
    finally:
        state[0].release.set()
        server.shutdown()
        server.server_close()
