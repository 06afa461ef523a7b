"""`token sign` run in-process: a token PyJWT verifies with the published key, and claims that
are not a JSON object refused in one line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jwt as pyjwt
import pytest
from jwcrypto import jwk

from agentrouter_auth import cli
from tests.keystores import StoreFactory


def test_a_signed_token_verifies_with_the_published_key(
    store_factory: StoreFactory,
    capsys: pytest.CaptureFixture[str],
    key_pool: Sequence[jwk.JWK],
) -> None:
    key = next(key for key in key_pool if key["alg"] == "EdDSA")
    store_factory.seed([key])
    argv = ["token", "sign", *store_factory.options(), "--claims", '{"sub": "svc"}',
            "--ttl", "5m"]  # fmt: skip
    assert cli.main(argv) == 0
    token = capsys.readouterr().out.strip()
    public = pyjwt.PyJWK(json.loads(key.export_public()))
    claims = pyjwt.decode(token, public.key, algorithms=["EdDSA"])
    assert claims["sub"] == "svc"
    assert claims["exp"] - claims["iat"] == 300
    assert pyjwt.get_unverified_header(token)["kid"] == key["kid"]


@pytest.mark.parametrize(
    ("claims", "message"),
    [('{"sub":', "--claims: not JSON: "), ("[1]", "--claims: must be a JSON object")],
)
def test_claims_that_are_not_an_object_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], claims: str, message: str
) -> None:
    assert cli.main(["token", "sign", "--key-store", str(tmp_path), "--claims", claims]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"agentrouter-auth: error: {message}")
    assert err.count("\n") == 1
