"""The vertical slice: a real grpcio server answers the generated stub on a loopback port."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from jwcrypto import jwk

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.snapshot import render
from tests.conftest import Seeder

from .serverproc import (
    AGENTROUTER_AUTH,
    ServerProcess,
    grpc_listener,
    refused_in_one_line,
    serve_argv,
)

pytestmark = pytest.mark.integration
PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def expected_keys(keys: list[jwk.JWK]) -> list[dict[str, object]]:
    """What a verifier must receive: each key's public half, sorted by kid (jwcrypto's view)."""
    return sorted((k.export_public(as_dict=True) for k in keys), key=lambda m: str(m["kid"]))


def test_grpc_stub_receives_the_public_set(key_pool: list[jwk.JWK]) -> None:
    with (
        grpc_listener(render(key_pool)) as port,
        grpc.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        response = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(
            auth_pb2.GetJWKSRequest(),
            metadata=(("authorization", "Bearer anything-at-all"),),
            timeout=10,
        )
        # typeshed's grpcio-health-checking and grpcio-reflection stubs omit client methods.
        health = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
            health_pb2.HealthCheckRequest(service="agentrouter.auth.v1.AuthService"), timeout=10
        )
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        (reply,) = reflection.ServerReflectionInfo(  # type: ignore[operator]
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    document = json_format.MessageToDict(response)
    assert document["keys"] == expected_keys(key_pool)
    assert not PRIVATE & {member for key in document["keys"] for member in key}
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    services = {service.name for service in reply.list_services_response.service}
    assert {"agentrouter.auth.v1.AuthService", "grpc.health.v1.Health"} <= services


def call_jwks(port: int) -> auth_pb2.GetJWKSResponse:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(auth_pb2.GetJWKSRequest(), timeout=10)


def test_serve_command_answers_and_stops_cleanly(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Seeder
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[1:4])
    argv = serve_argv(store.path)
    with ServerProcess(argv) as server:
        response = call_jwks(server.port)
        assert json_format.MessageToDict(response)["keys"] == expected_keys(key_pool[1:4])
        assert server.terminate(signal.SIGTERM) == 0
    assert server.events("stopped")


def test_restart_publishes_the_same_set(tmp_path: Path) -> None:
    keys_dir = str(tmp_path / "keys")
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", keys_dir], check=True)
    argv = serve_argv(keys_dir)
    answers = []
    for _ in range(2):
        with ServerProcess(argv) as server:
            answers.append(call_jwks(server.port).SerializeToString(deterministic=True))
            assert server.terminate(signal.SIGINT) == 0
    assert answers[0] == answers[1]
    assert len(auth_pb2.GetJWKSResponse.FromString(answers[0]).keys) == 1


@pytest.mark.slow
def test_make_run_starts_a_server_a_grpc_client_can_call(tmp_path: Path) -> None:
    argv = ["make", "--no-print-directory", "run", f"KEYS_DIR={tmp_path / 'keys'}",
            "GRPC_ADDR=127.0.0.1:0", "HTTP_ADDR=127.0.0.1:0",
            f"PYTHON={sys.executable}"]  # fmt: skip
    with ServerProcess(argv, startup_timeout=300) as server:
        (key,) = call_jwks(server.port).keys
        assert key.alg == "ES256"
        assert key.use == "sig"
        assert key.kid
        server.terminate(signal.SIGTERM)
    assert server.events("stopped")
    key_file = tmp_path / "keys" / f"{key.kid}.jwk.json"
    assert json.loads(key_file.read_text())["d"]  # the private half stays on disk, 0600
    assert key_file.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--grpc-addr", "127.0.0.1"], "--grpc-addr: expected HOST:PORT"),
        (["--grace-period", "soon"], "--grace-period: 'soon' is not a duration"),
        (["--reload-interval", "0"], "--reload-interval must be longer than zero"),
        (["--publish-ahead", "10m"], "at most half of --publish-ahead"),
        (["--keys-dir", "/nonexistent/keys"], "no keys in /nonexistent/keys"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--http-idle-timeout", "0s"], "--http-idle-timeout must be from 100ms to 1h"),
        (["--http-body-timeout", "2h"], "--http-body-timeout must be from 100ms to 1h"),
        (["--max-connections", "-1"], "--max-connections must not be negative"),
        (["--max-connections", "100000000"], "--max-connections 100000000 needs"),
        (["--http2", "maybe"], "invalid choice"),
        (["--grpc-max-streams", "0"], "--grpc-max-streams must be above 0"),
        (["--grpc-max-calls", "many"], "--grpc-max-calls: expected a whole number"),
        (["--grpc-request-timeout", "soon"], "--grpc-request-timeout: 'soon' is not a duration"),
        (["--grpc-idle-timeout", "0s"], "--grpc-idle-timeout must be above 0"),
    ],
)
def test_bad_configuration_exits_with_one_line(
    tmp_path: Path, args: list[str], reason: str
) -> None:
    keys_dir = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    line = refused_in_one_line([*AGENTROUTER_AUTH, "serve", "--keys-dir", str(keys_dir), *args])
    assert reason in line


def test_bad_key_file_stops_the_server_naming_it(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    (keys_dir / "broken.jwk.json").write_text("{")
    (keys_dir / "manifest.json").write_text(  # only listed keys are read
        '{"format": 1, "keys": [{"kid": "broken", "alg": "ES256", "state": "active", '
        '"created": 1}]}'
    )
    result = subprocess.run(
        serve_argv(keys_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "broken.jwk.json: not a valid JWK" in result.stderr
