"""One servicer, four transports: REST, Connect, gRPC-Web and gRPC answer alike, over real
clients against the real server."""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from connectrpc.compat import google_protobuf_binary_codec, google_protobuf_json_codec
from connectrpc.protocol import ProtocolType
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter.auth.v1.auth_connect import AuthServiceClientSync

from .serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv

pytestmark = pytest.mark.integration
JWKS = "/.well-known/jwks.json"
CONNECT = "/agentrouter.auth.v1.AuthService/GetJWKS"
POLICY = ["--cache-max-age", "2m", "--stale-while-revalidate", "30s", "--stale-if-error", "2h"]
BEARER = {"authorization": "Bearer an-api-key-the-endpoint-ignores"}


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protocols") / "keys"
    init = [*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(path)]
    subprocess.run([*init, "--alg", "RS256", "--alg", "ES256", "--alg", "EdDSA"], check=True)
    return path


@pytest.fixture(scope="module")
def server(keys_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off", *POLICY)) as running:
        yield running
        assert running.terminate() == 0


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10, follow_redirects=False) as client:
        yield client


def rest_document(http: httpx.Client) -> dict[str, list[dict[str, object]]]:
    response = http.get(JWKS)
    assert response.status_code == 200
    document: dict[str, list[dict[str, object]]] = response.json()
    return document


def grpc_document(port: int) -> dict[str, object]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(
            auth_pb2.GetJWKSRequest(), metadata=tuple(BEARER.items()), timeout=10
        )
    return json_format.MessageToDict(response)


def connect_client(
    server: ServerProcess, protocol: ProtocolType, codec: str = "proto"
) -> AuthServiceClientSync:
    """connectrpc's own client, with its google.protobuf codecs (not the server's)."""
    chosen = google_protobuf_json_codec() if codec == "json" else google_protobuf_binary_codec()
    return AuthServiceClientSync(
        server.base_url, protocol=protocol, codec=chosen, timeout_ms=10_000
    )


# -- REST ------------------------------------------------------------------------------------


def test_rest_serves_the_exact_rfc_7517_document(http: httpx.Client, keys_dir: Path) -> None:
    response = http.get(JWKS, headers=BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.content
    assert body == json.dumps(json.loads(body), separators=(",", ":")).encode()  # compact
    document = json.loads(body)
    assert list(document) == ["keys"]
    kids = [key["kid"] for key in document["keys"]]
    assert kids == sorted(kids)
    on_disk = {p.name.removesuffix(".jwk.json") for p in keys_dir.glob("*.jwk.json")}
    assert set(kids) == on_disk
    assert {key["alg"] for key in document["keys"]} == {"RS256", "ES256", "EdDSA"}
    for key in document["keys"]:
        assert key["use"] == "sig"
        assert not {"d", "p", "q", "dp", "dq", "qi", "oth", "k"} & set(key)


def test_rest_cache_headers_come_from_the_policy(http: httpx.Client) -> None:
    response = http.get(JWKS)
    assert response.headers["cache-control"] == (
        "public, max-age=120, stale-while-revalidate=30, stale-if-error=7200"
    )
    assert response.headers["access-control-allow-origin"] == "*"
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert not etag.startswith("W/")
    assert "Accept-Encoding" in response.headers["vary"]


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("application/jwk-set+json", "application/jwk-set+json"),
        ("application/jwk-set+json, application/json", "application/json"),
        ("*/*", "application/json"),
        ("application/json", "application/json"),
    ],
)
def test_rest_content_type_negotiation(http: httpx.Client, accept: str, content_type: str) -> None:
    response = http.get(JWKS, headers={"accept": accept})
    assert response.headers["content-type"] == content_type
    assert response.content == http.get(JWKS).content


def test_rest_conditional_requests(http: httpx.Client) -> None:
    first = http.get(JWKS)
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = http.get(JWKS, headers={"if-none-match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == first.headers["cache-control"]
    assert http.get(JWKS, headers={"if-none-match": '"stale"'}).status_code == 200


def test_rest_head_has_the_headers_and_no_body(http: httpx.Client) -> None:
    get, head = http.get(JWKS), http.head(JWKS)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["etag"] == get.headers["etag"]


def test_rest_gzip_when_asked(http: httpx.Client) -> None:
    plain = http.get(JWKS, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    with http.stream("GET", JWKS, headers={"accept-encoding": "gzip"}) as zipped:
        raw = b"".join(zipped.iter_raw())
        assert zipped.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content)
    assert "content-encoding" not in http.get(JWKS, headers={"accept-encoding": "gzip;q=0"}).headers


def test_rest_cors_preflight(http: httpx.Client) -> None:
    response = http.options(
        JWKS,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization, x-trace",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "GET" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "authorization, x-trace"


def test_rpc_cors_preflight_allows_the_connect_and_grpc_web_headers(http: httpx.Client) -> None:
    sent = "authorization, connect-protocol-version, connect-timeout-ms, x-user-agent"
    response = http.options(
        CONNECT,
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "GET",
            "access-control-request-headers": sent,
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert {"GET", "POST"} <= set(response.headers["access-control-allow-methods"].split(", "))
    allowed = set(response.headers["access-control-allow-headers"].split(", "))
    assert set(sent.split(", ")) | {"content-type", "x-grpc-web", "grpc-timeout"} <= allowed
    assert response.content == b""


def test_rpc_answers_are_open_to_any_origin(http: httpx.Client) -> None:
    origin = {"origin": "https://app.example"}
    connect_get = http.get(f"{CONNECT}?encoding=json&message=%7B%7D&connect=v1", headers=origin)
    grpc_web = http.post(
        CONNECT,
        content=b"\x00\x00\x00\x00\x00",
        headers={**origin, "content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
    )
    connect_error = http.get(f"{CONNECT}?encoding=json&message=%7B&connect=v1", headers=origin)
    for response in (connect_get, grpc_web, connect_error):
        assert response.headers["access-control-allow-origin"] == "*"
    assert (connect_get.status_code, grpc_web.status_code) == (200, 200)
    assert connect_error.status_code == 400
    assert "grpc-status" in grpc_web.headers["access-control-expose-headers"]


def test_every_answer_carries_the_headers_of_its_family(http: httpx.Client) -> None:
    """Whoever answers (the transcoder, connectrpc, the Connect adapter itself, the listener):
    REST answers, errors included, are open to any origin; Connect and gRPC-Web answers expose
    gRPC-Web's status headers; the service's own answers are never cached."""
    etag = http.get(JWKS).headers["etag"]
    rest = {
        "200": http.get(JWKS),
        "304": http.get(JWKS, headers={"if-none-match": etag}),
        "404": http.get("/nope"),
        "405": http.delete(JWKS),
        "406": http.get(JWKS, headers={"accept": "application/json;q=0"}),
        "HEAD 404": http.head("/nope"),
    }
    for name, response in rest.items():
        assert response.status_code == int(name[-3:]), name
        assert response.headers.get("access-control-allow-origin") == "*", name
    rpc = {
        "Connect GET": http.get(f"{CONNECT}?encoding=json&message=%7B%7D&connect=v1"),
        "Connect POST error": http.post(
            CONNECT, content=b"[]", headers={"content-type": "application/json"}
        ),
        # a GET whose message is not base64 is refused by the adapter before connectrpc
        "Connect GET refused": http.get(f"{CONNECT}?encoding=json&base64=1&message=!!!"),
        "unknown procedure": http.post(
            CONNECT.replace("GetJWKS", "Nope"), content=b"{}",
            headers={"content-type": "application/json"},
        ),
    }  # fmt: skip
    for name, response in rpc.items():
        assert response.headers.get("access-control-allow-origin") == "*", name
        exposed = response.headers.get("access-control-expose-headers", "")
        assert "grpc-status" in exposed, name
    refused = rpc["Connect GET refused"]
    assert (refused.status_code, refused.json()["code"]) == (400, "invalid_argument")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert http.get(path).headers.get("cache-control") == "no-store", path


@pytest.mark.parametrize(
    "path", ["/.well-known/jwks.json/", "/.well-known//jwks.json", "/jwks", "/"]
)
def test_rest_unknown_paths_are_404_status_json_never_redirects(
    http: httpx.Client, path: str
) -> None:
    response = http.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == 5
    assert response.json()["details"] == []
    assert "location" not in response.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_rest_wrong_method_is_405_with_allow(http: httpx.Client, method: str) -> None:
    response = http.request(method, JWKS, content=b"{}")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS"
    status = response.json()
    assert status["code"] == 12
    assert method in status["message"]


def test_unknown_query_parameters_are_ignored(http: httpx.Client) -> None:
    assert http.get(JWKS, params={"cachebust": "1"}).content == http.get(JWKS).content


def test_health_endpoints(http: httpx.Client, server: ServerProcess) -> None:
    health = http.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["pid"] in {e["pid"] for e in server.events("listening")}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


# -- every protocol, the same answer --------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "codec", "use_get"),
    [
        (ProtocolType.CONNECT, "proto", False),
        (ProtocolType.CONNECT, "json", False),
        (ProtocolType.CONNECT, "proto", True),
        (ProtocolType.CONNECT, "json", True),
        (ProtocolType.GRPC_WEB, "proto", False),
        (ProtocolType.GRPC_WEB, "json", False),
    ],
)
def test_connect_and_grpc_web_return_the_rest_keys(
    server: ServerProcess, http: httpx.Client, protocol: ProtocolType, codec: str, use_get: bool
) -> None:
    with connect_client(server, protocol, codec) as client:
        response = client.get_jwks(auth_pb2.GetJWKSRequest(), headers=BEARER, use_get=use_get)
    assert json_format.MessageToDict(response) == rest_document(http)


def test_grpc_returns_the_rest_keys(server: ServerProcess, http: httpx.Client) -> None:
    assert grpc_document(server.port) == rest_document(http)


@pytest.mark.parametrize("use_get", [False, True])
def test_connect_json_is_the_compact_rest_document(http: httpx.Client, use_get: bool) -> None:
    if use_get:
        response = http.get(CONNECT, params={"encoding": "json", "message": "{}"}, headers=BEARER)
    else:
        response = http.post(
            CONNECT, content=b"{}", headers={"content-type": "application/json", **BEARER}
        )
    assert response.status_code == 200
    assert response.content == http.get(JWKS).content
    assert b"  " not in response.content


def test_reflection_lists_auth_service(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = stub.ServerReflectionInfo(  # type: ignore[operator]
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    names = {service.name for service in reply.list_services_response.service}
    assert "agentrouter.auth.v1.AuthService" in names


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"content-type": "application/proto"}, b"\xff\xff\xff", 400, "invalid_argument"),
        ({"content-type": "application/json"}, b"{not json", 400, "invalid_argument"),
        ({"content-type": "application/json"}, b'{"keys": 5}', 200, None),  # unknown: ignored
        ({"content-type": "text/plain"}, b"{}", 415, None),
        ({"content-type": "application/xml"}, b"<a/>", 415, None),
        ({}, b"{}", 415, None),
        ({"content-type": "application/json", "content-encoding": "br-x"}, b"{}", 501, None),
    ],
)
def test_connect_bad_requests_get_connect_errors(
    http: httpx.Client, headers: dict[str, str], body: bytes, status: int, code: str | None
) -> None:
    response = http.post(CONNECT, content=body, headers=headers)
    assert response.status_code == status
    if code:
        assert response.json()["code"] == code
    assert http.get(JWKS).status_code == 200


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00\x00\x00\x10",  # declares 16 bytes, sends none
        b"\x00\x00\x00",  # truncated prefix
        b"\x00\x00\x00\x00\x03\xff\xff\xff",  # not a protobuf message
    ],
)
def test_grpc_web_truncated_or_garbage_frames(http: httpx.Client, frame: bytes) -> None:
    response = http.post(
        CONNECT, content=frame, headers={"content-type": "application/grpc-web+proto"}
    )
    assert response.status_code == 200  # gRPC-Web reports errors in its status
    status = response.headers.get("grpc-status") or _trailer_status(response.content)
    assert status not in (None, "0")
    assert http.get(JWKS).status_code == 200


def _trailer_status(body: bytes) -> str | None:
    position = 0
    while position + 5 <= len(body):
        flags, length = body[position], int.from_bytes(body[position + 1 : position + 5], "big")
        payload = body[position + 5 : position + 5 + length]
        if flags & 0x80:
            for line in payload.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "grpc-status":
                    return value.strip()
        position += 5 + length
    return None


def test_native_grpc_on_the_http_port_is_told_where_to_go(keys_dir: Path) -> None:
    """With HTTP/2 on, the HTTP port answers gRPC with the gRPC port's number."""
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off", "--http2", "on")) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.http_port}")
        with channel, pytest.raises(grpc.RpcError) as failure:
            auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=10)
        assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert str(server.port) in str(failure.value.details())


def test_native_grpc_on_the_http1_port_fails_fast(server: ServerProcess) -> None:
    """HTTP/1.1 alone (the default): a gRPC client is refused at once, not left hanging."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.http_port}")
    with channel, pytest.raises(grpc.RpcError) as failure:
        auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(
            auth_pb2.GetJWKSRequest(), timeout=10, wait_for_ready=False
        )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_invalid_utf8_path_and_huge_headers_are_refused(
    server: ServerProcess, http: httpx.Client
) -> None:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as raw:
        raw.sendall(b"GET /.well-known/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = raw.recv(65536)
    assert reply.split(b" ")[1] in (b"400", b"404")
    assert http.get(JWKS, headers={"x-padding": "a" * 16_000}).status_code == 200
    huge = http.get(JWKS, headers={"x-padding": "a" * 100_000})
    assert huge.status_code == 431
    assert http.get(JWKS).status_code == 200


def test_connect_unknown_method_is_404(http: httpx.Client) -> None:
    response = http.post(
        "/agentrouter.auth.v1.AuthService/NoSuchMethod",
        content=b"{}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 404


# -- rotation while serving ------------------------------------------------------------------


def test_rotation_changes_etag_and_keys_on_every_protocol(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    argv = serve_argv(keys_dir, "--rotation", "off", "--reload-interval", "200ms")
    with ServerProcess(argv) as running, httpx.Client(base_url=running.base_url) as http:
        before = http.get(JWKS)
        subprocess.run(
            [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(keys_dir)], check=True
        )
        deadline_polls = 100
        after = before
        while deadline_polls and after.headers["etag"] == before.headers["etag"]:
            after = http.get(JWKS)
            deadline_polls -= 1
            __import__("time").sleep(0.1)
        assert after.headers["etag"] != before.headers["etag"]
        assert len(after.json()["keys"]) == 2
        assert http.get(JWKS, headers={"if-none-match": before.headers["etag"]}).status_code == 200
        expected = after.json()
        assert grpc_document(running.port) == expected
        for protocol in (ProtocolType.CONNECT, ProtocolType.GRPC_WEB):
            with connect_client(running, protocol) as client:
                got = client.get_jwks(auth_pb2.GetJWKSRequest())
            assert json_format.MessageToDict(got) == expected
        assert running.terminate(signal.SIGTERM) == 0


def test_the_app_runs_under_another_asgi_server(keys_dir: Path) -> None:
    """The HTTP app is plain ASGI: uvicorn serves it from the same environment variables."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        http_port = probe.getsockname()[1]
    env = {
        **os.environ,
        "AGENTROUTER_AUTH_KEYS_DIR": str(keys_dir),
        "AGENTROUTER_AUTH_HTTP_ADDR": f"127.0.0.1:{http_port}",
        "AGENTROUTER_AUTH_GRPC_ADDR": "127.0.0.1:0",
    }
    argv = [sys.executable, "-m", "uvicorn", "--factory", "agentrouter_auth.asgi:create_app",
            "--host", "127.0.0.1", "--port", str(http_port), "--lifespan", "on"]  # fmt: skip
    with ServerProcess(argv, env=env) as running, httpx.Client(base_url=running.base_url) as http:
        response = http.get(JWKS)
        assert response.status_code == 200
        assert response.headers["server"] == "uvicorn"
        assert grpc_document(running.port) == response.json()
        running.terminate()  # uvicorn re-raises SIGTERM after its graceful shutdown
    assert running.events("stopped")


def test_no_private_member_value_on_any_protocol(
    server: ServerProcess, http: httpx.Client, keys_dir: Path
) -> None:
    """The store holds private keys; no byte of a private member reaches any protocol."""
    secrets = set()
    for path in keys_dir.glob("*.jwk.json"):
        private = json.loads(path.read_text())
        secrets |= {v for k, v in private.items() if k in {"d", "p", "q", "dp", "dq", "qi"}}
    assert len(secrets) >= 3  # RSA, EC and OKP private halves are on disk
    bodies = [
        http.get(JWKS).content,
        http.get(JWKS, headers={"accept-encoding": "identity"}).content,
        http.post(CONNECT, content=b"{}", headers={"content-type": "application/json"}).content,
        http.post(CONNECT, content=b"", headers={"content-type": "application/proto"}).content,
        http.get(CONNECT, params={"encoding": "json", "message": "{}"}).content,
        http.post(
            CONNECT,
            content=b"\x00\x00\x00\x00\x00",
            headers={"content-type": "application/grpc-web+proto"},
        ).content,
    ]
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        raw = channel.unary_unary(
            "/agentrouter.auth.v1.AuthService/GetJWKS",
            request_serializer=lambda body: body,
            response_deserializer=lambda body: body,
        )(b"", timeout=10)
    bodies.append(raw)
    kids = [str(key["kid"]) for key in rest_document(http)["keys"]]
    for body in bodies:
        assert all(kid.encode() in body for kid in kids)  # a real answer was scanned
        for secret in secrets:
            assert secret.encode() not in body
