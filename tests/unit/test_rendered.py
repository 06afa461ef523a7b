"""rendered: an answer rendered once, with its encodings and validators."""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import replace

from google.protobuf import json_format

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.rendered import Freshness, render_message, strong_etag


def message() -> auth_pb2.GetJWKSResponse:
    return auth_pb2.GetJWKSResponse(
        keys=[auth_pb2.JWK(kty="OKP", kid="k1", use="sig", alg="EdDSA", crv="Ed25519", x="AA")]
    )


def test_every_encoding_is_of_the_same_message() -> None:
    rendered = render_message(message())
    assert auth_pb2.GetJWKSResponse.FromString(rendered.proto) == rendered.message
    parsed = json_format.Parse(rendered.json, auth_pb2.GetJWKSResponse())
    assert parsed == rendered.message
    assert b" " not in rendered.json  # compact
    assert gzip.decompress(rendered.json_gzip) == rendered.json
    assert rendered.etag == strong_etag(rendered.json)


def test_the_etag_is_strong_and_stable() -> None:
    etag = strong_etag(b'{"keys":[]}')
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert not etag.startswith("W/")
    assert etag == strong_etag(b'{"keys":[]}')
    assert etag != strong_etag(b'{"keys":[1]}')


def test_the_gzip_body_has_its_own_strong_etag() -> None:
    """RFC 9110 §8.8.3: a strong validator differs per content coding; each tag is the
    SHA-256 of the bytes it validates (base64url, unpadded)."""
    rendered = render_message(message())

    def sha256_tag(body: bytes) -> str:
        return (
            '"' + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode().rstrip("=") + '"'
        )

    assert rendered.etag == sha256_tag(rendered.json)
    assert rendered.etag_gzip == sha256_tag(rendered.json_gzip)
    assert rendered.etag_gzip != rendered.etag


def test_the_same_message_renders_the_same_bytes() -> None:
    one, two = render_message(message()), render_message(message())
    assert (one.proto, one.json, one.json_gzip, one.etag, one.etag_gzip) == (
        two.proto, two.json, two.json_gzip, two.etag, two.etag_gzip)  # fmt: skip


def test_what_a_transport_derives_is_not_carried_to_a_copy() -> None:
    rendered = render_message(message(), media_types=("application/jwk-set+json",))
    rendered.derived["headers"] = ["built once"]
    fresher = replace(rendered, freshness=Freshness(60))
    assert fresher.derived == {}
    assert (fresher.json, fresher.media_types) == (rendered.json, rendered.media_types)
    assert fresher.freshness == Freshness(60, 0, 0)
