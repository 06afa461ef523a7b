"""Tokens from `agentrouter-auth token sign` verify with the JWKS clients fleets use."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import jwt
import pytest

from tests.integration.serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv, sign_token

from .conftest import ALGS, NODE_DIR, run

pytestmark = pytest.mark.integration
FAST_POLICY = [
    "--rotation-period", "6s", "--publish-ahead", "2s", "--retain-after", "10m",
    "--max-token-ttl", "5m", "--clock-skew", "0s", "--cache-max-age", "1s",
    "--stale-while-revalidate", "0s",
]  # fmt: skip


def sign(keys_dir: Path, alg: str, subject: str, *policy: str) -> str:
    return sign_token(keys_dir, alg, {"sub": subject, "aud": "fleet"}, "--ttl", "5m", *policy)


def verify_pyjwt(jwks_url: str, token: str) -> dict[str, object]:
    client = jwt.PyJWKClient(jwks_url, cache_keys=False)
    key = client.get_signing_key_from_jwt(token)
    header = jwt.get_unverified_header(token)
    claims: dict[str, object] = jwt.decode(
        token, key=key.key, algorithms=[header["alg"]], audience="fleet"
    )
    return claims


def verify_jose(jwks_url: str, *tokens: str) -> list[dict[str, str]]:
    result = run(["node", "verify.mjs", jwks_url, *tokens], cwd=NODE_DIR)
    verified: list[dict[str, str]] = json.loads(result.stdout)
    return verified


def test_every_key_type_verifies(server: ServerProcess, keys_dir: Path) -> None:
    jwks_url = f"{server.base_url}/.well-known/jwks.json"
    tokens = {alg: sign(keys_dir, alg, f"svc-{alg}") for alg in ALGS}
    for alg, token in tokens.items():
        assert verify_pyjwt(jwks_url, token)["sub"] == f"svc-{alg}"
    verified = verify_jose(jwks_url, *tokens.values())
    assert [(v["alg"], v["sub"]) for v in verified] == [(alg, f"svc-{alg}") for alg in ALGS]
    published = {k["kid"] for k in json.loads(run(["curl", "-sf", jwks_url]).stdout)["keys"]}
    assert {v["kid"] for v in verified} <= published


def test_a_token_of_an_unpublished_key_is_rejected(server: ServerProcess, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(other)])
    token = sign(other, "ES256", "intruder")
    jwks_url = f"{server.base_url}/.well-known/jwks.json"
    with pytest.raises(jwt.PyJWKClientError):
        verify_pyjwt(jwks_url, token)
    failed = subprocess.run(
        ["node", "verify.mjs", jwks_url, token], cwd=NODE_DIR, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "ERR_JWKS_NO_MATCHING_KEY" in failed.stderr


def test_after_a_rotation_the_new_key_verifies_with_fresh_clients(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir), *FAST_POLICY])
    first = json.loads(run([*AGENTROUTER_AUTH, "keys", "list", "--json", "--keys-dir",
                            str(keys_dir)]).stdout)["keys"][0]["kid"]  # fmt: skip
    argv = serve_argv(keys_dir, "--reload-interval", "200ms", *FAST_POLICY)
    with ServerProcess(argv) as server:
        deadline = time.monotonic() + 20
        while True:
            listing = run(
                [*AGENTROUTER_AUTH, "keys", "list", "--json", "--keys-dir", str(keys_dir)]
            )
            active = [
                k["kid"] for k in json.loads(listing.stdout)["keys"] if k["state"] == "active"
            ]
            if active and active[0] != first:
                break
            assert time.monotonic() < deadline, "the server never rotated"
            time.sleep(0.2)
        jwks_url = f"{server.base_url}/.well-known/jwks.json"
        while active[0] not in {k["kid"] for k in httpx.get(jwks_url, timeout=10).json()["keys"]}:
            assert time.monotonic() < deadline, "the server never published the new active key"
            time.sleep(0.1)
        token = sign(keys_dir, "ES256", "after-rotation", *FAST_POLICY)
        assert jwt.get_unverified_header(token)["kid"] == active[0]
        assert verify_pyjwt(jwks_url, token)["sub"] == "after-rotation"
        assert verify_jose(jwks_url, token)[0]["kid"] == active[0]
        server.terminate()
