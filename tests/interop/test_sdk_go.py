"""The Go SDK's own tests (sdk/go, `go test`) against the real server and the error-forcing
peer, and its gofmt and go vet."""

from __future__ import annotations

import json
import os
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

GO_SDK = REPO / "sdk" / "go"
# A client that bounds what it reads holds a few MiB of answer; one that does not, hundreds.
MEMORY_BOUND_MIB = 200
# The Go tests that read oversized answers: the client's calls and the key cache's fetches.
BOUNDED_TESTS = "^(TestPeerResponseLimit|TestPeerCacheHostileAnswersAreKeysUnavailable)$"


def go() -> str:
    """The go command; its absence fails (Go is a requirement of `make test`)."""
    path = shutil.which("go")
    assert path, "go is not on PATH: the Go SDK's tests need Go 1.26"
    return path


def run_go(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `go ARGS` in sdk/go; its output is in the assertion message when it fails."""
    return run_go_in(GO_SDK, *args, env=env)


def run_go_in(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `go ARGS` in folder; its output is in the assertion message when it fails."""
    result = subprocess.run(
        [go(), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr).splitlines()
        noise = ("=== ", "--- PASS")  # go test -v's progress: the failures are the rest
        shown = "\n".join(line for line in output if not line.lstrip().startswith(noise))
        raise AssertionError(f"go {' '.join(args)} exited {result.returncode}:\n{shown}")
    return result


def peer_env(peer: Peer) -> dict[str, str]:
    """What the Go tests read to find the peer's three listeners and its CA."""
    return {
        "AGENTROUTER_TEST_PEER_URL": peer.url,
        "AGENTROUTER_TEST_PEER_TLS_URL": peer.tls_url,
        "AGENTROUTER_TEST_PEER_CA": str(peer.ca_file),
    }


def test_go_sdk_tests_pass_against_the_server_and_the_peer(
    server: ServerProcess, peer: Peer
) -> None:
    jwks = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    kids = [key["kid"] for key in jwks["keys"]]
    assert kids
    env = {
        **os.environ,
        **peer_env(peer),
        "AGENTROUTER_TEST_SERVER_URL": server.base_url,
        "AGENTROUTER_TEST_KIDS": ",".join(kids),
        # The key cache's and the verifier's tests start servers of their own (their keys,
        # their policy, stopped mid-test) and sign tokens with `agentrouter-auth token sign`.
        "AGENTROUTER_TEST_AUTH_CLI": json.dumps(AGENTROUTER_AUTH),
    }
    result = run_go("test", "-count=1", "-v", "./...", env=env)
    # Every test ran: none skipped, and the ones that need the server and the peer were there.
    assert "--- SKIP" not in result.stdout
    for name in (
        "TestServerGetJWKSReturnsTheServedKids",
        "TestPeerAPIKeyIsABearerToken",
        "TestPeerAPIKeyNeverGoesToAnotherOrigin",
        "TestPeerResponseLimit",
        "TestPeerDeadlineCoversADrippingBody",
        "TestServerKeyActivatedSecondsAgoVerifiesAfterOneRefresh",
        "TestServerRemovedKeyStopsVerifyingOnceTheCachedAnswerAgesOut",
        "TestServerStoppedCachedSetWithinStaleIfErrorThenKeysUnavailable",
        "TestServerWarmCacheFloodOfRandomKidsAnd304s",
        "TestServerVerifierFromIssuer",
        "TestServerRotationKeepsTokensVerifying",
        "TestPeerCacheHostileAnswersAreKeysUnavailable",
        "TestPeerCacheSlowDripEndsAtTheDeadline",
        "TestPeerCacheAPIKeyNeverFollowsARedirectToAnotherOrigin",
        "TestVerifierRefusals",
    ):
        assert f"--- PASS: {name}" in result.stdout
    assert peer.requests, "the Go tests sent nothing to the peer"


def test_go_sdk_reads_an_oversized_answer_in_bounded_memory(peer: Peer, tmp_path: Path) -> None:
    """100 MiB answers (with and without a Content-Length, and as an error) and 300-MiB gzip
    bombs (an answer, an error) each fail resource_exhausted (TestPeerResponseLimit), and the
    key cache's fetches of them fail keys unavailable (TestPeerCacheHostileAnswers…), in a
    process that never holds much of them."""
    binary = tmp_path / "sdk.test"
    run_go("test", "-c", "-o", str(binary), ".")
    measured = run_measured(
        [str(binary), "-test.run", BOUNDED_TESTS, "-test.count=1", "-test.v"],
        cwd=GO_SDK, env={**os.environ, **peer_env(peer)}, timeout=120,
    )  # fmt: skip
    assert not measured.timed_out, f"still running after 120 s:\n{measured.output}"
    assert measured.returncode == 0, measured.output
    assert "--- PASS: TestPeerResponseLimit" in measured.output
    assert "--- PASS: TestPeerCacheHostileAnswersAreKeysUnavailable" in measured.output
    assert measured.peak_rss_mib < MEMORY_BOUND_MIB, (
        f"peak RSS {measured.peak_rss_mib:.0f} MiB reading oversized answers"
    )


def test_go_sdk_tests_fail_without_the_server() -> None:
    env = {name: value for name, value in os.environ.items() if "AGENTROUTER_TEST_" not in name}
    result = subprocess.run(
        [go(), "test", "-count=1", "-run", "TestServerGetJWKSReturnsTheServedKids", "."],
        cwd=GO_SDK, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "pytest tests/interop/test_sdk_go.py" in result.stdout


def test_go_sdk_is_gofmt_clean_and_vetted() -> None:
    unformatted = subprocess.run(
        ["gofmt", "-l", str(GO_SDK)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert unformatted == "", f"gofmt would change: {unformatted}"
    run_go("vet", "./...")


def test_go_readme_verifies_a_token_from_token_sign(
    server: ServerProcess, keys_dir: Path, tmp_path: Path
) -> None:
    """The verifying snippet of README, Client SDKs, Go, run as the examples are (the SDK from its
    tarball under third_party/, `go mod tidy && go run .`), on a token from `token sign`; and
    the same snippet refusing that token once it is tampered with."""
    tarball = sdk_tarballs.build("go", tmp_path / "dist")
    folder = tmp_path / "verify"
    folder.mkdir()
    with tarfile.open(tarball) as archive:
        archive.extractall(folder / "third_party", filter="data")
    examples = REPO / "sdk" / "examples" / "go"
    for name in ("go.mod", "go.sum"):
        shutil.copy(examples / name, folder / name)
    (folder / "main.go").write_text(snippets()["go-sdk-verify"] + "\n")
    claims = {"sub": "svc-42", "aud": "api"}
    token = sign_token(keys_dir, "ES256", claims, "--issuer", "https://auth.example.com")
    env = {**os.environ, "AGENTROUTER_BASE_URL": server.base_url, "TOKEN": token}
    run_go_in(folder, "mod", "tidy", env=env)
    assert run_go_in(folder, "run", ".", env=env).stdout == "svc-42\n"
    head, payload, signature = token.split(".")
    tampered = f"{head}.{payload}.{signature[:-4]}AAAA"
    refused = subprocess.run(
        [go(), "run", "."], cwd=folder, env={**env, "TOKEN": tampered},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "401: agentrouter: invalid token: the signature does not verify" in refused.stderr
