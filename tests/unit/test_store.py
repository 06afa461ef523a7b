"""The key directory persists private keys safely and reports bad files by name."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.material import ALGORITHMS, generate_key
from agentrouter_auth.keys.store import KeyDirectory, KeyFileError


@pytest.mark.parametrize("alg", sorted(ALGORITHMS))
def test_generated_keys_carry_kid_alg_and_use(alg: str) -> None:
    key = generate_key(alg)
    assert key.has_private
    assert key["kid"] == key.thumbprint()
    assert key["alg"] == alg
    assert key["use"] == "sig"


def test_unknown_algorithm_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported algorithm 'HS256'"):
        generate_key("HS256")


def test_keys_survive_a_round_trip_with_private_modes(
    tmp_path: Path, key_pool: list[jwk.JWK]
) -> None:
    store = KeyDirectory(tmp_path / "keys")
    for key in key_pool:
        path = store.add(key)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    assert sorted(p.name for p in store.path.iterdir()) == sorted(
        f"{key.thumbprint()}.jwk.json" for key in key_pool
    )  # no temporary files left behind
    loaded = {key.thumbprint(): key for key in store.load()}
    assert loaded == {key.thumbprint(): key for key in key_pool}
    assert all(key.has_private for key in loaded.values())


def test_missing_directory_holds_no_keys(tmp_path: Path) -> None:
    assert KeyDirectory(tmp_path / "absent").load() == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not a valid JWK"),
        (b'{"kty":"EC"}', "not a valid JWK"),
        (b"\xff", "unreadable"),
    ],
)
def test_bad_key_file_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "broken.jwk.json"
    bad.write_bytes(content)
    with pytest.raises(KeyFileError, match=f"broken.jwk.json: {reason}"):
        KeyDirectory(tmp_path).load()


def test_unsafe_kid_is_not_used_as_a_file_name(tmp_path: Path) -> None:
    key = generate_key("EdDSA")
    key.update(kid="../escape")
    with pytest.raises(KeyFileError, match="refusing to store"):
        KeyDirectory(tmp_path).add(key)
