"""gen/ is exactly what the pinned generators make from proto/, and drift is detected."""

from __future__ import annotations

from pathlib import Path

import contract


def test_committed_code_matches_a_fresh_generation() -> None:
    assert contract.generated_drift() == []


def test_generation_writes_every_kind_of_code(tmp_path: Path) -> None:
    written = {p.relative_to(tmp_path).as_posix() for p in contract.generate(tmp_path)}
    assert written == {
        f"agentrouter/auth/v1/auth{suffix}"
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", "_connect.py")
    }
    connect = (tmp_path / "agentrouter/auth/v1/auth_connect.py").read_text()
    assert 'parameter "protobuf=google"' in connect
    assert "class AuthServiceASGIApplication" in connect


def test_a_contract_change_without_regeneration_is_drift(repo_copy: Path) -> None:
    proto = repo_copy / "proto/agentrouter/auth/v1/auth.proto"
    proto.write_text(
        proto.read_text().replace("string y = 14;", "string y = 14;\n  string z = 15;")
    )
    drift = contract.generated_drift(repo_copy)
    assert "agentrouter/auth/v1/auth_pb2.py" in drift
    assert "agentrouter/auth/v1/auth_pb2.pyi" in drift


def test_a_hand_edit_or_stale_file_is_drift(repo_copy: Path) -> None:
    generated = repo_copy / "gen/agentrouter/auth/v1"
    with (generated / "auth_connect.py").open("a") as handle:
        handle.write("# edited by hand\n")
    (generated / "old_pb2.py").write_text("# left over from a removed proto\n")
    assert contract.generated_drift(repo_copy) == [
        "agentrouter/auth/v1/old_pb2.py",
        "agentrouter/auth/v1/auth_connect.py",
    ]
