"""Every language's generated code is exactly what the pinned generators make from proto/, the
SDKs carry the one version of sdk/VERSION, and drift of either is detected."""

from __future__ import annotations

import json
from pathlib import Path

import contract
from tests.conftest import REPO


def test_committed_code_matches_a_fresh_generation() -> None:
    assert contract.generated_drift() == []


def test_generation_writes_every_language(tmp_path: Path) -> None:
    for manifest in contract.VERSION_FIELDS:  # stamped in place: generation needs the originals
        (tmp_path / manifest).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / manifest).write_text((REPO / manifest).read_text())
    written = {p.relative_to(tmp_path).as_posix() for p in contract.generate(REPO, tmp_path)}
    server = {
        f"gen/agentrouter/auth/v1/auth{suffix}"
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", "_connect.py")
    }
    python_sdk = {
        f"sdk/python/tars/auth/v1/auth{suffix}" for suffix in ("_pb2.py", "_pb2.pyi", "_connect.py")
    }
    go_sdk = {
        "sdk/go/genapi/api/tars/auth/v1/auth.pb.go",
        "sdk/go/genapi/api/tars/auth/v1/authv1connect/auth.connect.go",
    }
    typescript_sdk = {
        "sdk/typescript/src/gen/tars/auth/v1/auth_pb.ts",
        "sdk/typescript/src/gen/google/api/annotations_pb.ts",
        "sdk/typescript/src/gen/google/api/http_pb.ts",
    }
    versions = {*contract.VERSION_SOURCES, *contract.VERSION_FIELDS}
    assert written == server | python_sdk | go_sdk | typescript_sdk | versions
    connect = (tmp_path / "gen/agentrouter/auth/v1/auth_connect.py").read_text()
    assert 'parameter "protobuf=google"' in connect
    assert "class AuthServiceASGIApplication" in connect
    go = (tmp_path / "sdk/go/genapi/api/tars/auth/v1/auth.pb.go").read_text()
    assert "package authv1" in go
    es = (tmp_path / "sdk/typescript/src/gen/tars/auth/v1/auth_pb.ts").read_text()
    assert "export const GetJWKSRequestSchema" in es
    assert "protoc-gen-es v2." in es


def test_a_contract_change_without_regeneration_is_drift(repo_copy: Path) -> None:
    proto = repo_copy / "proto/agentrouter/auth/v1/auth.proto"
    proto.write_text(
        proto.read_text().replace("string y = 14;", "string y = 14;\n  string z = 15;")
    )
    drift = contract.generated_drift(repo_copy)
    assert set(drift) == {
        "gen/agentrouter/auth/v1/auth_pb2.py",
        "gen/agentrouter/auth/v1/auth_pb2.pyi",
        "sdk/python/tars/auth/v1/auth_pb2.py",
        "sdk/python/tars/auth/v1/auth_pb2.pyi",
        "sdk/go/genapi/api/tars/auth/v1/auth.pb.go",
        "sdk/typescript/src/gen/tars/auth/v1/auth_pb.ts",
    }


def test_a_hand_edit_or_stale_file_is_drift(repo_copy: Path) -> None:
    generated = repo_copy / "gen/agentrouter/auth/v1"
    with (generated / "auth_connect.py").open("a") as handle:
        handle.write("# edited by hand\n")
    (generated / "old_pb2.py").write_text("# left over from a removed proto\n")
    connect_go = repo_copy / "sdk/go/genapi/api/tars/auth/v1/authv1connect/auth.connect.go"
    connect_go.write_text(connect_go.read_text().replace("GetJWKS", "GetJwks"))
    assert contract.generated_drift(repo_copy) == [
        "gen/agentrouter/auth/v1/old_pb2.py",
        "gen/agentrouter/auth/v1/auth_connect.py",
        "sdk/go/genapi/api/tars/auth/v1/authv1connect/auth.connect.go",
    ]


def test_one_version_for_every_sdk(repo_copy: Path) -> None:
    (repo_copy / contract.SDK_VERSION).write_text("0.2.0\n")
    drift = contract.generated_drift(repo_copy)
    assert sorted(drift) == sorted([*contract.VERSION_SOURCES, *contract.VERSION_FIELDS])
    contract.stamp_version(repo_copy)
    assert contract.generated_drift(repo_copy) == []
    package = json.loads((repo_copy / "sdk/typescript/package.json").read_text())
    assert package["version"] == "0.2.0"
    assert 'const Version = "0.2.0"' in (repo_copy / "sdk/go/version.go").read_text()
    committed = (REPO / contract.SDK_VERSION).read_text().strip()
    assert 'const Version = "' + committed + '"' in (REPO / "sdk/go/version.go").read_text()
