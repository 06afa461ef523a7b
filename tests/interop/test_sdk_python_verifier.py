"""The Python SDK's KeySetCache and TokenVerifier against the real server (tokens from
`agentrouter-auth token sign`, requests counted from its /metrics) and the SDKs' hostile peer.
A fake clock drives the cache's ages where the test says so; the server is always real."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrouter_sdk import (
    Client,
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
    TokenVerifier,
)
from tests.integration.serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv, sign_token
from tests.support.ports import free_port
from tests.unit.sdk_python_jwks import FakeClock, b64

from .peer import METHOD_PATH, Peer, run_measured
from .readme import snippets

pytestmark = pytest.mark.integration
AUDIENCE = "svc"
# A short policy, so that ages pass in seconds: fresh 1 s, then 1 s of stale-while-revalidate;
# a failed refresh keeps the set until 5 s after max-age.
SHORT_POLICY = ("--cache-max-age", "1s", "--stale-while-revalidate", "1s",
                "--stale-if-error", "5s", "--reload-interval", "200ms")  # fmt: skip
# The rotation run is 60 s; by default 10 s of a 2-second rotation policy (5 rotations).


def init_keys(path: Path, *algs: str) -> Path:
    argv = [*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(path)]
    subprocess.run([*argv, *(a for alg in algs for a in ("--alg", alg))], check=True)
    return path


def sign(keys_dir: Path, alg: str, *extra: str, **claims: Any) -> str:
    """A token from `agentrouter-auth token sign`."""
    claims = {"sub": "svc-a", "aud": AUDIENCE, **claims}
    return sign_token(keys_dir, alg, claims, *extra)


def kid_of(token: str) -> str:
    header = token.split(".", maxsplit=1)[0]
    kid: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["kid"]
    return kid


def served_kids(server: ServerProcess) -> set[str]:
    document = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    return {key["kid"] for key in document["keys"]}


def wait_until_served(server: ServerProcess, kid: str, *, served: bool = True) -> None:
    """Poll (bounded) until the server's set has, or no longer has, `kid`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if (kid in served_kids(server)) == served:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server never {'served' if served else 'dropped'} {kid}")


def counters(server: ServerProcess) -> tuple[int, int]:
    """Connect GetJWKS requests (200s and 304s) and 304s, from the server's /metrics."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text

    def value(pattern: str) -> int:
        found = re.search(pattern + r" ([0-9.e+]+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    connect = r'^agentrouter_auth_requests_total\{code="OK",method="GetJWKS",protocol="connect"\}'
    return value(connect), value(r"^agentrouter_auth_not_modified_total")


@pytest.fixture
def short_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    """A server of an ES256 and an EdDSA key with the short policy, rotation off."""
    keys = init_keys(tmp_path / "keys", "ES256", "EdDSA")
    with ServerProcess(serve_argv(keys, "--rotation", "off", *SHORT_POLICY)) as running:
        yield running, keys
        if running.proc.poll() is None:  # one test stops it itself
            running.terminate()


def verifier_of(server: ServerProcess, clock: FakeClock | None = None) -> TokenVerifier:
    client = Client(server.base_url, api_key="sk-test")
    cache = KeySetCache(client, clock=clock) if clock else KeySetCache(client)
    return TokenVerifier(cache, skip_issuer_check=True, audience=AUDIENCE)


def test_a_key_activated_seconds_ago_verifies_after_one_refresh(
    tmp_path: Path,
) -> None:
    keys = init_keys(tmp_path / "keys", "ES256")
    with ServerProcess(serve_argv(keys, "--rotation", "off", "--reload-interval", "200ms")) as s:
        verifier = verifier_of(s, FakeClock(time.time()))  # the cached answer stays fresh
        assert verifier.verify(sign(keys, "ES256"))["sub"] == "svc-a"
        init_keys(keys, "EdDSA")  # a new active key, now
        token = sign(keys, "EdDSA")
        wait_until_served(s, kid_of(token))
        before = counters(s)
        assert verifier.verify(token)["sub"] == "svc-a"
        assert counters(s)[0] == before[0] + 1
        s.terminate()


def test_a_removed_key_stops_verifying_once_the_cached_answer_ages_out(
    short_server: tuple[ServerProcess, Path],
) -> None:
    server, keys = short_server
    clock = FakeClock(time.time())
    verifier = verifier_of(server, clock)
    token = sign(keys, "EdDSA")
    assert verifier.verify(token)["sub"] == "svc-a"
    argv = [*AGENTROUTER_AUTH, "keys", "remove", "--keys-dir", str(keys), "--force"]
    subprocess.run([*argv, "--", kid_of(token)], check=True, capture_output=True)
    wait_until_served(server, kid_of(token), served=False)
    clock.advance(0.5)
    assert verifier.verify(token)["sub"] == "svc-a"  # the cached answer is fresh for 1 s
    requests, not_modified = counters(server)
    clock.advance(2)  # past max-age and stale-while-revalidate: revalidated before answering
    with pytest.raises(InvalidTokenError):
        verifier.verify(token)
    assert counters(server) == (requests + 1, not_modified)  # one request, answered 200


def test_revalidation_gets_304s_and_a_warm_cache_makes_no_request(
    short_server: tuple[ServerProcess, Path],
) -> None:
    server, keys = short_server
    clock = FakeClock(time.time())
    verifier = verifier_of(server, clock)
    tokens = [sign(keys, "ES256"), sign(keys, "EdDSA")]
    verifier.verify(tokens[0])
    warm = counters(server)
    for _ in range(100):
        for token in tokens:
            verifier.verify(token)
    assert counters(server) == warm
    for round_ in range(1, 4):
        clock.advance(2.5)  # past max-age and stale-while-revalidate
        assert verifier.verify(tokens[1])["sub"] == "svc-a"
        assert counters(server) == (warm[0] + round_, warm[1] + round_)


def test_a_stopped_server_leaves_the_cached_set_within_stale_if_error(
    short_server: tuple[ServerProcess, Path],
) -> None:
    server, keys = short_server
    clock = FakeClock(time.time())
    verifier = verifier_of(server, clock)
    token = sign(keys, "ES256")
    verifier.verify(token)
    server.terminate()
    clock.advance(2.5)  # past max-age + stale-while-revalidate, within stale-if-error
    assert verifier.verify(token)["sub"] == "svc-a"
    clock.advance(4)  # past max-age + stale-if-error (6 s); the backoff (1 s) is over
    with pytest.raises(KeysUnavailableError, match="keys unavailable"):
        verifier.verify(token)


def test_random_kids_cost_one_request_per_cooldown(server: ServerProcess, keys_dir: Path) -> None:
    """10,000 tokens with random kids over 10 s (of the fake clock), from 8 threads: one
    refresh reaches the server (the cooldown is 30 s). The set's max-age is 5 min."""
    clock = FakeClock(time.time())
    verifier = verifier_of(server, clock)
    verifier.verify(sign(keys_dir, "ES256"))
    before = counters(server)
    invalid: list[int] = []
    lock = threading.Lock()

    def flood() -> None:
        refused = 0
        for _ in range(1250):
            header = b64({"alg": "ES256", "kid": secrets.token_hex(8)})
            with lock:
                clock.advance(0.001)
            try:
                verifier.verify(f"{header}.{b64({'sub': 'x'})}.AAAA")
            except InvalidTokenError:
                refused += 1
        with lock:
            invalid.append(refused)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert invalid == [1250] * 8
    assert counters(server)[0] == before[0] + 1


def test_from_issuer_discovers_the_jwks_uri_and_checks_the_issuer(tmp_path: Path) -> None:
    keys = init_keys(tmp_path / "keys", "RS256")
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    argv = [*AGENTROUTER_AUTH, "serve", "--keys-dir", str(keys), "--grpc-addr", "127.0.0.1:0",
            "--http-addr", f"127.0.0.1:{port}", "--rotation", "off",
            "--issuer", issuer]  # fmt: skip
    with ServerProcess(argv) as s:
        verifier = TokenVerifier.from_issuer(issuer, audience=AUDIENCE, api_key="sk-test")
        token = sign(keys, "RS256", "--issuer", issuer)
        assert verifier.verify(token)["iss"] == issuer
        assert verifier.cache.url.startswith(issuer)
        with pytest.raises(InvalidTokenError, match="iss"):
            verifier.verify(sign(keys, "RS256", "--issuer", "http://127.0.0.1:1"))
        with pytest.raises(ValueError, match="another issuer"):
            TokenVerifier.from_issuer(issuer + "/", audience=AUDIENCE)
        s.terminate()


# Builds a cache over each jwks_uri given (the client's timeout in TIMEOUT, its API key in
# API_KEY) and prints one JSON line per lookup: the error's class and message, or "ok".
LOOKUPS = """
import json, os, sys
from agentrouter_sdk import Client, KeySetCache
for uri in sys.argv[1:]:
    client = Client("http://127.0.0.1:1", timeout=float(os.environ["TIMEOUT"]))
    try:
        KeySetCache(client, jwks_uri=uri).key("peer-key")
        print(json.dumps(["ok", ""]))
    except Exception as err:
        print(json.dumps([type(err).__name__, str(err)[:300]]))
"""


def lookups(urls: list[str], timeout: float, limit: float) -> list[list[str]]:
    env = {**os.environ, "TIMEOUT": str(timeout)}
    measured = run_measured([sys.executable, "-c", LOOKUPS, *urls], timeout=limit, env=env)
    assert not measured.timed_out, measured.output
    assert measured.returncode == 0, measured.output
    assert measured.peak_rss_mib < 200, f"peak RSS {measured.peak_rss_mib:.0f} MiB"
    # The output holds the cache's warnings (stderr) too: the outcomes are the JSON lines.
    return [json.loads(line) for line in measured.output.splitlines() if line.startswith("[")]


def test_a_100_mib_answer_is_keys_unavailable_in_bounded_memory(peer: Peer) -> None:
    urls = [f"{peer.url}/py/{path}{METHOD_PATH}" for path in ("big/100", "chunked/100", "bomb/300")]
    outcomes = lookups(urls, timeout=60, limit=120)
    assert [kind for kind, _ in outcomes] == ["KeysUnavailableError"] * 3, outcomes
    assert all("larger than the limit of 1048576 bytes" in message for _, message in outcomes)


def test_a_garbage_answer_is_keys_unavailable_without_its_bytes(peer: Peer) -> None:
    query = "?connect=v1&encoding=json&message=%7B%7D"  # JSON where the peer can
    urls = [f"{peer.url}/py/{path}{METHOD_PATH}{query}" for path in
            ("chunked/0", "fail/unavailable", "hostile/permission_denied", "x/y")]  # fmt: skip
    outcomes = lookups(urls, timeout=10, limit=60)
    assert [kind for kind, _ in outcomes] == ["KeysUnavailableError"] * 4, outcomes
    assert "not a JSON JWK Set" in outcomes[0][1]
    assert "HTTP 503" in outcomes[1][1]
    assert "HTTP 403" in outcomes[2][1]
    assert "none of the set's 1 keys is usable" in outcomes[3][1]  # the peer's key is no key
    for _, message in outcomes:
        assert "forced" not in message
        assert "\x1b" not in message


def test_a_dripping_answer_ends_at_the_clients_timeout(peer: Peer) -> None:
    """A byte every 200 ms, for minutes: the 1-s timeout ends it; run apart, so a cache that
    ignored it would be killed, and fail."""
    outcomes = lookups([f"{peer.url}/py/drip/200{METHOD_PATH}"], timeout=1, limit=30)
    assert outcomes[0][0] == "KeysUnavailableError", outcomes


@pytest.mark.parametrize("where", ["port", "host", "same"])
def test_no_redirect_is_followed(peer: Peer, where: str) -> None:
    """A 3xx is a failed fetch, to another origin or the same: the set is the trust anchor and
    is taken only from the URL configured (and the API key goes nowhere else)."""
    client = Client(f"{peer.url}/py/redirect/{where}", api_key="k-123.secret", timeout=10)
    with pytest.raises(KeysUnavailableError, match=r"HTTP 30[12378]") as err:
        KeySetCache(client).key("peer-key")
    assert "secret" not in str(err.value)
    recorded: list[dict[str, Any]] = httpx.get(f"{peer.url}/_requests", timeout=10).json()
    (first,) = recorded
    assert first["headers"]["authorization"] == "Bearer k-123.secret"
    assert "encoding=json" in first["query"]


def test_the_readme_verifies_a_token_from_token_sign(tmp_path: Path) -> None:
    """README, Client SDKs, Python: the snippet run as shown, against the real server: it prints
    the token's subject, refuses a tampered token (401) and reports a server it cannot reach
    (503)."""
    keys = init_keys(tmp_path / "keys", "ES256")
    script = tmp_path / "verify.py"
    script.write_text(snippets()["python-sdk-verify"])
    issuer = ("--issuer", "https://auth.example.com")
    with ServerProcess(serve_argv(keys, "--rotation", "off")) as s:
        token = sign(keys, "ES256", *issuer, sub="svc", aud="api")
        head, payload, signature = token.split(".")
        forged = f"{head}.{b64({'sub': 'root', 'aud': 'api', 'exp': 9e9})}.{signature}"

        def run(base_url: str, token: str) -> subprocess.CompletedProcess[str]:
            env = {**os.environ, "AGENTROUTER_BASE_URL": base_url, "TOKEN": token}
            return subprocess.run(
                [sys.executable, str(script)], env=env, capture_output=True, text=True,
                timeout=60, check=False,
            )  # fmt: skip

        verified = run(s.base_url, token)
        assert (verified.returncode, verified.stdout) == (0, "svc\n"), verified.stderr
        refused = run(s.base_url, forged)
        assert refused.returncode == 1
        assert refused.stderr.startswith("401: "), refused.stderr
        assert payload not in refused.stderr
        s.terminate()
    unreachable = run(f"http://127.0.0.1:{free_port()}", token)
    assert unreachable.returncode == 1
    assert unreachable.stderr.splitlines()[-1].startswith("503, retry later: "), unreachable.stderr
