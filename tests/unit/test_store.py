"""The stores persist keys safely, refuse bad keys by name, and keep them whole. Tests that
take `store_factory` run against every store: a directory, and PostgreSQL."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.directory import MANIFEST, DirectoryStore
from agentrouter_auth.keys.material import SIGNING_ALGORITHMS, InvalidKeyError, generate_key
from agentrouter_auth.keys.store import Entry, KeyStoreError, Origin, State
from tests.conftest import Seeder
from tests.keystores import StoreFactory


@pytest.mark.parametrize("alg", sorted(SIGNING_ALGORITHMS))
def test_generated_keys_carry_kid_alg_and_use(alg: str) -> None:
    key = generate_key(alg)
    assert key.has_private
    assert key["kid"] == key.thumbprint()
    assert key["alg"] == alg
    assert key["use"] == "sig"


@pytest.mark.parametrize("bits", [3072, 4096])
def test_larger_rsa_keys(bits: int) -> None:
    key = generate_key("RS256", rsa_bits=bits)
    n = key.get_op_key("verify")
    assert n.key_size == bits


def test_unknown_algorithm_and_size_are_refused() -> None:
    with pytest.raises(InvalidKeyError, match="unsupported algorithm 'HS256'"):
        generate_key("HS256")
    with pytest.raises(InvalidKeyError, match="not 1024"):
        generate_key("RS256", rsa_bits=1024)


def test_keys_survive_a_round_trip_with_private_modes(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Seeder
) -> None:
    store = seed_store(tmp_path / "keys", key_pool)
    for key in key_pool:
        assert stat.S_IMODE(store.key_file(key["kid"]).stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o700
    assert stat.S_IMODE((store.path / MANIFEST).stat().st_mode) == 0o600
    names = sorted(p.name for p in store.path.iterdir())
    expected = sorted([f"{k.thumbprint()}.jwk.json" for k in key_pool] + [MANIFEST, ".lock"])
    assert names == expected  # and no temporary file left behind
    loaded = DirectoryStore(store.path).read()
    assert {k.kid: k.key for k in loaded.keys} == {k.thumbprint(): k for k in key_pool}
    states = sorted(k.entry.state.value for k in loaded.keys)
    assert states == ["active"] * 3 + ["pending"] * 3
    assert all(k.key.has_private for k in loaded.keys)


def test_keys_survive_a_round_trip_in_every_store(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    store_factory.seed(key_pool)
    loaded = store_factory().read()  # another store object: another process would
    assert {k.kid: k.key for k in loaded.keys} == {k.thumbprint(): k for k in key_pool}
    states = sorted(k.entry.state.value for k in loaded.keys)
    assert states == ["active"] * 3 + ["pending"] * 3
    assert all(k.key.has_private for k in loaded.keys)
    assert {k.entry for k in loaded.keys} == {k.entry for k in store_factory().read().keys}


def test_missing_directory_holds_no_keys(tmp_path: Path) -> None:
    assert DirectoryStore(tmp_path / "absent").read().keys == ()


def test_a_key_file_the_manifest_does_not_list_is_reported_and_ignored(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Seeder
) -> None:
    store = seed_store(tmp_path, key_pool[2:3])
    intruder = key_pool[4]  # a valid key dropped beside the manifest, as an attacker would
    path = tmp_path / f"{intruder['kid']}.jwk.json"
    _write(path, intruder.export_public())
    key_set = store.read()
    assert [k.kid for k in key_set.keys] == [key_pool[2]["kid"]]
    assert key_set.unlisted == (path.name,)
    (note,) = key_set.notes
    assert f"{path}: not in the manifest: ignored" in note
    _write(path, "not even JSON")  # an unlisted file is not read at all
    assert store.read().unlisted == (path.name,)


def test_an_old_manifests_unlisted_origin_reads_as_an_import(
    tmp_path: Path, key_pool: list[jwk.JWK]
) -> None:
    key = key_pool[4]
    _write(tmp_path / f"{key['kid']}.jwk.json", key.export_public())
    record = {"kid": key["kid"], "alg": "EdDSA", "state": "published", "origin": "unlisted",
              "created": 1}  # fmt: skip
    _write(tmp_path / MANIFEST, json.dumps({"format": 1, "keys": [record]}))
    (stored,) = DirectoryStore(tmp_path).read().keys
    assert (stored.entry.state, stored.entry.origin) == (State.PUBLISHED, Origin.IMPORTED)


def test_key_files_without_a_manifest_are_refused_and_left_alone(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Seeder
) -> None:
    store = seed_store(tmp_path, key_pool[2:4])
    (tmp_path / MANIFEST).unlink()
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(KeyStoreError, match=rf"{MANIFEST}: missing, but the directory holds 2"):
        store.read()
    with pytest.raises(KeyStoreError, match="missing"), store.transaction() as tx:
        tx.delete(key_pool[2]["kid"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made or removed


def test_a_failed_transaction_writes_nothing(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    store = store_factory()
    key = key_pool[2]
    fingerprint = store.fingerprint()
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.add(key, Entry(key["kid"], "ES256", State.ACTIVE, 1, activated=1))
        raise RuntimeError("interrupted")
    assert store.read().keys == ()
    if store_factory.kind == "directory":
        assert not list(Path(store_factory.location).glob("*.json"))
    else:
        assert store.fingerprint() == fingerprint  # no generation bump either


def test_two_active_keys_for_one_algorithm_are_refused(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    store = store_factory()
    with pytest.raises(KeyStoreError, match="two active ES256 keys"), store.transaction() as tx:
        for key in key_pool[2:4]:
            tx.add(key, Entry(key["kid"], "ES256", State.ACTIVE, 1, activated=1))
    assert store.read().keys == ()


def _write(path: Path, content: str | bytes, mode: int = 0o600) -> None:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chmod(path, mode)


def _list(directory: Path, *kids: str, alg: str = "ES256") -> None:
    """A manifest listing `kids` as published keys of `alg`."""
    records = [
        {"kid": kid, "alg": alg, "state": "published", "origin": "imported", "created": 1}
        for kid in kids
    ]
    _write(directory / MANIFEST, json.dumps({"format": 1, "keys": records}))


def _oct() -> str:
    secret = jwk.JWK.generate(kty="oct", size=256, alg="HS256", use="sig")
    secret.update(kid=secret.thumbprint())
    return str(secret.export())


def _signed(params: dict[str, object]) -> str:
    key = jwk.JWK.generate(**params)
    alg = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[str(params["kty"])]
    key.update(alg=alg, use="sig", kid=key.thumbprint())
    return str(key.export())


REFUSED = {
    "symmetric": (_oct, "symmetric (oct) keys are refused"),
    "rsa-1024": (lambda: _signed({"kty": "RSA", "size": 1024}), "RSA key of 1024 bits"),
    "secp256k1": (lambda: _signed({"kty": "EC", "crv": "secp256k1"}), "unsupported curve"),
    "x25519": (lambda: _signed({"kty": "OKP", "crv": "X25519"}), "unsupported curve 'X25519'"),
    "truncated": (lambda: generate_key("ES256").export()[:40], "not a valid JWK"),
    "empty": (lambda: "", "not a valid JWK (empty file)"),
    "not-utf8": (lambda: "\udcff", "not a valid JWK"),
    "private-member-on-wrong-type": (
        lambda: json.dumps({**json.loads(generate_key("ES256").export()), "k": "c2VjcmV0"}),
        "not a valid JWK",
    ),
}


# What a PostgreSQL row says where its content differs from a key file's: text that is no JSON
# object cannot be a public JWK column, so that row's public JWK is empty; a private member of
# another type stays in the public column.
PG_REASONS = {
    "truncated": "unsupported key type None",
    "empty": "unsupported key type None",
    "not-utf8": "unsupported key type None",
    "private-member-on-wrong-type": "the public JWK holds private member(s) d, k",
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_keys_are_named(store_factory: StoreFactory, case: str) -> None:
    make, reason = REFUSED[case]
    if store_factory.kind == "postgresql":
        reason = PG_REASONS.get(case, reason)
    store_factory.plant("suspect", "ES256", make())
    with pytest.raises(KeyStoreError, match=store_factory.where("suspect")) as failure:
        store_factory().read()
    assert reason in str(failure.value)
    assert "\n" not in str(failure.value)


def test_kid_that_is_not_the_thumbprint_is_refused(store_factory: StoreFactory) -> None:
    key = generate_key("EdDSA")
    key.update(kid="chosen-by-hand")
    store_factory.plant("chosen-by-hand", "EdDSA", key.export())
    with pytest.raises(
        KeyStoreError, match=f"{store_factory.where('chosen-by-hand')}: kid 'chosen-by-hand' is not"
    ):
        store_factory().read()


def test_world_readable_private_key_is_refused(tmp_path: Path) -> None:
    key = generate_key("ES256")
    path = tmp_path / f"{key['kid']}.jwk.json"
    _write(path, key.export(), mode=0o644)
    _list(tmp_path, key["kid"])
    with pytest.raises(KeyStoreError, match=r"readable by group or others \(mode 0644\)"):
        DirectoryStore(tmp_path).read()
    _write(path, key.export_public(), mode=0o644)  # a public key may be readable by anyone
    assert len(DirectoryStore(tmp_path).read().keys) == 1


def test_a_file_holding_another_kid_than_its_name_is_refused(tmp_path: Path) -> None:
    key = generate_key("ES256")
    _write(tmp_path / f"{key['kid']}.jwk.json", key.export())
    _write(tmp_path / "copy.jwk.json", key.export())
    _list(tmp_path, key["kid"], "copy")
    with pytest.raises(KeyStoreError, match=rf"copy.jwk.json: holds key {key['kid']}, not copy"):
        DirectoryStore(tmp_path).read()


def test_a_pending_key_without_a_private_half_is_refused(tmp_path: Path) -> None:
    """A pending key is promoted to sign: the directory refuses one without a private half at
    load, as the PostgreSQL store does (one shared check), not when promotion fails later."""
    key = generate_key("ES256")
    _write(tmp_path / f"{key['kid']}.jwk.json", key.export_public())
    record = {"kid": key["kid"], "alg": "ES256", "state": "pending", "created": 1}
    _write(tmp_path / MANIFEST, json.dumps({"format": 1, "keys": [record]}))
    with pytest.raises(KeyStoreError, match="pending key has no private half to sign with"):
        DirectoryStore(tmp_path).read()


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "dangling.jwk.json").symlink_to(tmp_path / "nowhere")
    _list(tmp_path, "dangling")
    with pytest.raises(KeyStoreError, match="dangling.jwk.json: unreadable"):
        DirectoryStore(tmp_path).read()


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ("{", "corrupt manifest"),
        ('{"format": 99, "keys": []}', "not a format 1 manifest"),
        ('{"format": 1, "keys": [{"kid": "x"}]}', "corrupt manifest"),
        ('{"format": 1, "keys": [{"kid": "x", "alg": "ES256", "state": "bogus", "created": 1}]}',
         "corrupt manifest"),
        ('{"format": 1, "keys": [{"kid": "x", "alg": "ES256", "state": "active", "created": 1}]}',
         "lists key x but x.jwk.json is missing"),
    ],
)  # fmt: skip
def test_bad_manifest_is_named(tmp_path: Path, manifest: str, reason: str) -> None:
    _write(tmp_path / MANIFEST, manifest)
    with pytest.raises(KeyStoreError, match=MANIFEST) as failure:
        DirectoryStore(tmp_path).read()
    assert reason in str(failure.value)


def test_fingerprint_changes_with_every_write(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    store = store_factory()
    empty = store.fingerprint()
    key = key_pool[2]
    with store.transaction() as tx:
        tx.add(key, Entry(key["kid"], "ES256", State.ACTIVE, 1, activated=1))
    added = store.fingerprint()
    assert added != empty
    assert store.fingerprint() == added  # stable while nothing changes
    with store.transaction() as tx:
        tx.delete(key["kid"])
    assert store.fingerprint() != added
    assert store.read().keys == ()
