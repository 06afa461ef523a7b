"""HTTP semantics of the HTTP port against the real server: validators per content coding
(RFC 9110 §8.8.3), Accept with q-values (§12.5.1), the Host header (RFC 9112 §3.2) and routing
on the path as sent (RFC 3986 §6.2.2.2: an encoded `/` is not a separator).

Requests are written byte for byte on a socket where a client library would fix them up
(httpx always sends one Host and normalises the path).
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator

import httpx
import pytest

from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing

from .serverproc import ServerProcess, serve_argv

pytestmark = pytest.mark.integration
JWKS = "/.well-known/jwks.json"
CONNECT = "/agentrouter.auth.v1.AuthService/GetJWKS"
CONNECT_GET = CONNECT + "?encoding=json&message=%7B%7D&connect=v1"
JWK_SET = "application/jwk-set+json"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys = tmp_path_factory.mktemp("semantics") / "keys"
    KeyRing(DirectoryStore(keys), Policy()).init(["ES256"])
    with ServerProcess(serve_argv(keys, "--rotation", "off")) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False) as client:
        yield client


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is on a new connection; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def get(target: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    """A GET of `target` with exactly these header lines (and Connection: close)."""
    lines = "".join(f"{line}\r\n" for line in (*headers, "Connection: close"))
    return f"GET {target} {version}\r\n{lines}\r\n".encode()


# -- 1. one strong validator per content coding ----------------------------------------------


class Fetched:
    """An answer with its body as sent (not decoded)."""

    def __init__(self, response: httpx.Response, raw: bytes) -> None:
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = raw


def fetch(http: httpx.Client, encoding: str, if_none_match: str | None = None) -> Fetched:
    headers = {"accept-encoding": encoding}
    if if_none_match is not None:
        headers["if-none-match"] = if_none_match
    with http.stream("GET", JWKS, headers=headers) as response:
        return Fetched(response, b"".join(response.iter_raw()))


def test_gzip_and_identity_bodies_have_different_strong_etags(http: httpx.Client) -> None:
    plain, zipped = fetch(http, "identity"), fetch(http, "gzip")
    assert zipped.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in plain.headers
    identity_tag, gzip_tag = plain.headers["etag"], zipped.headers["etag"]
    for tag in (identity_tag, gzip_tag):
        assert tag[0] + tag[-1] == '""', tag  # strong: no W/ prefix
    assert gzip_tag != identity_tag, "gzip and identity bodies share one strong ETag"
    # Each tag names its own bytes: the same request gets the same tag again.
    assert fetch(http, "gzip").headers["etag"] == gzip_tag
    assert fetch(http, "identity").headers["etag"] == identity_tag


def test_if_none_match_is_evaluated_against_the_representation_that_would_be_sent(
    http: httpx.Client,
) -> None:
    plain, zipped = fetch(http, "identity"), fetch(http, "gzip")
    identity_tag, gzip_tag = plain.headers["etag"], zipped.headers["etag"]
    # A client that cached one representation revalidates it: 304 with that tag.
    for encoding, tag in (("gzip", gzip_tag), ("identity", identity_tag)):
        again = fetch(http, encoding, tag)
        assert (again.status_code, again.headers["etag"]) == (304, tag), encoding
        assert again.content == b""
    # A cache that holds both sends both tags: the 304 says which one is current.
    both = f"{identity_tag}, {gzip_tag}"
    assert fetch(http, "gzip", both).headers["etag"] == gzip_tag
    assert fetch(http, "identity", both).headers["etag"] == identity_tag
    assert fetch(http, "gzip", both).status_code == 304
    # The other representation's tag does not validate this one: the full answer, its tag.
    swapped = fetch(http, "identity", gzip_tag)
    assert (swapped.status_code, swapped.headers["etag"]) == (200, identity_tag)
    assert swapped.content == plain.content
    swapped = fetch(http, "gzip", identity_tag)
    assert (swapped.status_code, swapped.headers["etag"]) == (200, gzip_tag)
    assert gzip.decompress(swapped.content) == plain.content
    # Weak comparison (RFC 9110 §13.1.2) and "*" still hold.
    assert fetch(http, "gzip", f"W/{gzip_tag}").status_code == 304
    assert fetch(http, "identity", "*").headers["etag"] == identity_tag


# -- 2. Accept with q-values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (f"{JWK_SET};q=0", "application/json"),  # refused: never that type
        (f"{JWK_SET}; q=0.0, */*", "application/json"),
        (f"{JWK_SET};q=0, application/json", "application/json"),
        (f"{JWK_SET}, application/json;q=0", JWK_SET),
        (f"application/json;q=0.5, {JWK_SET}", JWK_SET),
        (f"{JWK_SET};q=0.9, application/json;q=0.5", JWK_SET),
        (f"*/*;q=0.1, {JWK_SET};q=0.2", JWK_SET),
        (f"{JWK_SET}, application/json", "application/json"),  # a tie: the plain type
        ("application/*", "application/json"),
        (JWK_SET, JWK_SET),
        ("text/html", "application/json"),  # nothing we have: Accept is disregarded
    ],
)
def test_accept_q_values_are_honoured(http: httpx.Client, accept: str, content_type: str) -> None:
    response = http.get(JWKS, headers={"accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type, accept
    assert response.content == http.get(JWKS).content


@pytest.mark.parametrize(
    "accept", ["application/json;q=0", f"application/json;q=0, {JWK_SET};q=0", "*/*;q=0"]
)
def test_an_accept_that_refuses_every_type_is_406(http: httpx.Client, accept: str) -> None:
    response = http.get(JWKS, headers={"accept": accept})
    assert response.status_code == 406, response.headers.get("content-type")
    assert response.json()["code"] == 3  # INVALID_ARGUMENT, as google.rpc.Status
    assert "application/json" in response.json()["message"]
    assert "Accept" in response.headers["vary"]
    assert http.head(JWKS, headers={"accept": accept}).status_code == 406


# -- 3. the Host header --------------------------------------------------------------------


@pytest.mark.parametrize("target", [JWKS, CONNECT_GET, "/healthz", "/readyz", "/metrics"])
@pytest.mark.parametrize(
    "host_lines",
    [
        (),  # none
        ("Host: 127.0.0.1", "Host: 127.0.0.1"),  # two, even the same
        ("Host: a.example", "Host: b.example"),
        ("Host:",),  # empty: an http URI needs a host (RFC 9110 §4.2.1)
        ("Host: a b",),  # not a uri-host
        ("Host: a.example:80x",),
        ("Host: user@a.example",),
        ("Host: a:99999",),  # no such port
        ("Host: a.example:65536",),
        ("Host: a,b",),  # a list: two Host values folded into one line
        ("Host: a.example, a.example",),
    ],
)
def test_an_http_1_1_request_without_one_valid_host_is_400(
    server: ServerProcess, target: str, host_lines: tuple[str, ...]
) -> None:
    status, headers, body = exchange(server.http_port, get(target, *host_lines))
    assert status == 400, (target, host_lines)
    assert headers["connection"] == "close"
    assert b"Host" in body


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.1:8080", "[::1]:8080", "auth.example.com", "AUTH.example:443"]
)
def test_a_valid_host_is_served(server: ServerProcess, host: str) -> None:
    assert exchange(server.http_port, get(JWKS, f"Host: {host}"))[0] == 200


@pytest.mark.parametrize(
    "target",
    [
        "http://a:99999" + JWKS,
        "http://user@a.example" + JWKS,
        "http://a.example:65536/healthz",
    ],
)
def test_an_absolute_form_target_without_host_is_held_to_the_host_rules(
    server: ServerProcess, target: str
) -> None:
    """RFC 9112 §3.2.2: the authority of an absolute-form target stands in for Host. granian
    (hyper) hands the app that authority as the Host header when the request has none (and the
    path alone as the target), so its authority is checked as a Host is."""
    status, headers, body = exchange(server.http_port, get(target))
    assert (status, headers["connection"]) == (400, "close"), target
    assert b"Host" in body


def test_an_absolute_form_target_without_host_is_answered_as_its_authority(
    server: ServerProcess, http: httpx.Client
) -> None:
    """README, Limits: RFC 9112 §3.2 asks a 400 for a request without a Host line, but granian
    fills one in from an absolute-form target before the app sees it, so the app cannot tell
    `GET http://a.example/x` from `GET /x` + `Host: a.example`. The request is answered as the
    latter (what §3.2.2's target resolution makes of it anyway); this test notices the day
    granian stops doing so."""
    status, _, body = exchange(server.http_port, get("http://auth.example.test" + JWKS))
    assert (status, body) == (200, http.get(JWKS).content)


def test_http_1_0_needs_no_host(server: ServerProcess) -> None:
    assert exchange(server.http_port, get(JWKS, version="HTTP/1.0"))[0] == 200
    two = get(JWKS, "Host: a", "Host: b", version="HTTP/1.0")
    assert exchange(server.http_port, two)[0] == 400


# -- 5. routing on the path as sent -----------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "/.well-known%2Fjwks.json",
        "/.well-known%2fjwks.json",
        "/%2Ewell-known%2Fjwks.json",
        "%2F.well-known/jwks.json",
        "/agentrouter.auth.v1.AuthService%2FGetJWKS?encoding=json&message=%7B%7D&connect=v1",
        "/healthz%2F",
    ],
)
def test_an_encoded_slash_is_not_a_path_separator(server: ServerProcess, target: str) -> None:
    status, _, _ = exchange(server.http_port, get(target, "Host: 127.0.0.1"))
    assert status in (400, 404), f"{target} answered {status}"


@pytest.mark.parametrize(
    "target",
    [
        "/%2Ewell-known/jwks.json",
        "/%2ewell-known/jwks%2Ejson",
        "/.well-known/%6Awks.json",
        JWKS,  # the plain path, as a control
    ],
)
def test_encoded_unreserved_characters_are_the_characters(
    server: ServerProcess, http: httpx.Client, target: str
) -> None:
    """RFC 3986 §6.2.2.2: `%2E` and `.` name the same resource; such a path is served."""
    status, _, body = exchange(server.http_port, get(target, "Host: 127.0.0.1"))
    assert (status, body) == (200, http.get(JWKS).content)
