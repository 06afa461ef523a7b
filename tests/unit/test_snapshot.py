"""Rendering publishes exactly the public half of a key set, in a stable form."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.snapshot import KeySetError, PerSnapshot, Snapshot, render

PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
pool_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def subsets(pool: list[jwk.JWK]) -> st.SearchStrategy[list[jwk.JWK]]:
    """Non-empty selections of the pool in any order, private halves included."""
    return st.lists(st.sampled_from(pool), min_size=1, unique_by=lambda k: k.get("kid")).flatmap(
        st.permutations
    )


def walk_keys(value: Any) -> set[str]:
    """Every object key anywhere in a decoded JSON document."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in walk_keys(v)}
    return set()


@pool_settings
@given(data=st.data())
def test_no_private_member_is_ever_rendered(key_pool: list[jwk.JWK], data: st.DataObject) -> None:
    keys = data.draw(subsets(key_pool))
    snapshot = render(keys)
    document = json.loads(snapshot.json)
    assert not walk_keys(document) & PRIVATE
    from_proto = json_format.MessageToDict(auth_pb2.GetJWKSResponse.FromString(snapshot.proto))
    assert from_proto == document
    for key in keys:
        for member in PRIVATE & set(json.loads(key.export(private_key=True))):
            secret = json.loads(key.export(private_key=True))[member]
            assert secret.encode() not in snapshot.json
            assert secret.encode() not in snapshot.proto


@pool_settings
@given(data=st.data())
def test_rendering_is_order_independent_and_sorted(
    key_pool: list[jwk.JWK], data: st.DataObject
) -> None:
    keys = data.draw(subsets(key_pool))
    first, second = render(keys), render(list(reversed(keys)))
    assert first.json == second.json
    assert first.proto == second.proto
    assert first.etag == second.etag
    kids = [key["kid"] for key in json.loads(first.json)["keys"]]
    assert kids == sorted(kids)
    assert set(kids) == {key.thumbprint() for key in keys}


def test_json_is_compact_rfc_7517_with_public_members(key_pool: list[jwk.JWK]) -> None:
    snapshot = render(key_pool)
    assert b" " not in snapshot.json
    assert b"\n" not in snapshot.json
    document = json.loads(snapshot.json)
    assert list(document) == ["keys"]
    by_kid = {key["kid"]: key for key in document["keys"]}
    for key in key_pool:
        assert by_kid[key.thumbprint()] == key.export_public(as_dict=True)
    assert snapshot.kids == tuple(sorted(by_kid))


def test_etag_is_strong_and_changes_with_the_set(key_pool: list[jwk.JWK]) -> None:
    one, two = render(key_pool[:2]), render(key_pool[:3])
    assert one.etag.startswith('"')
    assert one.etag.endswith('"')
    assert not one.etag.startswith("W/")
    assert one.etag != two.etag


def test_symmetric_key_is_refused() -> None:
    secret = jwk.JWK.generate(kty="oct", size=256, kid="shared", alg="HS256", use="sig")
    with pytest.raises(KeySetError, match="key shared: symmetric"):
        render([secret])


def test_key_without_kid_alg_or_use_is_refused(key_pool: list[jwk.JWK]) -> None:
    members = key_pool[2].export_public(as_dict=True)
    del members["alg"], members["use"]
    bare = jwk.JWK(**members)
    with pytest.raises(KeySetError, match="missing required member"):
        render([bare])


def test_duplicate_kid_is_refused(key_pool: list[jwk.JWK]) -> None:
    with pytest.raises(KeySetError, match="duplicate kid"):
        render([key_pool[0], jwk.JWK(**key_pool[0].export_public(as_dict=True))])


def test_empty_set_is_refused() -> None:
    with pytest.raises(KeySetError, match="empty"):
        render([])


def test_the_set_is_rendered_once_as_a_jwk_set(key_pool: list[jwk.JWK]) -> None:
    snapshot = render(key_pool[:2])
    assert snapshot.jwks.media_types == ("application/jwk-set+json",)
    assert gzip.decompress(snapshot.jwks.json_gzip) == snapshot.json
    assert auth_pb2.GetJWKSResponse.FromString(snapshot.proto) == snapshot.message


class Flipping:
    """A snapshot source whose current snapshot the test sets."""

    def __init__(self, current: Snapshot) -> None:
        self.current = current

    def snapshot(self) -> Snapshot:
        return self.current


def test_a_value_per_snapshot_is_built_once_per_version(key_pool: list[jwk.JWK]) -> None:
    first, second = render(key_pool[:1], version=1), render(key_pool[:2], version=2)
    source = Flipping(first)
    built: list[int] = []

    def build(snapshot: Snapshot) -> int:
        built.append(snapshot.version)
        return snapshot.version * 10

    derived = PerSnapshot(source, build)
    assert [derived.current() for _ in range(3)] == [10, 10, 10]
    source.current = second
    assert [derived.current() for _ in range(2)] == [20, 20]
    assert built == [1, 2]
