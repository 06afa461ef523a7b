"""The Connect adapter's own checks: base64 exactly as the protocol allows it, and a JSON
message that must be an object."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.connect import SnapshotJSONCodec, _first_values, is_base64
from agentrouter_auth.snapshot import Snapshot


def decodes_strictly(text: str) -> bool:
    """The reference: padding completed, every character in one of the two alphabets."""
    data = text.rstrip("=")
    padding = len(text) - len(data)
    if len(data) % 4 == 1 or (padding and (len(text) % 4 or padding > 2)):
        return False
    for altchars, foreign in ((b"-_", "+/"), (b"+/", "-_")):
        if any(char in data for char in foreign):
            continue
        try:
            base64.b64decode(data + "=" * (-len(data) % 4), altchars=altchars, validate=True)
        except binascii.Error:
            continue
        return True
    return False


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="AQe30-_+/=!. %", max_size=14))
def test_base64_is_checked_as_strictly_as_it_decodes(text: str) -> None:
    assert is_base64(text) == decodes_strictly(text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.booleans(), st.booleans())
def test_every_encoding_a_client_may_send_is_base64(data: bytes, url: bool, pad: bool) -> None:
    encoded = (base64.urlsafe_b64encode if url else base64.standard_b64encode)(data).decode()
    assert is_base64(encoded if pad else encoded.rstrip("="))


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(
        st.sampled_from(["base64", "message", "%62ase64", "mess%61ge", "=", "&", "1", "+",
                         "%3D", "%26", "%2B", "x", "%ff"]),
        max_size=16,
    ).map("".join)
)  # fmt: skip
def test_query_parameters_are_read_as_connectrpc_reads_them(query: str) -> None:
    parsed = parse_qs(query, keep_blank_values=True)
    expected = {name: parsed[name][0] for name in ("base64", "message") if name in parsed}
    assert _first_values(query, ("base64", "message")) == expected


class _Source:
    def snapshot(self) -> Snapshot:
        raise AssertionError("decoding needs no snapshot")


@pytest.mark.parametrize("text", [b"[]", b'"x"', b" [] ", b"1", b"null", b"\xef\xbb\xbf{}"])
def test_a_json_message_must_be_an_object(text: bytes) -> None:
    codec = SnapshotJSONCodec(_Source())
    with pytest.raises(ValueError):  # noqa: PT011 - connectrpc turns any error into a 400
        codec.decode(text, auth_pb2.GetJWKSRequest)
    assert codec.decode(b' \n{"ignored": [1]} ', auth_pb2.GetJWKSRequest) == (
        auth_pb2.GetJWKSRequest()
    )
