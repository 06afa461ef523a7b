"""The three SDKs' verifiers through a 2-second key rotation, for a minute (issue: "a 2-second
rotation policy run for 60 s while tokens from `token sign` keep verifying with 0 failures").

One real server rotates its signing key every 2 s; `token sign` makes token after token with
the key the store says signs now, and each token goes at once to a Python TokenVerifier, to
rotation/verify.go (the Go SDK's Verifier) and to rotation/verify.mts (the TypeScript SDK's),
each over a KeySetCache of its client's GetJWKS with the default settings. Run side by side,
the three share the minute the issue asks for. AGENTROUTER_TEST_ROTATION_RUN_SECONDS shortens
or lengthens it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from base64 import urlsafe_b64decode as b64decode
from pathlib import Path

import pytest

from agentrouter_sdk import (
    Client,
    InvalidTokenError,
    KeySetCache,
    KeysUnavailableError,
    TokenVerifier,
)
from tests.conftest import REPO
from tests.integration.serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv, sign_token
from tests.support.programs import build_go_program

pytestmark = pytest.mark.integration
RUN_SECONDS = float(os.environ.get("AGENTROUTER_TEST_ROTATION_RUN_SECONDS", "60"))
HERE = Path(__file__).resolve().parent / "rotation"
TS_DIR = REPO / "sdk" / "typescript"
ISSUER, AUDIENCE = "https://auth.example.com", "api"
# A key signs for 2 s and is published 1 s before; a set is fresh for 500 ms (max-age + swr
# must stay within half the publish-ahead) and the server reloads the store every 200 ms.
POLICY = ("--rotation-period", "2s", "--publish-ahead", "1s", "--max-token-ttl", "1m",
          "--clock-skew", "1s", "--retain-after", "2m", "--cache-max-age", "500ms",
          "--stale-while-revalidate", "0s")  # fmt: skip


def sign(keys: Path, n: int) -> str:
    claims = {"sub": f"svc-{n}", "aud": AUDIENCE}
    return sign_token(keys, "ES256", claims, "--issuer", ISSUER, *POLICY)


class Program:
    """A verifier program: a token per line in, a JSON outcome per line out."""

    def __init__(self, argv: list[str], cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def verify(self, token: str) -> str:
        """The token's subject, or the program's error."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(token + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the program exited ({self.proc.poll()})"
        outcome = json.loads(line)
        return str(outcome.get("sub") or f"error: {outcome.get('error')}")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            assert self.proc.wait(30) == 0
        finally:
            self.proc.kill()


@pytest.fixture
def go_binary(tmp_path: Path) -> Path:
    """rotation/verify.go built against sdk/go (the TypeScript program needs no build)."""
    return build_go_program(HERE / "verify.go", tmp_path / "go")


def python_verify(verifier: TokenVerifier, token: str) -> str:
    try:
        return str(verifier.verify(token)["sub"])
    except (InvalidTokenError, KeysUnavailableError) as err:
        return f"error: {err}"


@pytest.mark.timeout(300 + 2 * RUN_SECONDS)
def test_every_sdk_keeps_verifying_through_a_two_second_rotation(
    tmp_path: Path, go_binary: Path
) -> None:
    keys = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys), "--alg",
                    "ES256", *POLICY], check=True, capture_output=True)  # fmt: skip
    argv = serve_argv(keys, "--rotation", "auto", "--reload-interval", "200ms", *POLICY)
    with ServerProcess(argv) as server:
        base = server.base_url
        python = TokenVerifier(KeySetCache(Client(base)), issuer=ISSUER, audience=AUDIENCE)
        go = Program([str(go_binary), base, ISSUER, AUDIENCE])
        script = str(HERE / "verify.mts")
        typescript = Program(["node", "--import", "tsx", script, base, ISSUER, AUDIENCE], TS_DIR)
        verifiers = {
            "python": lambda token: python_verify(python, token),
            "go": go.verify,
            "typescript": typescript.verify,
        }
        failures: list[tuple[str, int, str]] = []
        kids: set[str] = set()
        n = 0
        deadline = time.monotonic() + RUN_SECONDS
        try:
            while time.monotonic() < deadline:
                n += 1
                token = sign(keys, n)
                kids.add(json.loads(b64decode(token.split(".")[0] + "=="))["kid"])
                for language, verify in verifiers.items():
                    got = verify(token)
                    if got != f"svc-{n}":
                        failures.append((language, n, got))
        finally:
            go.close()
            typescript.close()
        assert server.terminate() == 0
    assert failures == [], f"{len(failures)} of {3 * n} verifications failed"
    assert n >= RUN_SECONDS / 6, f"only {n} tokens in {RUN_SECONDS:g} s"
    assert len(kids) >= RUN_SECONDS / 8, f"{len(kids)} signing keys in {RUN_SECONDS:g} s"
    print(f"{n} tokens signed by {len(kids)} keys, each verified by 3 SDKs: 0 failures")
