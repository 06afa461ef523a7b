"""connect.unary: the lean path answers every request exactly as the connectrpc app it stands in
front of does (a differential test).

One matrix of requests (both RPCs and each outcome of their servicer: a rendered answer, a
plain message, NOT_FOUND without an issuer, UNAVAILABLE before the key set loads, an RpcError;
methods x encodings x compression both ways x deadlines x `connect-protocol-version` x
malformed queries, bodies, frames, content types and header values; bodies in one event or
several, cut short by a disconnect or by the body deadline) is sent, in-process, to the lean app
(`dispatch.connect`) and to the plain connectrpc app (`dispatch.connectrpc`) serving the same
servicer, and their answers are compared: HTTP status, every header, the body (a gzip body
decompressed; a gRPC-Web body parsed into its frames, each decompressed, the trailers read
line by line; a Connect error's JSON parsed), the code a client reads, the route named for
metrics, and any exception that left the app. Hypothesis then draws combinations of all of
them (a larger sweep is marked slow).

Deliberate differences, left out of the comparison:
- a Connect GET's caching headers (`ETag`, `Cache-Control`) on a 200 from the lean path, and its
  304 to an `If-None-Match` that names the answer (this matrix sends none that does);
- `Content-Length`, which the lean path writes and connectrpc does not;
- `Content-Encoding: identity` (the lean path never writes it; RpcCors drops connectrpc's);
- gzip bytes, which differ and are compared once decompressed;
- a body whole by its `Content-Length` and then a disconnect instead of the server's last,
  empty, body event: the lean path answers it (its own test below says why).
`Cache-Control: no-store` on an error comes from RpcCors in both, so it is compared. Every error
must come from connectrpc: the lean path hands over each request that gets one.

The lean path may hand any request over; a separate test holds it to answering the
well-formed calls of rendered answers itself (the connectrpc app is not reached, and the
answer carries what only the lean path writes), so this test cannot pass by handing
everything over.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import itertools
import json
import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, cast
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.asgi_types import App
from agentrouter_auth.connect import (
    code_of_bare_status,
    connect_code_at_start,
    connect_code_in_body,
    grpc_web_code_at_start,
    grpc_web_code_in_body,
)
from agentrouter_auth.http import dispatch
from agentrouter_auth.http.dispatch import PROTOCOLS
from agentrouter_auth.http.limits import RequestBodyTimeoutError
from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.rendered import render_message
from agentrouter_auth.runtime import Runtime
from agentrouter_auth.status import Code, RpcError
from tests.support.config import worker_config

from .conftest import StubServicer

JWKS = "/agentrouter.auth.v1.AuthService/GetJWKS"
OPENID = "/agentrouter.auth.v1.AuthService/GetOpenIDConfiguration"
LIMIT = 64 * 1024  # the apps' read_max_bytes (DEFAULT_READ_MAX_BYTES)
RUN_SECONDS = 5.0  # an app that has not answered by then has hung: that is an outcome too

# -- the servicers --------------------------------------------------------------------------------

# (servicer, RPC) pairs: each outcome a servicer can give an RPC.
TARGETS = (
    ("keys", JWKS),  # a rendered answer
    ("keys", OPENID),  # a rendered answer
    ("no-issuer", OPENID),  # NOT_FOUND
    ("not-loaded", JWKS),  # UNAVAILABLE
    ("message", JWKS),  # a plain message, not a rendered one
    ("error", OPENID),  # an RpcError whose message needs percent-encoding in grpc-message
    ("timeless", JWKS),  # a rendered answer without a freshness (no Cache-Control)
)
RENDERED = frozenset({("keys", JWKS), ("keys", OPENID), ("timeless", JWKS)})


class Spy:
    """The plain connectrpc app, counting the requests handed to it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


@dataclass
class Apps:
    """The lean app and the plain connectrpc app of one servicer."""

    lean: App
    plain: App
    handed: Spy  # what the lean app hands over reaches this


def apps_of(runtime: Runtime) -> Apps:
    spies: list[Spy] = []
    real = dispatch.connectrpc

    def spied(runtime: Runtime) -> App:
        spies.append(Spy(real(runtime)))
        return spies[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dispatch, "connectrpc", spied)
        lean = dispatch.connect(runtime)
    return Apps(lean, dispatch.connectrpc(runtime), spies[0])


class Servicers(dict[str, Apps]):
    """The apps of each servicer, by name, and the event loop that runs every request."""

    def __init__(self, apps: dict[str, Apps], runner: asyncio.Runner) -> None:
        super().__init__(apps)
        self.runner = runner


@pytest.fixture(scope="module")
def servicers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servicers]:
    keys = tmp_path_factory.mktemp("unary") / "keys"
    ring = KeyRing(DirectoryStore(keys), Policy())
    ring.init(["ES256", "EdDSA"])
    ring.load()
    config = worker_config(str(keys), ring.policy)
    with_issuer = replace(config, issuer="https://issuer.example")
    unloaded = KeyRing(DirectoryStore(keys), Policy())  # never loaded: UNAVAILABLE
    plain = auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="k", kty="OKP")])
    denied = RpcError(Code.PERMISSION_DENIED, "refusé: 100% / <no>")

    def stub(servicer: StubServicer) -> Runtime:
        return cast("Runtime", SimpleNamespace(service=servicer))

    apps = {
        "keys": apps_of(Runtime(with_issuer, ring, PROTOCOLS)),
        "no-issuer": apps_of(Runtime(config, ring, PROTOCOLS)),
        "not-loaded": apps_of(Runtime(config, unloaded, PROTOCOLS)),
        "message": apps_of(stub(StubServicer(plain))),
        "error": apps_of(stub(StubServicer(plain, denied))),
        "timeless": apps_of(stub(StubServicer(render_message(plain)))),
    }
    with asyncio.Runner() as runner:
        yield Servicers(apps, runner)


# -- a request, and running it ----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One request: its head, its body as the server gives it (events), and how the body ends:
    `end` (the last event says no more body), `trailing` (then one more, empty, event says so:
    granian's way with a Content-Length body), `disconnect` (every event says more body is
    coming, then the client is gone) or `timeout` (then every read fails as http.limits'
    body deadline makes it fail)."""

    name: str
    target: tuple[str, str]
    method: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    query: bytes = b""
    chunks: tuple[bytes, ...] = (b"",)
    ending: str = "end"
    well_formed: bool = False  # the lean path must answer it itself (of a rendered answer)
    path: str = ""  # instead of the target's
    root_path: str = ""

    def scope(self) -> dict[str, Any]:
        path = self.path or self.target[1]
        return {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1", "method": self.method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": self.query,
            "root_path": self.root_path, "headers": list(self.headers),
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080), "extensions": {},
        }  # fmt: skip

    def events(self) -> deque[dict[str, Any]]:
        more = self.ending != "end"
        events: deque[dict[str, Any]] = deque(
            {"type": "http.request", "body": chunk, "more_body": more or i < len(self.chunks) - 1}
            for i, chunk in enumerate(self.chunks)
        )
        if self.ending == "trailing":
            events.append({"type": "http.request", "body": b"", "more_body": False})
        elif self.ending == "disconnect":
            events.append({"type": "http.disconnect"})
        return events


@dataclass(frozen=True)
class Answer:
    """What a client (and the metrics) can tell of an answer, deliberate differences left out."""

    status: int | None
    headers: tuple[tuple[bytes, bytes], ...]
    body: object
    code: Code | None
    route: object
    raised: str | None


async def run(
    app: App, request: Request
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """The scope afterwards, the messages sent, and the exception that left the app."""
    scope = request.scope()
    events = request.events()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.popleft()
        if request.ending == "timeout":
            raise RequestBodyTimeoutError(10)
        await asyncio.Event().wait()  # the client waits for its answer
        raise AssertionError  # unreachable

    async def send(message: Any) -> None:
        sent.append(dict(message))
        await asyncio.sleep(0)  # a server's send yields to the loop

    raised = None
    try:
        await asyncio.wait_for(app(scope, receive, send), RUN_SECONDS)
    except Exception as error:
        raised = f"{type(error).__name__}: {error}"
    return scope, sent, raised


LEFT_OUT = frozenset({b"content-length"})
CACHING = frozenset({b"etag", b"cache-control"})


def answer_of(
    request: Request, scope: dict[str, Any], sent: list[dict[str, Any]], raised: str | None
) -> Answer:
    starts = [m for m in sent if m["type"] == "http.response.start"]
    if not starts:
        return Answer(None, (), None, None, scope.get("route"), raised)
    start = starts[0]
    status = int(start["status"])
    raw = [(bytes(k), bytes(v)) for k, v in start.get("headers", ())]
    left_out = LEFT_OUT | (CACHING if request.method == "GET" and status == 200 else set())
    headers = tuple(
        sorted(
            (k, v)
            for k, v in raw
            if k not in left_out and (k, v) != (b"content-encoding", b"identity")
        )
    )
    body = b"".join(bytes(m.get("body", b"")) for m in sent if m["type"] == "http.response.body")
    found = dict(raw)
    content_type = found.get(b"content-type", b"")
    decoded: object
    code: Code | None
    if content_type.startswith(b"application/grpc-web"):
        decoded = grpc_web_frames(body)
        code = grpc_web_code_at_start(status, start)
        if code is None:
            trailers = [f for f in decoded if isinstance(f, tuple) and f[0] == "trailers"]
            code = grpc_web_code_in_body(_trailers_frame(trailers[-1])) if trailers else None
    else:
        decoded = gunzip(body) if found.get(b"content-encoding") == b"gzip" else body
        if status != 200 and content_type == b"application/json":
            decoded = json.loads(body)
        code = connect_code_at_start(status, start)
        if code is None:
            code = connect_code_in_body(body) or code_of_bare_status(status)
    extra = [m["type"] for m in sent[1:] if m["type"] != "http.response.body"]
    return Answer(status, headers, (decoded, len(starts), extra), code, scope.get("route"), raised)


def gunzip(data: bytes) -> bytes:
    """`data` decompressed, or marked as not gzip (connectrpc can send a second answer after
    the head of a first one, if the deadline passes while that head is being sent)."""
    try:
        return gzip.decompress(data)
    except OSError:
        return b"not gzip: " + data


def grpc_web_frames(body: bytes) -> tuple[object, ...]:
    """A gRPC-Web body as its frames: (kind, flags, data decompressed), trailers as lines."""
    frames: list[object] = []
    while len(body) >= 5:
        flags = body[0]
        size = int.from_bytes(body[1:5], "big")
        data, body = body[5 : 5 + size], body[5 + size :]
        if flags & 1:
            data = gunzip(data)
        if flags & 0x80:
            lines = tuple(line.partition(b":")[::2] for line in data.split(b"\r\n") if line)
            frames.append(("trailers", flags, tuple((k, v.strip()) for k, v in lines)))
        else:
            frames.append(("message", flags, data))
    if body:
        frames.append(("rest", body))
    return tuple(frames)


def _trailers_frame(frame: object) -> bytes:
    lines = cast("tuple[str, int, tuple[tuple[bytes, bytes], ...]]", frame)[2]
    data = b"".join(k + b": " + v + b"\r\n" for k, v in lines)
    return struct.pack(">BI", 0x80, len(data)) + data


@dataclass(frozen=True)
class Outcome:
    lean: Answer
    plain: Answer
    handed_over: bool
    lean_headers: frozenset[bytes]  # the names of the headers each wrote, all of them
    plain_headers: frozenset[bytes]


def header_names(sent: list[dict[str, Any]]) -> frozenset[bytes]:
    return frozenset(bytes(k) for m in sent[:1] for k, _ in m.get("headers", ()))


async def both(apps: Apps, request: Request) -> Outcome:
    before = apps.handed.calls
    lean = await run(apps.lean, request)
    handed_over = apps.handed.calls > before
    plain = await run(apps.plain, request)
    return Outcome(
        answer_of(request, *lean),
        answer_of(request, *plain),
        handed_over,
        header_names(lean[1]),
        header_names(plain[1]),
    )


def outcomes(servicers: Servicers, requests: Iterable[Request]) -> list[tuple[Request, Outcome]]:
    async def go() -> list[tuple[Request, Outcome]]:
        return [(r, await both(servicers[r.target[0]], r)) for r in requests]

    return servicers.runner.run(go())


def divergences(results: list[tuple[Request, Outcome]]) -> list[str]:
    """Every request whose two answers differ, or whose error the lean path answered."""
    found = []
    for request, outcome in results:
        if outcome.lean != outcome.plain:
            found.append(
                f"{request}\n  lean:  {outcome.lean!r:.500}\n  plain: {outcome.plain!r:.500}"
            )
        elif outcome.plain.code is not Code.OK and not outcome.handed_over:
            found.append(f"{request}\n  an error not handed over: {outcome.lean!r:.500}")
    return found


def assert_same(servicers: Servicers, requests: Iterable[Request]) -> None:
    requests = list(requests)
    assert requests
    found = divergences(outcomes(servicers, requests))
    assert not found, f"{len(found)} of {len(requests)} differ:\n" + "\n".join(found[:8])


# -- building requests ----------------------------------------------------------------------------

PROTO_MESSAGE = b"\x08\x01"  # an unknown field: a valid, non-empty request
JSON_MESSAGE = b'{"unknown": [1, {"x": null}]}'  # unknown fields are ignored
ENCODINGS = ("proto", "json", "xml", None)  # None: not said
COMPRESSIONS = ("identity", "gzip", "br", "corrupt-gzip", None)  # None: not said
ACCEPTS = (None, "gzip", "identity", "gzip;q=0", "br, gzip", "")
MORE_ACCEPTS = ("identity, gzip", " gzip ,br", "GZIP", "*", "gzip;q=1", "x-gzip", ",gzip")
PROTOCOLS_ = ("connect-get", "connect-post", "grpc-web")


def message_of(encoding: str | None) -> bytes:
    return JSON_MESSAGE if encoding == "json" else PROTO_MESSAGE


def compressed(compression: str | None, data: bytes) -> bytes:
    if compression == "gzip":
        return gzip.compress(data)
    if compression == "corrupt-gzip":
        return gzip.compress(data)[:-6]
    return data


def coding_name(compression: str | None) -> str | None:
    return "gzip" if compression == "corrupt-gzip" else compression


def frame(flags: int, data: bytes) -> bytes:
    return struct.pack(">BI", flags, len(data)) + data


def b64(data: bytes, *, url: bool = True, pad: bool = False) -> str:
    text = (base64.urlsafe_b64encode if url else base64.standard_b64encode)(data).decode()
    return text if pad else text.rstrip("=")


def query_of(params: Iterable[tuple[str, str]]) -> bytes:
    return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in params).encode()


def header_list(*pairs: tuple[str, str | None]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode(), v.encode()) for k, v in pairs if v is not None)


def call(
    protocol: str,
    target: tuple[str, str],
    *,
    encoding: str | None = "proto",
    compression: str | None = None,
    accept: str | None = None,
    headers: tuple[tuple[str, str | None], ...] = (),
    method: str | None = None,
    chunks: int = 1,
    name: str = "",
) -> Request:
    """A call of `protocol` as a client would make it, varied as asked."""
    message = compressed(compression, message_of(encoding))
    coding = coding_name(compression)
    head: list[tuple[str, str | None]] = []
    query = b""
    body = b""
    if protocol == "connect-get":
        params = [("encoding", encoding)] if encoding is not None else []
        if encoding == "json" and compression in (None, "identity"):
            params.append(("message", message.decode()))
        else:
            params += [("message", b64(message)), ("base64", "1")]
        if coding is not None:
            params.append(("compression", coding))
        query = query_of((k, v) for k, v in params if v is not None)
        head.append(("accept-encoding", accept))
    elif protocol == "connect-post":
        head += [
            ("content-type", None if encoding is None else f"application/{encoding}"),
            ("content-encoding", coding),
            ("accept-encoding", accept),
        ]
        body = message
    else:
        content_type = "application/grpc-web" + ("" if encoding is None else f"+{encoding}")
        head += [
            ("content-type", content_type),
            ("grpc-encoding", coding),
            ("grpc-accept-encoding", accept),
            ("x-grpc-web", "1"),
        ]
        flags = 1 if compression in ("gzip", "corrupt-gzip") else 0
        body = frame(flags, message)
    head += headers
    step = max(1, -(-len(body) // chunks))
    pieces = tuple(body[i : i + step] for i in range(0, len(body), step)) or (b"",)
    codecs = ("proto", "json", None) if protocol == "grpc-web" else ("proto", "json")
    well_formed = (  # application/grpc-web alone is protobuf
        method in (None, "GET" if protocol == "connect-get" else "POST")
        and encoding in codecs
        and compression in (None, "identity", "gzip")
        and not headers
        and target in RENDERED
    )
    return Request(
        name or f"{protocol} {encoding} {compression} accept={accept!r} {list(headers)}",
        target,
        method or ("GET" if protocol == "connect-get" else "POST"),
        header_list(*head),
        query,
        pieces,
        well_formed=well_formed,
    )


def core_matrix() -> Iterator[Request]:
    """Every RPC outcome x protocol x encoding x request compression x accepted compression."""
    for target, protocol, encoding, compression, accept in itertools.product(
        TARGETS, PROTOCOLS_, ENCODINGS, COMPRESSIONS, ACCEPTS
    ):
        yield call(protocol, target, encoding=encoding, compression=compression, accept=accept)


def accept_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """More ways to say which compression an answer may have."""
    for protocol, accept, compression in itertools.product(
        PROTOCOLS_, MORE_ACCEPTS, (None, "gzip")
    ):
        yield call(protocol, target, compression=compression, accept=accept)


def test_the_core_matrix_is_answered_alike(servicers: Servicers) -> None:
    assert_same(servicers, core_matrix())


def test_the_lean_path_answers_well_formed_calls_of_rendered_answers_itself(
    servicers: Servicers,
) -> None:
    requests = [r for r in core_matrix() if r.well_formed]
    assert len(requests) >= 100
    for request, outcome in outcomes(servicers, requests):
        assert not outcome.handed_over, request
        assert outcome.lean.code is Code.OK, request
        # What only the lean path writes: connectrpc never writes a Content-Length or an ETag.
        assert b"content-length" not in outcome.plain_headers, request
        assert b"etag" not in outcome.plain_headers, request
        assert b"content-length" in outcome.lean_headers, request
        assert (b"etag" in outcome.lean_headers) == (request.method == "GET"), request


# -- methods, deadlines, protocol version, headers ----------------------------------------------


def each_target(build: Callable[[tuple[str, str]], Iterable[Request]]) -> Iterator[Request]:
    for target in TARGETS:
        yield from build(target)


def method_matrix(target: tuple[str, str]) -> Iterator[Request]:
    for method, protocol, encoding in itertools.product(
        ("GET", "POST", "HEAD", "PUT", "OPTIONS", "DELETE"), PROTOCOLS_, ("proto", "json")
    ):
        yield call(protocol, target, encoding=encoding, method=method)
        preflight = (("origin", "https://a.example"), ("access-control-request-method", "POST"))
        yield call(protocol, target, encoding=encoding, method=method, headers=preflight)


CONNECT_TIMEOUTS = (None, "30000", "9999999999", "0", "00", "abc", "-5", "+5", " 5", "1.5",
                    "12345678901", "5s", "")  # fmt: skip
GRPC_TIMEOUTS = (None, "30S", "99999999m", "0S", "0n", "abc", "S", "123456789S", "10x", "10",
                 "-1S", "")  # fmt: skip


def path_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """Paths beside the RPC's: another procedure, a near miss, the app mounted under a prefix."""
    rpc = target[1]
    for protocol, (path, root_path) in itertools.product(
        PROTOCOLS_,
        [
            ("/agentrouter.auth.v1.AuthService/Nope", ""), (rpc + "/", ""), (rpc.lower(), ""),
            (rpc.replace("/", "//", 1), ""), ("/mount" + rpc, "/mount"), (rpc, "/mount"),
        ],
    ):  # fmt: skip
        request = call(protocol, target, compression="gzip", accept="gzip")
        yield replace(request, name=f"{request.name} at {path} under {root_path!r}", path=path,
                      root_path=root_path)  # fmt: skip


def deadline_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """Each protocol's deadline header, alone and beside the other protocol's."""
    pairs = {
        *itertools.product(CONNECT_TIMEOUTS, (None, "30S", "abc")),
        *itertools.product((None, "30000", "abc"), GRPC_TIMEOUTS),
    }
    for protocol, (connect_timeout, grpc_timeout) in itertools.product(
        PROTOCOLS_, sorted(pairs, key=str)
    ):
        headers = (("connect-timeout-ms", connect_timeout), ("grpc-timeout", grpc_timeout))
        yield call(protocol, target, headers=headers)


VERSIONS: tuple[tuple[tuple[str, str | None], ...], ...] = (
    (), (("connect-protocol-version", "1"),), (("connect-protocol-version", "2"),),
    (("connect-protocol-version", ""),), (("connect-protocol-version", " 1"),),
    (("connect-protocol-version", "1"), ("connect-protocol-version", "1")),
    (("connect-protocol-version", "1"), ("connect-protocol-version", "2")),
    (("connect-protocol-version", "2"), ("connect-protocol-version", "1")),
)  # fmt: skip


def version_matrix(target: tuple[str, str]) -> Iterator[Request]:
    for protocol, version, encoding in itertools.product(PROTOCOLS_, VERSIONS, ("proto", "json")):
        yield call(protocol, target, encoding=encoding, headers=version)
        # with a deadline too: both are checked before the call
        yield call(protocol, target, headers=(*version, ("connect-timeout-ms", "30000")))


# Headers given twice, or with values that are not ASCII (valid UTF-8 or not).
ODD_HEADERS: tuple[tuple[tuple[bytes, bytes], ...], ...] = (
    ((b"accept-encoding", b"gzip"), (b"accept-encoding", b"identity")),
    ((b"accept-encoding", b"identity"), (b"accept-encoding", b"gzip")),
    ((b"grpc-accept-encoding", b"gzip"), (b"grpc-accept-encoding", b"identity")),
    ((b"content-encoding", b"identity"), (b"content-encoding", b"gzip")),
    ((b"grpc-encoding", b"identity"), (b"grpc-encoding", b"gzip")),
    ((b"connect-timeout-ms", b"30000"), (b"connect-timeout-ms", b"0")),
    ((b"grpc-timeout", b"30S"), (b"grpc-timeout", b"0S")),
    ((b"if-none-match", b'"nope"'), (b"if-none-match", b'"no"')),
    ((b"x-name", "é".encode()),),
    ((b"x-name", b"\xff"),),
    ((b"authorization", "Bearer ü".encode()),),
    ((b"accept-encoding", "gzip, ü".encode()),),
    ((b"accept-encoding", b"gzip, \xe9"),),
    ((b"if-none-match", '"ü"'.encode()),),
    ((b"connect-timeout-ms", "\uff130".encode()),),  # a digit, not an ASCII one
    ((b"connect-timeout-ms", "²".encode()),),
    ((b"grpc-timeout", "\uff11S".encode()),),
    ((b"user-agent", b"\x80\x81"),),
    ((b"if-none-match", b'"nope", W/"x"'),),
    ((b"host", b"example.com:8080"),),
    ((b"content-encoding", b"br"),),
    ((b"accept-encoding", b"gzip"), (b"grpc-accept-encoding", b"gzip")),
    ((b"x-\xc3\xa9", b"1"),),  # a name that is not ASCII
    ((b"x-\xff", b"1"),),  # a name that is not UTF-8
)


def header_matrix(target: tuple[str, str]) -> Iterator[Request]:
    for protocol, odd in itertools.product(PROTOCOLS_, ODD_HEADERS):
        base = call(protocol, target, encoding="json")
        yield replace(base, name=f"{base.name} + {odd}", headers=base.headers + odd)
        base = call(protocol, target, compression="gzip", accept="gzip")
        yield replace(base, name=f"{base.name} + {odd}", headers=base.headers + odd)


@pytest.mark.parametrize(
    "matrix",
    [method_matrix, path_matrix, accept_matrix, deadline_matrix, version_matrix, header_matrix],
    ids=lambda matrix: matrix.__name__,
)  # fmt: skip
def test_methods_deadlines_versions_and_headers_are_answered_alike(
    servicers: Servicers, matrix: Callable[[tuple[str, str]], Iterable[Request]]
) -> None:
    assert_same(servicers, each_target(matrix))


# -- malformed requests ---------------------------------------------------------------------------

EMPTY_GZIP = gzip.compress(b"")
BIG = b"\x0a\x00" * (LIMIT // 2 + 1)  # unknown empty fields: a valid message over the limit


def get(target: tuple[str, str], query: bytes | str, name: str, **kwargs: Any) -> Request:
    raw = query.encode() if isinstance(query, str) else query
    return Request(f"GET ?{name}", target, "GET", query=raw, **kwargs)


def get_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """Connect GET queries, well-formed and not."""
    proto = b64(PROTO_MESSAGE)
    zipped = gzip.compress(PROTO_MESSAGE)
    url_only = b64(b"\xfb\xff\xbf", pad=True)  # -_ in base64url, +/ in standard base64
    standard = b64(b"\xfb\xff\xbf", url=False)
    queries: list[bytes | str] = [
        "", "encoding=proto", "message=", "encoding=proto&message=",
        "encoding=json&message=", "encoding=proto&message=&base64=1",
        "encoding=json&message=%7B%7D", "encoding=json&message={}",
        "encoding=json&message=%7B%7D&base64=0", "encoding=json&message=%7B%7D&base64=true",
        "encoding=json&message=e30&base64=1", "encoding=json&message=e30%3D&base64=1",
        "encoding=json&message=e30=&base64=1", "encoding=json&message=e30==&base64=1",
        f"encoding=proto&message={proto}&base64=1",
        f"encoding=proto&message={url_only}&base64=1",
        f"encoding=proto&message={standard}&base64=1",  # + unescaped: a space
        "encoding=proto&message=%2B%2F%2B%2F&base64=1",  # +/ escaped
        "encoding=proto&message=-_%2B%2F&base64=1",  # both alphabets at once
        "encoding=proto&message=!!!!&base64=1", "encoding=proto&message=CAE%3D%3D%3D&base64=1",
        "encoding=proto&message=C&base64=1", "encoding=proto&message=CA&base64=1",
        "encoding=proto&message=CA%20E&base64=1", "encoding=proto&message=CA+E&base64=1",
        f"encoding=proto&message={b64(zipped)}&base64=1&compression=gzip",
        f"encoding=proto&message={b64(zipped[:-3])}&base64=1&compression=gzip",
        f"encoding=proto&message={b64(EMPTY_GZIP)}&base64=1&compression=gzip",
        "encoding=proto&message=&base64=1&compression=gzip",
        f"encoding=proto&message={proto}&base64=1&compression=",
        f"encoding=proto&message={proto}&base64=1&compression=identity",
        f"encoding=proto&message={proto}&base64=1&compression=br",
        f"encoding=proto&message={proto}&base64=1&compression=GZIP",
        f"encoding=json&message={b64(gzip.compress(b'{}'))}&base64=1&compression=gzip",
        "encoding=json&message=%7Bx&base64=0", "encoding=json&message=%5B%5D",
        "encoding=json&message=%22x%22", "encoding=json&message=null",
        "encoding=json&message=%7B%22unknown%22%3A1%7D", "encoding=json&message=%EF%BB%BF%7B%7D",
        "encoding=json&message=%7B%22a%22%3A%ff%7D", "encoding=json&message=%ff",
        b"encoding=json&message=\xff", b"encoding=proto&message=&x=\xc3\x28",
        "encoding=json&message=%7B%7D&message=junk", "encoding=json&message=junk&message=%7B%7D",
        "encoding=xml&encoding=json&message=%7B%7D", "encoding=json&encoding=xml&message=%7B%7D",
        f"encoding=proto&message={proto}&base64=true", f"encoding=proto&message={proto}&base64=0",
        f"encoding=proto&message={proto}&base64=", f"encoding=proto&message={proto}&base64",
        f"encoding=proto&message={proto}&base64=01", f"encoding=proto&message={proto}&base64=1%20",
        "encoding=json&message=e30&base64=true", "encoding=json&message=e30&base64=yes",
        f"encoding=proto&message={proto}&base64=1&base64=0",
        f"encoding=proto&message={proto}&base64=0&base64=1",
        "encoding=json&message=%7B%7D&connect=v1", "encoding=json&message=%7B%7D&connect=v2",
        "encoding=JSON&message=%7B%7D", "encoding=json;&message=%7B%7D",
        "encodin%67=json&message=%7B%7D", "encoding=json&mess%61ge=%7B%7D",
        "&&encoding=json&&message=%7B%7D&", "encoding=json&message",
        "encoding=json;message=%7B%7D", "encoding=json&message=%7B%7D#frag",
        f"encoding=proto&message={b64(BIG)}&base64=1",
        f"encoding=proto&message={b64(gzip.compress(BIG))}&base64=1&compression=gzip",
    ]  # fmt: skip
    for query in queries:
        for accept in (None, "gzip"):
            headers = header_list(("accept-encoding", accept))
            yield get(target, query, str(query), headers=headers)
    # A GET with a body, or a content type: both are the query's alone.
    for content_type in (
        "application/proto", "application/json", "application/grpc-web+json",
        "application/grpc-web-text", "application/connect+proto", "text/plain",
    ):  # fmt: skip
        headers = header_list(("content-type", content_type))
        yield get(target, "encoding=json&message=%7B%7D", content_type, headers=headers)
    yield get(target, "encoding=json&message=%7B%7D", "with a body", chunks=(b"{}",))


def post_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """Connect POST bodies: empty, truncated, too long, in several events, cut short."""
    bodies: dict[str, tuple[bytes, ...]] = {
        "empty": (b"",),
        "unknown field": (PROTO_MESSAGE,),
        "truncated field": (b"\x0a\x05ab",),
        "bad wire type": (b"\x0f",),
        "json": (b"{}",),
        "json in pieces": (b"{", b"", b"}"),
        "empty then the body": (b"", b"{}"),
        "json with spaces": (b" \n{ } ",),
        "json array": (b"[]",),
        "json string": (b'"x"',),
        "json junk": (b"{x",),
        "json BOM": (b"\xef\xbb\xbf{}",),
        "json not UTF-8": (b'{"\xff": 1}',),
        "at the limit": (b"\x0a\x00" * (LIMIT // 2),),
        "over the limit": (BIG,),
        "over the limit in pieces": (BIG[: LIMIT // 2], BIG[LIMIT // 2 :]),
        "many pieces": tuple(bytes([b]) for b in b'{"a":[1,2,3]}'),
    }
    for (name, chunks), content_type in itertools.product(
        bodies.items(), ("application/proto", "application/json")
    ):
        if content_type == "application/json" and "limit" in name:
            continue  # the limits are the body's, whatever its codec
        length = str(sum(map(len, chunks)))
        for ending, extra in (
            ("end", ()),
            ("end", (("content-length", length),)),
            ("trailing", (("content-length", length),)),
            ("trailing", ()),
            ("disconnect", ()),
            ("disconnect", (("content-length", str(int(length) + 1)),)),
            ("timeout", ()),
            ("timeout", (("content-length", str(int(length) + 1)),)),
        ):
            headers = header_list(("content-type", content_type), *extra)
            yield Request(
                f"POST {content_type} {name} {extra} {ending}", target, "POST", headers,
                chunks=chunks, ending=ending,
            )  # fmt: skip
    for name, body, coding in (
        ("gzip", gzip.compress(b"{}"), "gzip"),
        ("gzip empty", b"", "gzip"),
        ("gzip of nothing", EMPTY_GZIP, "gzip"),
        ("gzip corrupt", gzip.compress(b"{}")[:-4], "gzip"),
        ("gzip not gzip", b"{}", "gzip"),
        ("gzip over the limit once inflated", gzip.compress(b" " * LIMIT + b"{}"), "gzip"),
        ("gzip twice", gzip.compress(b"{}") * 2, "gzip"),
        ("gzip of nothing, over the limit", EMPTY_GZIP * (LIMIT // len(EMPTY_GZIP) + 1), "gzip"),
        ("br", b"{}", "br"),
        ("br empty", b"", "br"),
        ("identity", b"{}", "identity"),
        ("empty coding", b"{}", ""),
        ("upper case", b"{}", "GZIP"),
        ("two codings", gzip.compress(b"{}"), "gzip, identity"),
    ):
        headers = header_list(("content-type", "application/json"), ("content-encoding", coding))
        yield Request(f"POST json {name}", target, "POST", headers, chunks=(body,))
        as_proto = header_list(("content-type", "application/proto"), ("content-encoding", coding))
        yield Request(f"POST proto {name}", target, "POST", as_proto, chunks=(body,))
        half = len(body) // 2
        yield Request(
            f"POST json {name} cut", target, "POST", headers, chunks=(body[:half],),
            ending="disconnect",
        )  # fmt: skip


def grpc_web_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """gRPC-Web bodies: zero or two frames, bad flags, compression, lengths that lie."""
    one = frame(0, PROTO_MESSAGE)
    zipped = gzip.compress(PROTO_MESSAGE)
    bodies: dict[str, tuple[bytes, str | None]] = {
        "zero frames": (b"", None),
        "an empty frame": (frame(0, b""), None),
        "one frame": (one, None),
        "two frames": (one + one, None),
        "a frame and trailers": (one + frame(0x80, b"grpc-status: 0\r\n"), None),
        "trailers only": (frame(0x80, b""), None),
        "flag 2": (frame(2, PROTO_MESSAGE), None),
        "flag 0x80": (frame(0x80, PROTO_MESSAGE), None),
        "flag 0xff": (frame(0xFF, PROTO_MESSAGE), None),
        "compressed, no coding": (frame(1, zipped), None),
        "flagged compressed, no coding": (frame(1, PROTO_MESSAGE), None),
        "flagged compressed, identity": (frame(1, PROTO_MESSAGE), "identity"),
        "flagged compressed, empty coding": (frame(1, PROTO_MESSAGE), ""),
        "compressed, identity": (frame(1, zipped), "identity"),
        "compressed, gzip": (frame(1, zipped), "gzip"),
        "not compressed, gzip": (one, "gzip"),
        "compressed, corrupt": (frame(1, zipped[:-3]), "gzip"),
        "compressed, empty": (frame(1, b""), "gzip"),
        "compressed, br": (frame(1, zipped), "br"),
        "not compressed, br": (one, "br"),
        "compressed, over the limit once inflated": (frame(1, gzip.compress(BIG)), "gzip"),
        "compressed nothing, over the limit": (frame(1, EMPTY_GZIP * (LIMIT // 20 + 1)), "gzip"),
        "length too long": (one[:4] + b"\x09" + one[5:], None),
        "length too short": (one[:4] + b"\x01" + one[5:], None),
        "length over the limit": (struct.pack(">BI", 0, LIMIT + 1) + PROTO_MESSAGE, None),
        "a short header": (one[:3], None),
        "a header only": (one[:5], None),
        "over the limit": (frame(0, BIG), None),
        "at the limit": (frame(0, b"\x0a\x00" * (LIMIT // 2)), None),
        "bad message": (frame(0, b"\x0a\x05ab"), None),
    }
    for (name, (body, coding)), content_type in itertools.product(
        bodies.items(), ("application/grpc-web", "application/grpc-web+json")
    ):
        if content_type.endswith("json"):
            if len(body) > 1024:
                continue  # the limits are the frame's, whatever its codec
            if body == one:
                body = frame(0, b"{}")  # noqa: PLW2901 - the JSON form of the same frame
        headers = header_list(("content-type", content_type), ("grpc-encoding", coding))
        with_length = headers + header_list(("content-length", str(len(body))))
        yield Request(
            f"gRPC-Web {content_type} {name} with its length", target, "POST", with_length,
            chunks=(body,), ending="trailing",
        )  # fmt: skip
        for chunks, ending in (
            ((body,), "end"),
            ((body,), "timeout"),
            ((*(body[i : i + 3] for i in range(0, min(len(body), 30), 3)), body[30:]), "end"),
            ((body[: len(body) // 2],), "disconnect"),
        ):
            yield Request(
                f"gRPC-Web {content_type} {name} in {len(chunks)} {ending}", target, "POST",
                headers, chunks=chunks, ending=ending,
            )  # fmt: skip


CONTENT_TYPES = (
    None, "", "application/proto", "application/json", "application/json; charset=utf-8",
    "application/json;charset=UTF-8", "application/proto; x=y", "Application/JSON",
    "APPLICATION/PROTO", " application/json", "application/json ", "application/xml",
    "text/plain", "application/connect+proto", "application/connect+json",
    "application/grpc-web", "application/grpc-web+proto", "application/grpc-web+json",
    "application/grpc-web+xml", "application/grpc-web+proto; charset=utf-8",
    "application/grpc-web; charset=utf-8", "Application/grpc-web+proto",
    "APPLICATION/GRPC-WEB", "application/grpc-web-text", "application/grpc-web-text+proto",
    "application/grpc-web+", "application/grpc", "application/grpc+proto", "application/grpcx",
    "application/", "application/protobuf",
)  # fmt: skip


def content_type_matrix(target: tuple[str, str]) -> Iterator[Request]:
    """Content types with parameters, in upper case, of other protocols, for each body."""
    bodies = {"empty": b"", "proto": PROTO_MESSAGE, "json": b"{}", "frame": frame(0, b"")}
    for content_type, (name, body) in itertools.product(CONTENT_TYPES, bodies.items()):
        headers = header_list(("content-type", content_type))
        yield Request(f"POST {content_type!r} {name}", target, "POST", headers, chunks=(body,))
        yield Request(
            f"GET {content_type!r} {name}", target, "GET", headers,
            query=b"encoding=json&message=%7B%7D", chunks=(body,),
        )  # fmt: skip


@pytest.mark.parametrize(
    "matrix", [get_matrix, post_matrix, grpc_web_matrix, content_type_matrix],
    ids=lambda matrix: matrix.__name__,
)  # fmt: skip
def test_malformed_requests_are_answered_alike(
    servicers: Servicers, matrix: Callable[[tuple[str, str]], Iterable[Request]]
) -> None:
    assert_same(servicers, each_target(matrix))


def test_a_body_whole_by_its_content_length_is_answered_though_the_client_then_leaves(
    servicers: Servicers,
) -> None:
    """The one difference found that is kept: once a body has all the bytes its Content-Length
    announced, the lean path answers without reading the server's last body event (granian
    sends an empty one after a Content-Length body: one round trip less per POST). When the
    client leaves in between and the ASGI server reports a disconnect instead, connectrpc
    (through ConnectApp) answers it as a body cut short: 400. The client is gone either way; only
    the metrics and the access log would see 200 rather than 400. (granian 2.8, probed, still
    gives the last empty event to a client that closes right after its body.)"""
    headers = header_list(("content-type", "application/json"), ("content-length", "2"))
    request = Request("POST {} then gone", ("keys", JWKS), "POST", headers, chunks=(b"{}",),
                      ending="disconnect")  # fmt: skip
    ((_, outcome),) = outcomes(servicers, [request])
    assert not outcome.handed_over
    assert (outcome.lean.status, outcome.lean.code) == (200, Code.OK)
    assert (outcome.plain.status, outcome.plain.code) == (400, Code.INVALID_ARGUMENT)
    trailing = replace(request, ending="trailing")
    ((_, outcome),) = outcomes(servicers, [trailing])
    assert outcome.lean == outcome.plain


# -- every dimension at once ----------------------------------------------------------------------

EXTRA_HEADERS = st.sampled_from(
    [
        *(("connect-timeout-ms", v) for v in CONNECT_TIMEOUTS if v is not None),
        *(("grpc-timeout", v) for v in GRPC_TIMEOUTS if v is not None),
        *(("connect-protocol-version", v) for v in ("1", "2", "")),
        *(("content-type", v) for v in CONTENT_TYPES if v is not None),
        *(("accept-encoding", v) for v in (*ACCEPTS, *MORE_ACCEPTS) if v is not None),
        *(("grpc-accept-encoding", v) for v in (*ACCEPTS, *MORE_ACCEPTS) if v is not None),
        *(("content-encoding", v) for v in ("gzip", "identity", "br", "")),
        *(("grpc-encoding", v) for v in ("gzip", "identity", "br", "")),
        ("if-none-match", '"nope"'), ("x-name", "é"), ("te", "trailers"),
    ]
)  # fmt: skip


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A call of any protocol, with any of the matrix's variations combined."""
    target = draw(st.sampled_from(TARGETS))
    protocol = draw(st.sampled_from(PROTOCOLS_))
    request = call(
        protocol,
        target,
        encoding=draw(st.sampled_from(ENCODINGS)),
        compression=draw(st.sampled_from(COMPRESSIONS)),
        accept=draw(st.sampled_from(ACCEPTS)),
        method=draw(st.sampled_from([None, None, None, "GET", "POST", "HEAD", "PUT", "OPTIONS"])),
        chunks=draw(st.integers(1, 3)),
    )
    headers = list(request.headers)
    for name, value in draw(st.lists(EXTRA_HEADERS, max_size=3)):
        if draw(st.booleans()):  # instead of the call's own, or beside it
            headers = [pair for pair in headers if pair[0] != name.encode()]
        headers.append((name.encode(), value.encode()))
    ending = draw(st.sampled_from(["end", "end", "trailing", "disconnect", "timeout"]))
    length = sum(map(len, request.chunks))
    if ending in ("end", "trailing") and draw(st.booleans()):
        headers.append((b"content-length", str(length).encode()))
    elif ending != "end" and draw(st.booleans()):
        headers.append((b"content-length", str(length + 1).encode()))
    return replace(request, name="drawn", headers=tuple(headers), ending=ending)


def assert_drawn_alike(servicers: Servicers, request: Request) -> None:
    found = divergences(outcomes(servicers, [request]))
    assert not found, found[0]


@settings(max_examples=200, deadline=None)
@given(request=requests())
def test_drawn_combinations_are_answered_alike(servicers: Servicers, request: Request) -> None:
    assert_drawn_alike(servicers, request)


@pytest.mark.slow  # measured: ~20 s
@settings(max_examples=2000, deadline=None)
@given(request=requests())
def test_many_drawn_combinations_are_answered_alike(servicers: Servicers, request: Request) -> None:
    assert_drawn_alike(servicers, request)
