"""Operating the service: metrics summed across workers, JSON logs with no secret in them,
several workers that rotate once, and TLS on both listeners."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.protocol import ProtocolType
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter.auth.v1.auth_connect import AuthServiceClientSync

from .serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv

pytestmark = pytest.mark.integration
JWKS = "/.well-known/jwks.json"
CONNECT = "/agentrouter.auth.v1.AuthService/GetJWKS"
API_KEY = "sk-live-do-not-log-this-4f1c2e"
FAST_POLICY = [
    "--rotation-period", "4s", "--publish-ahead", "2s", "--retain-after", "2s",
    "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "1s",
    "--stale-while-revalidate", "0s",
]  # fmt: skip


def samples(
    base_url: str, **client: object
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """One scrape of /metrics, as {(sample name, sorted labels): value}."""
    text = httpx.get(f"{base_url}/metrics", timeout=10, **client).text  # type: ignore[arg-type]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def requests_total(
    scrape: dict[tuple[str, tuple[tuple[str, str], ...]], float], protocol: str
) -> float:
    return sum(
        value
        for (name, labels), value in scrape.items()
        if name == "agentrouter_auth_requests_total"
        and dict(labels).get("protocol") == protocol
        and dict(labels).get("code") == "OK"
    )


def flush_every_worker(base_url: str, workers: int = 2, within: float = 15) -> None:
    """Have every worker add the counts it holds to the shared metrics now, rather than at its
    next reload interval: a scrape flushes the worker that answers it, so scrape on kept-alive
    connections until each worker (the pid /healthz reports before and after the scrape, on the
    same connection) has answered one."""
    flushed: set[int] = set()
    deadline = time.monotonic() + within
    while len(flushed) < workers:
        assert time.monotonic() < deadline, f"only workers {sorted(flushed)} answered a scrape"
        with httpx.Client(timeout=10) as client:
            pid = client.get(f"{base_url}/healthz").json()["pid"]
            client.get(f"{base_url}/metrics").raise_for_status()
            if client.get(f"{base_url}/healthz").json()["pid"] == pid:
                flushed.add(pid)


def fresh_get(url: str, **kwargs: object) -> httpx.Response:
    """A request on a new connection, so SO_REUSEPORT spreads them over the workers."""
    with httpx.Client(timeout=10, **kwargs) as client:  # type: ignore[arg-type]
        return client.get(url, headers={"authorization": f"Bearer {API_KEY}"})


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys_dir = tmp_path_factory.mktemp("operations") / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir), *FAST_POLICY],
                   check=True)  # fmt: skip
    argv = serve_argv(keys_dir, "--workers", "2", "--access-log", "on",
                      "--reload-interval", "200ms", *FAST_POLICY)  # fmt: skip
    with ServerProcess(argv) as server:
        server.keys_dir = keys_dir  # type: ignore[attr-defined]
        yield server
        assert server.terminate(signal.SIGTERM) == 0
    stopped = {event["pid"] for event in server.events("stopped")}
    assert stopped == {event["pid"] for event in server.events("listening")}  # both drained
    assert len(stopped) == 2


def test_both_workers_answer(workers: ServerProcess) -> None:
    pids = {fresh_get(f"{workers.base_url}/healthz").json()["pid"] for _ in range(60)}
    assert len(pids) == 2
    scrape = samples(workers.base_url)
    live = {dict(labels)["pid"] for (name, labels), v in scrape.items()
            if name == "agentrouter_auth_worker" and v == 1}  # fmt: skip
    assert live == {str(pid) for pid in pids}


def test_metrics_count_every_protocol_summed_across_workers(workers: ServerProcess) -> None:
    before = samples(workers.base_url)
    for _ in range(20):
        assert fresh_get(workers.base_url + JWKS).status_code == 200
    not_modified = 0
    for _ in range(5):  # keys rotate every few seconds here: a 304 needs a fresh ETag
        etag = fresh_get(workers.base_url + JWKS).headers["etag"]
        response = httpx.get(workers.base_url + JWKS, headers={"if-none-match": etag}, timeout=10)
        assert response.status_code in (200, 304)  # 200 if the set changed in between
        not_modified += response.status_code == 304
    assert not_modified
    for protocol in (ProtocolType.CONNECT, ProtocolType.GRPC_WEB):
        for _ in range(7):
            with AuthServiceClientSync(
                workers.base_url, protocol=protocol, codec=google_protobuf_binary_codec()
            ) as client:
                client.get_jwks(auth_pb2.GetJWKSRequest())
    for _ in range(9):
        with grpc.insecure_channel(f"127.0.0.1:{workers.port}") as channel:
            auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=10)
    assert httpx.get(workers.base_url + "/nowhere", timeout=10).status_code == 404
    expected = {"rest": 30, "connect": 7, "grpcweb": 7, "grpc": 9, "rest 404": 1}
    not_found = ("agentrouter_auth_requests_total",
                 (("code", "NOT_FOUND"), ("method", "unknown"), ("protocol", "rest")))  # fmt: skip
    deadline = time.monotonic() + 10  # each worker adds its counts every reload interval
    while True:
        after = samples(workers.base_url)
        grown = {p: requests_total(after, p) - requests_total(before, p) for p in expected}
        grown["rest 404"] = after.get(not_found, 0) - before.get(not_found, 0)
        if grown == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert grown == expected
    count = ("agentrouter_auth_request_duration_seconds_count", (("protocol", "rest"),))
    assert after[count] - before.get(count, 0) == 31
    modified = ("agentrouter_auth_not_modified_total", ())
    assert after[modified] - before.get(modified, 0) == not_modified


def test_metrics_name_the_rpc_and_the_code_the_client_read(workers: ServerProcess) -> None:
    """REST GetJWKS is counted as GetJWKS; a Connect 429 as the resource_exhausted its body
    names (not as the UNAVAILABLE that Connect's HTTP-status fallback would guess)."""
    for _ in range(4):  # answered just before the baseline, as an earlier test's requests are
        assert fresh_get(workers.base_url + JWKS).status_code == 200
    flush_every_worker(workers.base_url)  # now every count made so far is in the baseline
    before = samples(workers.base_url)
    for _ in range(5):
        assert fresh_get(workers.base_url + JWKS).status_code == 200
    huge = b"{" + b" " * 70_000 + b"}"  # over the 64 KiB message limit
    connect = httpx.post(workers.base_url + CONNECT, content=huge,
                         headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert (connect.status_code, connect.json()["code"]) == (429, "resource_exhausted")
    frame = b"\x00" + len(huge).to_bytes(4, "big") + huge
    web = httpx.post(workers.base_url + CONNECT, content=frame,
                     headers={"content-type": "application/grpc-web+json"}, timeout=10)  # fmt: skip
    assert b"grpc-status: 8" in web.content
    bad = httpx.post(workers.base_url + CONNECT, content=b"[]",
                     headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert bad.status_code == 400

    def grown(protocol: str, method: str, code: str) -> float:
        key = ("agentrouter_auth_requests_total",
               (("code", code), ("method", method), ("protocol", protocol)))  # fmt: skip
        return after.get(key, 0) - before.get(key, 0)

    expected = {
        ("rest", "GetJWKS", "OK"): 5,
        ("rest", "unknown", "OK"): 0,
        ("connect", "GetJWKS", "RESOURCE_EXHAUSTED"): 1,
        ("connect", "GetJWKS", "UNAVAILABLE"): 0,
        ("connect", "GetJWKS", "INVALID_ARGUMENT"): 1,
        ("grpcweb", "GetJWKS", "RESOURCE_EXHAUSTED"): 1,
    }
    deadline = time.monotonic() + 10  # each worker adds its counts every reload interval
    while True:
        after = samples(workers.base_url)
        counts = {labels: grown(*labels) for labels in expected}
        if counts == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counts == expected


def test_key_set_metrics_follow_rotation(workers: ServerProcess) -> None:
    deadline, seen_states, next_steps = time.monotonic() + 15, set[str](), list[float]()
    while time.monotonic() < deadline and not {"pending", "retired"} <= seen_states:
        scrape = samples(workers.base_url)
        seen_states |= {dict(labels)["state"] for (name, labels), v in scrape.items()
                        if name == "agentrouter_auth_keys" and v > 0}  # fmt: skip
        next_steps.append(scrape[("agentrouter_auth_next_rotation_step_seconds", ())])
        time.sleep(0.2)
    assert {"active", "pending", "retired"} <= seen_states
    # Every step is taken on time here (the workers rotate every 4 s), pending successor or not.
    assert min(next_steps) >= 0, next_steps
    scrape = samples(workers.base_url)
    age = scrape[("agentrouter_auth_active_key_age_seconds", (("alg", "ES256"),))]
    assert 0 <= age <= 5
    assert scrape[("agentrouter_auth_next_rotation_step_seconds", ())] <= 4
    assert time.time() - scrape[("agentrouter_auth_last_reload_success_timestamp_seconds", ())] < 5
    assert scrape[("agentrouter_auth_key_set_healthy", ())] == 1


@contextlib.contextmanager
def store_locked(keys_dir: Path) -> Iterator[None]:
    """Hold the store's writer lock, as the CLI and every server take it for a change."""
    fd = os.open(keys_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_bad_key_file_is_counted_and_reported(workers: ServerProcess) -> None:
    keys_dir: Path = workers.keys_dir  # type: ignore[attr-defined]
    with store_locked(keys_dir):  # between two rotation steps, so the file is a listed key
        listed = json.loads((keys_dir / "manifest.json").read_text())["keys"][0]["kid"]
        bad = keys_dir / f"{listed}.jwk.json"
        good = bad.read_bytes()
        bad.write_text("not json at all")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            scrape = samples(workers.base_url)
            if scrape.get(("agentrouter_auth_reload_failures_total", ()), 0) >= 2:
                break
            time.sleep(0.2)
        assert scrape[("agentrouter_auth_reload_failures_total", ())] >= 2  # both workers
        assert scrape[("agentrouter_auth_key_set_healthy", ())] == 0
        assert fresh_get(workers.base_url + JWKS).status_code == 200
        for _ in range(6):  # both workers refuse the change; neither tells a client where
            ready = fresh_get(f"{workers.base_url}/readyz")
            assert ready.status_code == 200  # still ready: the last good set is served
            assert ready.json()["keyring"] == "error"
            assert str(keys_dir) not in ready.text
            assert listed not in ready.text
    finally:
        with store_locked(keys_dir):
            bad.write_bytes(good)
    refused = [e for e in workers.events("key_set_reload_failed") if e["path"] == str(bad)]
    assert refused  # the details are in the log
    assert refused[0]["reason"].startswith("not a valid JWK")


def test_one_rotation_per_step_across_workers(workers: ServerProcess) -> None:
    deadline = time.monotonic() + 15  # the policy pre-publishes a key every 4 s
    while True:
        created = [e["kid"] for e in workers.events("rotation_step") if e["to"] == "pending"]
        if len(created) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(created) >= 2
    assert len(created) == len(set(created))


def test_logs_are_json_and_hold_no_secret(workers: ServerProcess) -> None:
    keys_dir: Path = workers.keys_dir  # type: ignore[attr-defined]
    token = subprocess.run(
        [*AGENTROUTER_AUTH, "token", "sign", "--keys-dir", str(keys_dir), "--claims", "{}",
         "--ttl", "1s", *FAST_POLICY], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    logged_before = len(workers.events("request"))
    fresh_get(f"{workers.base_url}{JWKS}?access_token={token}")
    httpx.post(f"{workers.base_url}/agentrouter.auth.v1.AuthService/GetJWKS", content=token,
               headers={"content-type": "application/json",
                        "authorization": f"Bearer {token}"})  # fmt: skip
    # Wait for the access-log lines of both requests: until they have arrived, a search of the
    # lines for the secrets those requests carried would pass whatever the server logs.
    expected = {("rest", JWKS), ("connect", CONNECT)}

    def logged(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
        requests = [r for r in records if r.get("event") == "request"][logged_before:]
        return {(r["protocol"], r["route"]) for r in requests}

    deadline = time.monotonic() + 10
    while not expected <= logged(workers.events()):
        assert time.monotonic() < deadline, "the requests that carried the secrets were not logged"
        time.sleep(0.1)
    secrets = {API_KEY, token}
    for path in keys_dir.glob("*.jwk.json"):
        private = json.loads(path.read_text())
        secrets |= {v for k, v in private.items() if k in {"d", "p", "q", "dp", "dq", "qi"}}
    checked = [json.loads(line) for line in workers.lines]
    assert expected <= logged(checked), "the requests' log lines are not among the lines checked"
    for line in workers.lines:
        record = json.loads(line)  # every line, granian's included, is one JSON object
        assert {"time", "level", "logger", "message"} <= set(record)
        for secret in secrets:
            assert secret not in line
    access = workers.events("request")
    assert {"rest", "connect", "grpcweb"} <= {e["protocol"] for e in access}
    assert all("?" not in e["route"] and "path" not in e for e in access)
    (listening, *others) = workers.events("listening")
    assert {"http", "grpc", "key_store", "kids", "policy", "pid"} <= set(listening)
    assert len(others) == 1  # one per worker


def test_access_log_records_routes_never_a_token_in_the_path(workers: ServerProcess) -> None:
    token = secrets.token_urlsafe(48)  # looks like a bearer token
    unrouted = [f"/{token}", f"{JWKS}/{token}", f"/.well-known/{token}", f"/{token}{JWKS}",
                f"{CONNECT}/{token}", f"/agentrouter.auth.v1.AuthService/{token}"]  # fmt: skip
    logged_before = len(workers.events("request"))
    for path in unrouted:
        assert fresh_get(workers.base_url + path).status_code == 404
    posted = httpx.post(f"{workers.base_url}{CONNECT}/{token}", content=b"{}",
                        headers={"content-type": "application/json"}, timeout=10)  # fmt: skip
    assert posted.status_code == 404
    assert fresh_get(workers.base_url + JWKS).status_code == 200
    assert httpx.post(workers.base_url + CONNECT, content=b"{}", timeout=10,
                      headers={"content-type": "application/json"}).status_code == 200  # fmt: skip
    deadline = time.monotonic() + 10
    while len(workers.events("request")) < logged_before + len(unrouted) + 3:
        assert time.monotonic() < deadline, "access log lines missing"
        time.sleep(0.1)
    access = workers.events("request")[logged_before:]
    assert [e["route"] for e in access if e["status"] == 404] == ["unrouted"] * (len(unrouted) + 1)
    assert {e["route"] for e in access if e["status"] == 200} == {JWKS, CONNECT}
    assert not [line for line in workers.drain() if token in line]


def test_next_step_gauge_is_not_negative_after_keys_rotate(tmp_path: Path) -> None:
    """The active key's successor time has passed, and `keys rotate` has just made the
    successor: the next step is its promotion, publish-ahead from now, not an overdue one."""
    policy = ["--rotation-period", "3s", "--publish-ahead", "2s", "--retain-after", "2s",
              "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "1s",
              "--stale-while-revalidate", "0s"]  # fmt: skip
    keys_dir = tmp_path / "keys"
    keys = [*AGENTROUTER_AUTH, "keys"]
    subprocess.run([*keys, "init", "--keys-dir", str(keys_dir), *policy], check=True)
    (active,) = json.loads((keys_dir / "manifest.json").read_text())["keys"]
    argv = serve_argv(keys_dir, "--rotation", "off", "--reload-interval", "200ms", *policy)
    with ServerProcess(argv) as server:
        # the successor was due 1 s after activation (rotation period - publish-ahead)
        time.sleep(max(0.0, active["created"] + 1.5 - time.time()))
        subprocess.run([*keys, "rotate", "--keys-dir", str(keys_dir), *policy], check=True)
        pending = ("agentrouter_auth_keys", (("state", "pending"),))
        deadline = time.monotonic() + 10
        while (scrape := samples(server.base_url))[pending] != 1:
            assert time.monotonic() < deadline, "the server never saw the successor"
            time.sleep(0.1)
        next_step = scrape[("agentrouter_auth_next_rotation_step_seconds", ())]
        assert 0 <= next_step <= 2  # publish-ahead: when the successor is due to sign
        assert server.terminate() == 0


# -- TLS -------------------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        """A client TLS context trusting the test CA, presenting the client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca))
        if client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _issue(name: str, issuer: Issued | None, *, server: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate."""
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue("agentrouter-auth test CA", None)
    files = {}
    for name, (cert, key) in {
        "ca": ca, "server": _issue("127.0.0.1", ca, server=True), "client": _issue("client", ca)
    }.items():  # fmt: skip
        (folder / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / f"{name}.key").chmod(0o600)
        files[name] = folder / f"{name}.pem"
    return Pki(files["ca"], files["server"], folder / "server.key", files["client"],
               folder / "client.key")  # fmt: skip


@pytest.fixture(scope="module")
def tls_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keys_dir = tmp_path_factory.mktemp("tls") / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    return keys_dir


@pytest.mark.parametrize(("http2", "version"), [("on", "HTTP/2"), ("off", "HTTP/1.1")])
def test_tls_on_both_listeners(pki: Pki, tls_keys: Path, http2: str, version: str) -> None:
    argv = serve_argv(
        tls_keys, "--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
        "--http2", http2,
    )  # fmt: skip
    with ServerProcess(argv, tls=pki.context()) as server:
        https = f"https://127.0.0.1:{server.http_port}"
        with httpx.Client(verify=pki.context(), http2=True, timeout=10) as client:
            response = client.get(https + JWKS)
        assert response.status_code == 200
        assert response.http_version == version  # negotiated by ALPN
        credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
            reply = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(
                auth_pb2.GetJWKSRequest(), timeout=10
            )
        assert [key.kid for key in reply.keys] == [k["kid"] for k in response.json()["keys"]]

        with pytest.raises(httpx.HTTPError):  # plaintext to the TLS port fails cleanly
            httpx.get(f"http://127.0.0.1:{server.http_port}{JWKS}", timeout=5)
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
        with channel, pytest.raises(grpc.RpcError) as plain:
            auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=5)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        with httpx.Client(verify=True, timeout=5) as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get(https + JWKS)  # the system store does not know the test CA
        with httpx.Client(verify=pki.context(), timeout=10) as client:
            assert client.get(https + JWKS).status_code == 200  # still serving
        assert server.terminate() == 0


def test_mutual_tls(pki: Pki, tls_keys: Path) -> None:
    argv = serve_argv(tls_keys, "--tls-cert", str(pki.server_cert),
                      "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca))  # fmt: skip
    with ServerProcess(argv, tls=pki.context(client_cert=True)) as server:
        https = f"https://127.0.0.1:{server.http_port}"
        with httpx.Client(verify=pki.context(client_cert=True), timeout=10) as client:
            assert client.get(https + JWKS).status_code == 200
        anonymous = httpx.Client(verify=pki.context(), timeout=5)
        with anonymous, pytest.raises(httpx.HTTPError):
            anonymous.get(https + JWKS)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.read_bytes(),
            private_key=pki.client_key.read_bytes(),
            certificate_chain=pki.client_cert.read_bytes(),
        )
        with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
            auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=10)
        anonymous_grpc = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
        channel = grpc.secure_channel(f"127.0.0.1:{server.port}", anonymous_grpc)
        with channel, pytest.raises(grpc.RpcError):
            auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=5)
        assert server.terminate() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "cannot load"),
        (["--tls-client-ca", "/ca.pem"], "--tls-client-ca needs --tls-cert and --tls-key"),
        (["--workers", "0"], "--workers must be from 1 to 64"),
        (["--log-format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_operations_options_are_one_line_errors(
    tls_keys: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        serve_argv(tls_keys, *args), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
