"""A Connect GET of GetJWKS is an HTTP representation like the REST route's, against the real
server: a strong `ETag` per codec and content coding, `Cache-Control` from the rotation policy,
`Vary: Accept-Encoding`, `If-None-Match` → 304 (RFC 9110 §13.1.2), HEAD refused as Connect
refuses it (405, `Allow: GET, POST`), errors never cached, no validator on a POST.

Then a real HTTP cache in front (Debian's nginx, `proxy_cache` following the server's
Cache-Control, `proxy_cache_revalidate on`): repeat calls by each SDK (Python, Go, TypeScript)
and by curl are served by the cache without reaching the server, and once max-age has passed the
cache revalidates with `If-None-Match` and the server answers 304 (counted in the server's
access log and /metrics, and in nginx's own log of each answer's cache status).
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from agentrouter.auth.v1 import auth_pb2
from agentrouter_sdk import Client
from tests.conftest import REPO
from tests.support.keys import write_kek
from tests.support.ports import free_port
from tests.support.programs import build_go_program

from .serverproc import AGENTROUTER_AUTH, ServerProcess, eventually, serve_argv

pytestmark = pytest.mark.integration

JWKS = "/.well-known/jwks.json"
PROCEDURE = "/agentrouter.auth.v1.AuthService/GetJWKS"
# A Connect GET of GetJWKS in each codec: proto as the SDKs send it (base64 of the empty
# message), JSON as README (Connect with curl) writes it.
QUERIES = {
    "proto": "?encoding=proto&base64=1&message=&connect=v1",
    "json": "?encoding=json&message=%7B%7D&connect=v1",
}
CODINGS = ("identity", "gzip")
REPRESENTATIONS = [(codec, coding) for codec in QUERIES for coding in CODINGS]

# The policy the servers start with: a short max-age, so that a cache's copy goes stale within
# a test. The header value README (curl, and every JWT verifier) documents for it:
MAX_AGE, STALE_WHILE_REVALIDATE, STALE_IF_ERROR = 2, 1, 30
POLICY = ("--cache-max-age", f"{MAX_AGE}s",
          "--stale-while-revalidate", f"{STALE_WHILE_REVALIDATE}s",
          "--stale-if-error", f"{STALE_IF_ERROR}s")  # fmt: skip
CACHE_CONTROL = (
    f"public, max-age={MAX_AGE}, stale-while-revalidate={STALE_WHILE_REVALIDATE}, "
    f"stale-if-error={STALE_IF_ERROR}"
)
BURST = 5  # calls in a row that a fresh cached answer must serve
CALLS_DIR = Path(__file__).resolve().parent / "connect_caching"
TS_DIR = REPO / "sdk" / "typescript"


def serve(keys_dir: Path, *extra: str) -> list[str]:
    return serve_argv(keys_dir, "--rotation", "off", "--access-log", "on", *POLICY, *extra)


def cli(*args: str) -> None:
    subprocess.run([*AGENTROUTER_AUTH, *args], check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("connect-caching") / "keys"
    cli("keys", "init", "--keys-dir", str(path), "--alg", "ES256", "--alg", "EdDSA")
    return path


@pytest.fixture(scope="module")
def server(keys_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(serve(keys_dir)) as running:
        yield running
        assert running.terminate() == 0


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False) as client:
        yield client


# -- answers as sent --------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """An answer with its body as sent (not decoded)."""

    status: int
    headers: httpx.Headers
    raw: bytes

    @property
    def body(self) -> bytes:
        """The body with its content coding undone."""
        return (
            gzip.decompress(self.raw)
            if self.headers.get("content-encoding") == "gzip"
            else self.raw
        )

    def tokens(self, name: str) -> set[str]:
        """The comma-separated elements of every `name` field, lowercased."""
        values = self.headers.get_list(name)
        return {part.strip().lower() for value in values for part in value.split(",")}


def fetch(
    http: httpx.Client, method: str, target: str, headers: dict[str, str], body: bytes = b""
) -> Answer:
    request = http.build_request(method, target, headers=headers, content=body or None)
    response = http.send(request, stream=True)
    try:
        raw = b"".join(response.iter_raw())
    finally:
        response.close()
    return Answer(response.status_code, response.headers, raw)


def connect_get(
    http: httpx.Client, codec: str, coding: str, if_none_match: str | None = None
) -> Answer:
    headers = {"accept-encoding": coding}
    if if_none_match is not None:
        headers["if-none-match"] = if_none_match
    return fetch(http, "GET", PROCEDURE + QUERIES[codec], headers)


def rest_get(http: httpx.Client, coding: str) -> Answer:
    return fetch(http, "GET", JWKS, {"accept-encoding": coding, "accept": "application/json"})


def is_strong_etag(value: str | None) -> bool:
    """An entity-tag without the weak prefix (RFC 9110 §8.8.3: DQUOTE *etagc DQUOTE)."""
    if value is None or len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return False
    return all(c == "\x21" or "\x23" <= c <= "\x7e" or c >= "\x80" for c in value[1:-1])


def no_identity_coding(answer: Answer) -> bool:
    """Identity names no content coding in a response (RFC 9110 §8.4.1)."""
    return "identity" not in answer.tokens("content-encoding")


def served_set(http: httpx.Client) -> auth_pb2.GetJWKSResponse:
    """The key set the REST route serves, as the RPC's message."""
    document = rest_get(http, "identity").body
    return json_format.Parse(document, auth_pb2.GetJWKSResponse())


def decoded(codec: str, answer: Answer) -> auth_pb2.GetJWKSResponse:
    if codec == "proto":
        return auth_pb2.GetJWKSResponse.FromString(answer.body)
    return json_format.Parse(answer.body, auth_pb2.GetJWKSResponse())


def etags(http: httpx.Client) -> dict[tuple[str, str], str]:
    """The ETag of each Connect GET representation, and of REST's (codec "rest")."""
    tags = {(codec, coding): connect_get(http, codec, coding).headers["etag"]
            for codec, coding in REPRESENTATIONS}  # fmt: skip
    for coding in CODINGS:
        tags[("rest", coding)] = rest_get(http, coding).headers["etag"]
    return tags


# -- 1. the headers of a Connect GET, straight from the server ---------------------------------


def test_every_representation_has_a_strong_etag_of_its_own_and_the_caching_headers(
    http: httpx.Client,
) -> None:
    expected = served_set(http)
    seen: dict[str, tuple[str, str]] = {}
    for codec, coding in REPRESENTATIONS:
        answer = connect_get(http, codec, coding)
        assert answer.status == 200, (codec, coding, answer.raw)
        etag = answer.headers.get("etag")
        assert is_strong_etag(etag), (codec, coding, etag)
        assert etag is not None
        assert etag not in seen, f"{codec}/{coding} has the ETag of {seen.get(etag)}"
        seen[etag] = (codec, coding)
        assert answer.headers.get_list("cache-control") == [CACHE_CONTROL], (codec, coding)
        assert "accept-encoding" in answer.tokens("vary"), (codec, coding)
        assert answer.headers["content-type"] == f"application/{codec}"
        assert answer.tokens("content-encoding") == ({"gzip"} if coding == "gzip" else set())
        assert decoded(codec, answer) == expected, (codec, coding)
    assert len(seen) == len(REPRESENTATIONS)


def test_the_json_answer_is_rests_bytes_with_rests_etag_and_cache_control(
    http: httpx.Client,
) -> None:
    """The same bytes on both routes, so the same strong validator; and one freshness."""
    for coding in CODINGS:
        connect, rest = connect_get(http, "json", coding), rest_get(http, coding)
        assert (connect.status, rest.status) == (200, 200)
        assert connect.raw == rest.raw, coding
        assert connect.headers["etag"] == rest.headers["etag"], coding
        assert connect.headers.get_list("cache-control") == rest.headers.get_list("cache-control")
        assert rest.headers["cache-control"] == CACHE_CONTROL


@pytest.mark.parametrize(("codec", "coding"), REPRESENTATIONS)
def test_if_none_match_is_a_weak_comparison_with_the_representation_sent(
    http: httpx.Client, codec: str, coding: str
) -> None:
    """RFC 9110 §13.1.2: 304 when a listed tag matches the current representation's by weak
    comparison, or for `*` (a current representation exists); a stale tag or another
    representation's tag (another codec or coding) gets the whole answer."""
    tags = etags(http)
    current = tags[(codec, coding)]
    others = sorted({tag for key, tag in tags.items() if tag != current})
    assert len(others) >= len(REPRESENTATIONS) - 1  # REST's JSON tags are the JSON ones
    matching = [current, f"W/{current}", "*", f'"stale", {current}', f"{others[0]}, W/{current}"]
    for if_none_match in matching:
        answer = connect_get(http, codec, coding, if_none_match)
        assert answer.status == 304, (if_none_match, answer.status)
        assert answer.raw == b"", if_none_match
        assert answer.headers["etag"] == current
        assert answer.headers.get_list("cache-control") == [CACHE_CONTROL]
        assert "accept-encoding" in answer.tokens("vary")
        # A 304 carries no representation metadata but the validators and caching fields
        # (RFC 9110 §15.4.5): no content type or coding that a cache would take for the body's.
        assert "content-type" not in answer.headers
        assert "content-encoding" not in answer.headers
    for if_none_match in ['"stale"', ", ".join(others), *(f"W/{tag}" for tag in others)]:
        answer = connect_get(http, codec, coding, if_none_match)
        assert answer.status == 200, if_none_match
        assert answer.headers["etag"] == current
        assert answer.headers.get_list("cache-control") == [CACHE_CONTROL]
        assert decoded(codec, answer) == served_set(http)


@pytest.mark.parametrize("coding", CODINGS)
def test_head_is_refused_as_connect_refuses_it(http: httpx.Client, coding: str) -> None:
    """Connect allows GET and POST only: connect-go answers HEAD with 405 and `Allow: GET,
    POST` (its handler's sorted allowed methods), and so does this server; uncached."""
    answer = fetch(http, "HEAD", PROCEDURE + QUERIES["json"], {"accept-encoding": coding})
    assert answer.status == 405
    assert answer.tokens("allow") == {"get", "post"}
    assert answer.headers.get_list("cache-control") == ["no-store"]
    assert "etag" not in answer.headers
    assert no_identity_coding(answer)


ERRORS = {
    "unknown encoding": ("GET", PROCEDURE + "?encoding=xml&message=%7B%7D", {}, 415),
    "bad base64": ("GET", PROCEDURE + "?encoding=proto&base64=1&message=!!!", {}, 400),
    "JSON not an object": ("GET", PROCEDURE + "?encoding=json&message=%5B%5D", {}, 400),
    "unknown procedure": ("GET", PROCEDURE.replace("GetJWKS", "Nope") + QUERIES["json"], {}, 404),
    "protocol version 2": (
        "GET", PROCEDURE + QUERIES["json"], {"connect-protocol-version": "2"}, 400,
    ),
    "PUT": ("PUT", PROCEDURE + QUERIES["json"], {}, 405),
    "POST of bad JSON": ("POST", PROCEDURE, {"content-type": "application/json"}, 400),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(ERRORS))
@pytest.mark.parametrize("coding", CODINGS)
def test_errors_are_never_cached(http: httpx.Client, case: str, coding: str) -> None:
    """Every error answer is `no-store` and has no validator, whatever the request asks (an
    `If-None-Match: *` too: preconditions apply to a 2xx answer, RFC 9110 §13.2.2)."""
    method, target, extra, status = ERRORS[case]
    body = b"[" if method == "POST" else b""
    for if_none_match in (None, "*"):
        headers = {"accept-encoding": coding, **extra}
        if if_none_match is not None:
            headers["if-none-match"] = if_none_match
        answer = fetch(http, method, target, headers, body)
        assert answer.status == status, (if_none_match, answer.raw)
        assert answer.headers.get_list("cache-control") == ["no-store"], if_none_match
        assert "etag" not in answer.headers
        assert no_identity_coding(answer)


def test_unavailable_before_the_first_key_set_is_never_cached(tmp_path: Path) -> None:
    """A server whose PostgreSQL store cannot be reached listens and answers UNAVAILABLE: an
    error of the RPC itself, uncached, with no validator even for `If-None-Match: *` (there is
    no current representation: the condition holds, RFC 9110 §13.1.2, and the error stands)."""
    store = f"postgresql://auth@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    kek = write_kek(tmp_path / "kek")
    argv = [*AGENTROUTER_AUTH, "serve", "--key-store", store, "--kek-file", str(kek),
            "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"]  # fmt: skip
    with (
        ServerProcess(argv, ready=False) as unready,
        httpx.Client(base_url=unready.base_url, timeout=10) as http,
    ):
        for codec, coding in REPRESENTATIONS:
            for if_none_match in (None, "*"):
                answer = connect_get(http, codec, coding, if_none_match)
                assert answer.status == 503, (codec, coding, answer.raw)
                assert json.loads(answer.body)["code"] == "unavailable"
                assert answer.headers.get_list("cache-control") == ["no-store"]
                assert "etag" not in answer.headers
                assert no_identity_coding(answer)
        assert unready.terminate() == 0


@pytest.mark.parametrize("codec", sorted(QUERIES))
@pytest.mark.parametrize("coding", CODINGS)
def test_a_post_answer_has_no_validator_and_no_freshness(
    http: httpx.Client, codec: str, coding: str
) -> None:
    """A POST answer is not a representation of the GET's URL: no cache may reuse it for one."""
    message = b"" if codec == "proto" else b"{}"
    headers = {"content-type": f"application/{codec}", "accept-encoding": coding}
    answer = fetch(http, "POST", PROCEDURE, headers, message)
    assert answer.status == 200
    assert "etag" not in answer.headers
    assert "cache-control" not in answer.headers
    assert no_identity_coding(answer)
    assert decoded(codec, answer) == served_set(http)


def test_the_etags_are_the_same_from_another_server_on_the_same_store(
    keys_dir: Path, http: httpx.Client
) -> None:
    """A validator names the bytes, not the process: replicas behind one cache agree."""
    first = etags(http)
    with (
        ServerProcess(serve(keys_dir)) as second,
        httpx.Client(base_url=second.base_url, timeout=10) as other,
    ):
        assert etags(other) == first
        assert second.terminate() == 0


# -- 2. a real HTTP cache in front --------------------------------------------------------------


class Nginx:
    """Debian's nginx as a caching reverse proxy in front of `upstream`: `proxy_cache` with
    nothing but `proxy_cache_revalidate on`, so what it keeps and for how long is the server's
    Cache-Control alone. One process (`master_process off`), running as the test's user, so
    the cache folder under the test's temporary folder is its own. Each answer is logged as a
    JSON line with its cache status (MISS, HIT, EXPIRED, REVALIDATED, ...) and the upstream's
    status."""

    def __init__(self, workdir: Path, upstream: str) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        assert Path(binary).is_file(), "nginx is missing: make test installs Debian's nginx-light"
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "access.log"
        (workdir / "cache").mkdir(parents=True)
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(f"""
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format cache escape=json '{{"cache":"$upstream_cache_status","status":"$status",'
    '"upstream":"$upstream_status","method":"$request_method","agent":"$http_user_agent"}}';
  access_log {self.log} cache;
  client_body_temp_path {workdir};
  proxy_temp_path {workdir};
  fastcgi_temp_path {workdir};
  uwsgi_temp_path {workdir};
  scgi_temp_path {workdir};
  proxy_cache_path {workdir}/cache keys_zone=jwks:1m;
  server {{
    listen 127.0.0.1:{self.port};
    location / {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
      proxy_cache jwks;
      proxy_cache_revalidate on;
    }}
  }}
}}
""")

    def __enter__(self) -> Nginx:
        command = [self.binary, "-p", str(self.workdir), "-e", "stderr", "-c", str(self.conf)]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    _, errors = self.proc.communicate()
                    raise RuntimeError(f"nginx did not start: {errors}") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def entries(self) -> list[dict[str, str]]:
        """The answers nginx has logged so far."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def entries_after(self, count: int, expected: int) -> list[dict[str, str]]:
        """The answers logged after the first `count`, once `expected` of them are (nginx logs
        an answer just after sending it)."""
        found = eventually(self.entries, lambda entries: len(entries) >= count + expected)
        return found[count:]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, server: ServerProcess) -> Iterator[Nginx]:
    with Nginx(tmp_path_factory.mktemp("nginx"), server.base_url) as running:
        yield running


@dataclass
class Logged:
    """What the server has logged answering Connect requests, and its counters."""

    connect: list[tuple[str, int]]  # (method, HTTP status) per request, in order
    connect_ok: float  # agentrouter_auth_requests_total{protocol="connect",code="OK"}
    not_modified: float  # agentrouter_auth_not_modified_total


def logged(server: ServerProcess) -> Logged:
    """The server's record of Connect requests, complete up to now: a REST request sent now is
    logged after every answer already sent (one worker, logging each answer as it finishes),
    so once its line is there nothing before it is missing. Then /metrics, which one worker
    brings up to date when scraped."""

    def rest_lines() -> int:
        return sum(1 for e in server.events("request") if e["protocol"] == "rest")

    before = rest_lines()
    assert httpx.get(server.base_url + JWKS, timeout=10).status_code == 200
    assert eventually(rest_lines, lambda count: count > before) > before
    connect = [(e["method"], e["status"]) for e in server.events("request")
               if e["protocol"] == "connect"]  # fmt: skip
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    connect_ok = sum(
        s.value for s in samples
        if s.name == "agentrouter_auth_requests_total"
        and s.labels == {"protocol": "connect", "method": "GetJWKS", "code": "OK"}
    )  # fmt: skip
    not_modified = sum(s.value for s in samples if s.name == "agentrouter_auth_not_modified_total")
    return Logged(connect, connect_ok, not_modified)


def wait_until_stale(stored_by: float) -> None:
    """Wait out max-age for a cached answer stored at or before wall-clock time `stored_by`.
    nginx dates an answer in whole seconds: one stored at second S is fresh through S + max-age
    and stale from the next second on. Nothing to poll for (a request would itself refresh the
    copy), so this waits until that second, at most MAX_AGE + 1 s: the policy's max-age."""
    stale_from = math.floor(stored_by) + MAX_AGE + 1
    time.sleep(max(0.0, stale_from - time.time()) + 0.05)


Calls = Callable[[str, int], list[list[str]]]
"""Makes `count` GetJWKS calls one after another on one client of `base_url`; the kids of each
answer."""


def python_calls(base_url: str, count: int) -> list[list[str]]:
    with Client(base_url=base_url, api_key="sk-cache-test") as client:
        return [[key.kid for key in client.auth.get_jwks().keys] for _ in range(count)]


def printed_kids(argv: list[str], cwd: Path | None = None) -> list[list[str]]:
    """Run a program that prints one JSON object per call; the kids of each."""
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{argv[:3]} exited {result.returncode}: {result.stderr}"
    outcomes = [json.loads(line) for line in result.stdout.splitlines()]
    assert all("error" not in outcome for outcome in outcomes), outcomes
    return [list(outcome["kids"]) for outcome in outcomes]


@pytest.fixture(scope="module")
def go_calls(tmp_path_factory: pytest.TempPathFactory) -> Calls:
    """connect_caching/calls.go built against sdk/go (a module that replaces the SDK's path by
    the folder, with the SDK's go.sum)."""
    binary = build_go_program(CALLS_DIR / "calls.go", tmp_path_factory.mktemp("go-calls"))

    def calls(base_url: str, count: int) -> list[list[str]]:
        return printed_kids([str(binary), base_url, str(count)])

    return calls


def typescript_calls(base_url: str, count: int) -> list[list[str]]:
    """connect_caching/calls.mts on the SDK's sources, run by Node.js with tsx as the SDK's
    own tests are."""
    script = str(CALLS_DIR / "calls.mts")
    return printed_kids(["node", "--import", "tsx", script, base_url, str(count)], cwd=TS_DIR)


def curl_calls(base_url: str, count: int) -> list[list[str]]:
    """curl fetching README's Connect GET `count` times on one connection."""
    url = f"{base_url}{PROCEDURE}?encoding=json&message=%7B%7D"
    result = subprocess.run(["curl", "-sS", "--fail", "-w", "\\n", *([url] * count)],
                            capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [[key["kid"] for key in json.loads(line)["keys"]] for line in result.stdout.splitlines()]


def callers(go_calls: Calls) -> dict[str, Calls]:
    return {"python": python_calls, "go": go_calls, "typescript": typescript_calls,
            "curl": curl_calls}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("client", ["python", "go", "typescript", "curl"])
def test_repeat_calls_are_served_by_the_cache_and_revalidated_with_304(
    server: ServerProcess, http: httpx.Client, nginx: Nginx, go_calls: Calls, client: str
) -> None:
    """Each client's first call is a miss the server answers with 200. Once max-age has passed
    (the policy's 2 s; waited out, see wait_until_stale), the next of BURST calls makes nginx
    revalidate its copy with If-None-Match: the server answers 304, its only request, and the
    other calls are cache hits; every call gets the served key set."""
    calls = callers(go_calls)[client]
    kids = [key.kid for key in served_set(http).keys]

    start, seen = logged(server), len(nginx.entries())
    assert calls(nginx.url, 1) == [kids]
    stored_by = time.time()
    first = nginx.entries_after(seen, 1)
    assert [(e["cache"], e["upstream"]) for e in first] == [("MISS", "200")], first
    after_first = logged(server)
    assert after_first.connect[len(start.connect) :] == [("GET", 200)]

    wait_until_stale(stored_by)
    seen = len(nginx.entries())
    assert calls(nginx.url, BURST) == [kids] * BURST
    burst = nginx.entries_after(seen, BURST)
    assert [(e["cache"], e["upstream"], e["status"]) for e in burst] == [
        ("REVALIDATED", "304", "200"),
        *[("HIT", "", "200")] * (BURST - 1),
    ], burst
    after_burst = logged(server)
    assert after_burst.connect[len(after_first.connect) :] == [("GET", 304)]
    assert after_burst.not_modified - after_first.not_modified == 1
    assert after_burst.connect_ok - after_first.connect_ok == 1  # the 304 is an OK call
    assert all(e["method"] == "GET" for e in first + burst), "a call was not a Connect GET"
    if client != "curl":  # each SDK names itself: these were its calls
        assert all(e["agent"].startswith(f"agentrouter-sdk-{client}/") for e in burst), burst


@pytest.mark.slow
def test_a_new_key_set_changes_every_etag_and_reaches_a_client_through_the_cache(
    tmp_path: Path,
) -> None:
    """`keys rotate` publishes a successor: every representation gets a new ETag (an old one no
    longer matches), and once nginx's copy is stale its revalidation with the old tag gets the
    new set (200), which the SDK receives."""
    keys_dir = tmp_path / "keys"
    cli("keys", "init", "--keys-dir", str(keys_dir), "--alg", "ES256")
    with (
        ServerProcess(serve(keys_dir, "--reload-interval", "1s")) as running,
        httpx.Client(base_url=running.base_url, timeout=10) as http,
        Nginx(tmp_path / "nginx", running.base_url) as cache,
    ):
        old_set = served_set(http)
        old_tags = etags(http)
        assert python_calls(cache.url, 1) == [[key.kid for key in old_set.keys]]
        stored_by = time.time()

        cli("keys", "rotate", "--keys-dir", str(keys_dir), "--alg", "ES256")
        new_set = eventually(lambda: served_set(http), lambda served: served != old_set)
        assert len(new_set.keys) == len(old_set.keys) + 1
        new_tags = etags(http)
        assert set(new_tags.values()).isdisjoint(old_tags.values())
        for codec, coding in REPRESENTATIONS:
            old = connect_get(http, codec, coding, old_tags[(codec, coding)])
            assert (old.status, old.headers["etag"]) == (200, new_tags[(codec, coding)])
            assert decoded(codec, old) == new_set
            current = connect_get(http, codec, coding, new_tags[(codec, coding)])
            assert current.status == 304

        wait_until_stale(stored_by)
        seen, before = len(cache.entries()), logged(running)
        assert python_calls(cache.url, 2) == [[key.kid for key in new_set.keys]] * 2
        entries = cache.entries_after(seen, 2)
        assert [(e["cache"], e["upstream"]) for e in entries] == [("EXPIRED", "200"), ("HIT", "")]
        assert logged(running).connect[len(before.connect) :] == [("GET", 200)]
        assert running.terminate() == 0
