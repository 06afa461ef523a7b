"""The TypeScript SDK (sdk/typescript): a strict type check, and its Node.js tests run against
the real server and the error-forcing peer (peer.py), whose addresses they take from the
environment."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

import tarballs as sdk_tarballs
from tests.conftest import REPO
from tests.integration.serverproc import AGENTROUTER_AUTH, ServerProcess, sign_token

from .peer import Peer, run_measured
from .readme import snippets

pytestmark = pytest.mark.integration
TS_DIR = REPO / "sdk" / "typescript"
TS_BIN = TS_DIR / "node_modules" / ".bin"
EXAMPLE = REPO / "sdk" / "examples" / "typescript"
NODE_TESTS = sorted(p.relative_to(TS_DIR).as_posix() for p in (TS_DIR / "test").glob("*.test.ts"))
TEST_ENV = (
    "AGENTROUTER_TEST_SERVER_URL",
    "AGENTROUTER_TEST_PEER_URL",
    "AGENTROUTER_TEST_KIDS",
    "AGENTROUTER_TEST_AUTH_CLI",
)
# --expose-gc: test/limits.test.ts collects garbage while a body drips (see there).
NODE_TEST = ["node", "--expose-gc", "--import", "tsx", "--test"]
# The tests that read oversized answers: the client's calls, and the key cache's fetches.
BOUNDED_TESTS = {"test/limits.test.ts": 7, "test/cache-peer.test.ts": 13}
# A client that bounds what it reads holds a few MiB of answer; one that does not, hundreds
# (Node.js with tsx alone holds about 130 MiB).
MEMORY_BOUND_MIB = 200


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
    for scope in ("@bufbuild", "@connectrpc", "@types", "jose"):
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


def peer_env(peer: Peer) -> dict[str, str]:
    """What the Node tests read to find the peer's listeners; Node.js trusts its CA."""
    return {
        "AGENTROUTER_TEST_PEER_URL": peer.url,
        "AGENTROUTER_TEST_PEER_TLS_URL": peer.tls_url,
        "NODE_EXTRA_CA_CERTS": str(peer.ca_file),
    }


@pytest.mark.timeout(330)
def test_the_node_tests_pass_against_the_server_and_the_peer(
    server: ServerProcess, peer: Peer
) -> None:
    """Every node test file against the real server and the peer: ~40 s. Each test has 60 s
    (--test-timeout), so a test that hangs fails with its name in the output instead of the
    whole run being cut off without one (it was, once in a CI run, at 120 s)."""
    kids = served_kids(server)
    env = {
        **os.environ,
        **peer_env(peer),
        "AGENTROUTER_TEST_SERVER_URL": server.base_url,
        "AGENTROUTER_TEST_KIDS": ",".join(kids),
        # The key cache's and the verifier's tests start servers of their own (their keys,
        # their policy, stopped mid-test) and sign tokens with `agentrouter-auth token sign`.
        "AGENTROUTER_TEST_AUTH_CLI": json.dumps(AGENTROUTER_AUTH),
    }
    output = node([*NODE_TEST, "--test-timeout=60000", *NODE_TESTS], TS_DIR, env)
    counts = summary(output)
    assert counts["tests"] == counts["pass"] >= 97, output
    assert counts["skipped"] == counts["todo"] == 0, output
    assert peer.requests, "the tests never called the peer"


def test_oversized_answers_fail_in_bounded_memory_and_a_dripping_body_in_time(
    peer: Peer,
) -> None:
    """test/limits.test.ts and test/cache-peer.test.ts on their own: 100 MiB answers (with and
    without a Content-Length, and as an error) and 300-MiB gzip bombs (an answer, an error) each
    reject ResourceExhausted (the client's calls) or KeysUnavailableError (the key cache's
    fetches) in a process that never holds much of them; a body that drips rejects at the
    deadline (each test there has its own timeout, and this run is killed after 120 s, so a
    client that hangs fails)."""
    measured = run_measured(
        [*NODE_TEST, *BOUNDED_TESTS], cwd=TS_DIR, env={**os.environ, **peer_env(peer)},
        timeout=120,
    )  # fmt: skip
    assert not measured.timed_out, measured.output
    counts = summary(measured.output)
    assert counts["tests"] == counts["pass"] == sum(BOUNDED_TESTS.values()), measured.output
    assert measured.peak_rss_mib < MEMORY_BOUND_MIB, (
        f"peak RSS {measured.peak_rss_mib:.0f} MiB reading oversized answers"
    )


def test_the_node_tests_fail_without_the_servers() -> None:
    env = {name: value for name, value in os.environ.items() if name not in TEST_ENV}
    result = subprocess.run(
        [*NODE_TEST, "test/server.test.ts", "test/peer.test.ts", "test/realserver.test.ts"],
        cwd=TS_DIR, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pytest tests/interop/test_sdk_typescript.py" in result.stdout
    counts = summary(result.stdout)
    assert counts["tests"] == counts["fail"] > 0, result.stdout


def test_typescript_readme_verifies_a_token_from_token_sign(
    server: ServerProcess, keys_dir: Path, tmp_path: Path
) -> None:
    """The verifying snippet of README, Client SDKs, TypeScript, run as the examples are (the SDK
    from its tarball under third_party/, installed from the example's committed lock, `npx tsx`),
    on a token from `token sign`; and the same snippet refusing that token once tampered with."""
    tarball = sdk_tarballs.build("typescript", tmp_path / "dist")
    folder = tmp_path / "verify"
    shutil.copytree(EXAMPLE, folder)
    with tarfile.open(tarball) as archive:
        archive.extractall(folder / "third_party", filter="data")
    (folder / "verify.ts").write_text(snippets()["ts-sdk-verify"])
    claims = {"sub": "svc-42", "aud": "api"}
    token = sign_token(keys_dir, "ES256", claims, "--issuer", "https://auth.example.com")
    # npx asks before it fetches tsx; a terminal user answers yes, here the variable does.
    env = {**os.environ, "AGENTROUTER_BASE_URL": server.base_url, "npm_config_yes": "true"}
    node(["npm", "ci", "--no-audit", "--no-fund"], folder, env)
    node([str(TS_BIN / "tsc"), "-p", "tsconfig.json", "--noEmit"], folder)
    verified = subprocess.run(
        ["npx", "tsx", "verify.ts"], cwd=folder, env={**env, "TOKEN": token},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (verified.returncode, verified.stdout) == (0, "svc-42\n"), verified.stderr
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    refused = subprocess.run(
        ["npx", "tsx", "verify.ts"], cwd=folder, env={**env, "TOKEN": tampered},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr == "401: invalid token: the signature does not verify\n"
