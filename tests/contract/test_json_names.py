"""The contract's JSON form is RFC 7517 JSON: member names, the route and the method options."""

from __future__ import annotations

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, json_format

from agentrouter.auth.v1 import auth_pb2

# Public members of RFC 7517 §4, RFC 7518 §6.2/§6.3 (EC, RSA) and RFC 8037 §2 (OKP).
RFC_PUBLIC_MEMBERS = {
    "kty", "use", "key_ops", "alg", "kid", "x5u", "x5c", "x5t", "x5t#S256",
    "n", "e", "crv", "x", "y",
}  # fmt: skip
RFC_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def test_every_jwk_field_json_name_is_an_rfc_public_member() -> None:
    fields = auth_pb2.JWK.DESCRIPTOR.fields
    assert {f.json_name for f in fields} == RFC_PUBLIC_MEMBERS
    assert not {f.name for f in fields} & RFC_PRIVATE_MEMBERS


def test_message_to_dict_uses_rfc_names_and_parses_them_back() -> None:
    key = auth_pb2.JWK(kty="EC", key_ops=["verify"], x5t_s256="q2Vi", x5c=["MIIB"])
    as_dict = json_format.MessageToDict(key)
    assert as_dict == {"kty": "EC", "key_ops": ["verify"], "x5t#S256": "q2Vi", "x5c": ["MIIB"]}
    assert json_format.ParseDict(as_dict, auth_pb2.JWK()) == key


def test_response_json_is_a_jwk_set() -> None:
    response = auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kty="OKP", crv="Ed25519", x="AAAA")])
    assert json_format.MessageToDict(response) == {
        "keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]
    }


def test_get_jwks_is_annotated_for_rest_and_connect_get() -> None:
    method = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].methods_by_name["GetJWKS"]
    options = method.GetOptions()
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    assert rule.WhichOneof("pattern") == "get"
    assert rule.get == "/.well-known/jwks.json"
    assert options.idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS
    assert method.input_type.full_name == "agentrouter.auth.v1.GetJWKSRequest"
    assert method.output_type.full_name == "agentrouter.auth.v1.GetJWKSResponse"
    assert not method.input_type.fields
