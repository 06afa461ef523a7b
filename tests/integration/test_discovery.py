"""OpenID Connect discovery: a verifier that knows only the issuer finds the keys, on every
protocol, and verifies the tokens `token sign` makes for that issuer."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import jwt
import pytest
from connectrpc.code import Code as ConnectCode
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError
from connectrpc.protocol import ProtocolType
from google.protobuf import json_format

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter.auth.v1.auth_connect import AuthServiceClientSync
from tests.support import free_port

from .serverproc import AGENTROUTER_AUTH, ServerProcess, refused_in_one_line, serve_argv

pytestmark = pytest.mark.integration
DISCOVERY = "/.well-known/openid-configuration"
ALGS = ("EdDSA", "ES256", "RS256")


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("discovery") / "keys"
    init = [*AGENTROUTER_AUTH, "keys", "init", "--key-store", str(path)]
    subprocess.run([*init, *(arg for alg in ALGS for arg in ("--alg", alg))], check=True)
    return path


@pytest.fixture(scope="module")
def issuer_server(keys_dir: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A server whose issuer is its own HTTP address, as a verifier would reach it."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    argv = [*AGENTROUTER_AUTH, "serve", "--key-store", str(keys_dir), "--http-addr",
            f"127.0.0.1:{port}", "--grpc-addr", "127.0.0.1:0", "--rotation", "off",
            "--issuer", issuer]  # fmt: skip
    with ServerProcess(argv) as server:
        yield server, issuer


def sign(keys_dir: Path, *extra: str, claims: str = '{"sub": "svc"}') -> str:
    argv = [*AGENTROUTER_AUTH, "token", "sign", "--key-store", str(keys_dir), "--claims", claims,
            "--alg", "ES256", *extra]  # fmt: skip
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def test_a_verifier_finds_the_keys_from_the_issuer_alone(
    issuer_server: tuple[ServerProcess, str], keys_dir: Path
) -> None:
    _, issuer = issuer_server
    document = httpx.get(issuer + DISCOVERY, timeout=10).json()
    assert document == {
        "issuer": issuer,
        "jwks_uri": issuer + "/.well-known/jwks.json",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": sorted(ALGS),
    }
    token = sign(keys_dir, "--issuer", issuer)
    key = jwt.PyJWKClient(document["jwks_uri"]).get_signing_key_from_jwt(token)
    algorithms = document["id_token_signing_alg_values_supported"]
    claims = jwt.decode(token, key.key, algorithms=algorithms, issuer=document["issuer"])
    assert claims["iss"] == issuer
    assert claims["sub"] == "svc"
    with pytest.raises(jwt.InvalidIssuerError):
        jwt.decode(token, key.key, algorithms=["ES256"], issuer="https://someone-else.test")


def test_the_document_is_rendered_once_with_its_own_etag_and_cache_lifetime(
    issuer_server: tuple[ServerProcess, str],
) -> None:
    _, issuer = issuer_server
    first = httpx.get(issuer + DISCOVERY, timeout=10)
    jwks = httpx.get(issuer + "/.well-known/jwks.json", timeout=10)
    assert first.headers["etag"] != jwks.headers["etag"]
    assert first.headers["cache-control"] == jwks.headers["cache-control"]
    assert first.headers["content-type"] == "application/json"
    again = httpx.get(issuer + DISCOVERY, headers={"if-none-match": first.headers["etag"]},
                      timeout=10)  # fmt: skip
    assert again.status_code == 304


def test_every_protocol_serves_the_same_document(
    issuer_server: tuple[ServerProcess, str],
) -> None:
    server, issuer = issuer_server
    rest = httpx.get(issuer + DISCOVERY, timeout=10).json()
    request = auth_pb2.GetOpenIDConfigurationRequest()
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        via_grpc = auth_pb2_grpc.AuthServiceStub(channel).GetOpenIDConfiguration(
            request, timeout=10
        )
    answers = [via_grpc]
    for protocol in (ProtocolType.CONNECT, ProtocolType.GRPC_WEB):
        with AuthServiceClientSync(server.base_url, protocol=protocol, timeout_ms=10_000,
                                   codec=google_protobuf_binary_codec()) as client:  # fmt: skip
            answers.append(client.get_open_id_configuration(request))
    for answer in answers:
        assert json_format.MessageToDict(answer, preserving_proto_field_name=True) == rest
    connect_get = httpx.get(
        f"{server.base_url}/agentrouter.auth.v1.AuthService/GetOpenIDConfiguration",
        params={"encoding": "json", "message": "{}"},
        timeout=10,
    )
    assert connect_get.json() == rest


def test_without_an_issuer_discovery_is_not_found_on_every_protocol(keys_dir: Path) -> None:
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off")) as server:
        response = httpx.get(server.base_url + DISCOVERY, timeout=10)
        assert response.status_code == 404
        assert response.json()["code"] == grpc.StatusCode.NOT_FOUND.value[0]
        request = auth_pb2.GetOpenIDConfigurationRequest()
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            with pytest.raises(grpc.RpcError) as failure:
                stub.GetOpenIDConfiguration(request, timeout=10)
            assert failure.value.code() == grpc.StatusCode.NOT_FOUND
        with (
            AuthServiceClientSync(server.base_url, timeout_ms=10_000) as client,
            pytest.raises(ConnectError) as connect_failure,
        ):
            client.get_open_id_configuration(request)
        assert connect_failure.value.code == ConnectCode.NOT_FOUND
        assert httpx.get(server.base_url + "/.well-known/jwks.json", timeout=10).status_code == 200


def test_jwks_uri_may_point_elsewhere(keys_dir: Path) -> None:
    argv = serve_argv(keys_dir, "--rotation", "off", "--issuer", "https://auth.example.test/tenant",
                      "--jwks-uri", "https://cdn.example.test/jwks.json")  # fmt: skip
    with ServerProcess(argv) as server:
        document = httpx.get(server.base_url + DISCOVERY, timeout=10).json()
    assert document["issuer"] == "https://auth.example.test/tenant"
    assert document["jwks_uri"] == "https://cdn.example.test/jwks.json"


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--issuer", "http://auth.example.test"], "must use https"),
        (["--issuer", "ftp://auth.example.test"], "must be an absolute https URL"),
        (["--issuer", "https://auth.example.test/?tenant=1"], "must have no query or fragment"),
        (["--issuer", "https://auth.example.test/#x"], "must have no query or fragment"),
        (["--issuer", "auth.example.test"], "must be an absolute https URL"),
        (["--jwks-uri", "https://cdn.example.test/jwks.json"], "--jwks-uri needs --issuer"),
    ],
)
def test_bad_discovery_options_stop_the_server_in_one_line(
    keys_dir: Path, args: list[str], reason: str
) -> None:
    assert reason in refused_in_one_line(serve_argv(keys_dir, *args))


def test_token_sign_sets_iss_only_from_the_issuer(keys_dir: Path) -> None:
    plain = jwt.decode(sign(keys_dir), options={"verify_signature": False})
    assert "iss" not in plain
    issued = sign(keys_dir, "--issuer", "https://auth.example.test")
    assert (
        jwt.decode(issued, options={"verify_signature": False})["iss"]
        == "https://auth.example.test"
    )
    line = refused_in_one_line([*AGENTROUTER_AUTH, "token", "sign", "--key-store", str(keys_dir),
                                "--claims", json.dumps({"iss": "https://other.test"}),
                                "--issuer", "https://auth.example.test"])  # fmt: skip
    assert "iss differs from --issuer" in line
