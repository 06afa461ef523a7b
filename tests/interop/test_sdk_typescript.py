"""The TypeScript SDK (sdk/typescript): a strict type check, and its Node.js tests run against
the real server and the error-forcing peer (peer.py), whose addresses they take from the
environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.integration.serverproc import ServerProcess

from .peer import Peer

pytestmark = pytest.mark.integration
TS_DIR = REPO / "sdk" / "typescript"
TS_BIN = TS_DIR / "node_modules" / ".bin"
EXAMPLE = REPO / "sdk" / "examples" / "typescript"
NODE_TESTS = sorted(p.relative_to(TS_DIR).as_posix() for p in (TS_DIR / "test").glob("*.test.ts"))
TEST_ENV = ("AGENTROUTER_TEST_SERVER_URL", "AGENTROUTER_TEST_PEER_URL", "AGENTROUTER_TEST_KIDS")


def served_kids(server: ServerProcess) -> list[str]:
    document = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    return [key["kid"] for key in document["keys"]]


def node(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a Node.js tool; fail the test with everything it printed when it fails."""
    result = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(argv[:3])} exited {result.returncode}:\n{output}"
    return output


def install_built_sdk(project: Path) -> Path:
    """The SDK as its tarball ships it (package.json without development fields, dist/ built by
    its tsconfig.json), installed in `project`'s node_modules beside links to its dependencies;
    returns the package's folder."""
    package = project / "node_modules" / "@tetrate" / "agentrouter-sdk"
    node([str(TS_BIN / "tsc"), "-p", "tsconfig.json", "--outDir", str(package / "dist")], TS_DIR)
    manifest = json.loads((TS_DIR / "package.json").read_text())
    for development_only in ("devDependencies", "scripts"):
        manifest.pop(development_only, None)
    (package / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for scope in ("@bufbuild", "@connectrpc", "@types"):
        (project / "node_modules" / scope).symlink_to(TS_DIR / "node_modules" / scope)
    return package


def summary(tap: str) -> dict[str, int]:
    """The counts node's test runner ends its TAP report with (`# tests 3`, `# pass 3`, ...)."""
    found = re.findall(r"^# (tests|pass|fail|cancelled|skipped|todo) (\d+)$", tap, re.MULTILINE)
    return {name: int(count) for name, count in found}


def test_the_sdk_and_its_tests_type_check_strictly() -> None:
    for config in ("tsconfig.json", "tsconfig.test.json"):
        node([str(TS_BIN / "tsc"), "-p", config, "--noEmit"], TS_DIR)


def test_the_documentation_example_type_checks_against_the_built_package(tmp_path: Path) -> None:
    project = tmp_path / "example"
    shutil.copytree(EXAMPLE, project)
    package = install_built_sdk(project)
    assert (package / "dist" / "index.d.ts").is_file()
    assert (package / "dist" / "gen" / "tars" / "auth" / "v1" / "auth_pb.js").is_file()
    assert not list(package.rglob("*.test.*"))
    node([str(TS_BIN / "tsc"), "-p", "tsconfig.json", "--noEmit"], project)


def test_the_node_tests_pass_against_the_server_and_the_peer(
    server: ServerProcess, peer: Peer
) -> None:
    kids = served_kids(server)
    env = {
        **os.environ,
        "AGENTROUTER_TEST_SERVER_URL": server.base_url,
        "AGENTROUTER_TEST_PEER_URL": peer.url,
        "AGENTROUTER_TEST_KIDS": ",".join(kids),
    }
    output = node(["node", "--import", "tsx", "--test", *NODE_TESTS], TS_DIR, env)
    counts = summary(output)
    assert counts["tests"] == counts["pass"] >= 15, output
    assert peer.requests, "the tests never called the peer"


def test_the_node_tests_fail_without_the_servers() -> None:
    env = {name: value for name, value in os.environ.items() if name not in TEST_ENV}
    result = subprocess.run(
        ["node", "--import", "tsx", "--test", "test/server.test.ts", "test/peer.test.ts"],
        cwd=TS_DIR, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pytest tests/interop/test_sdk_typescript.py" in result.stdout
    counts = summary(result.stdout)
    assert counts["tests"] == counts["fail"] > 0, result.stdout
