"""connect: the Connect and gRPC-Web adapter. Base64 exactly as the protocol allows it, a JSON
message that must be an object, rendered answers written from their stored bytes, errors in
Connect's terms, and where a Connect or gRPC-Web answer carries its code."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth import connect
from agentrouter_auth.connect.app import (
    RenderedJSONCodec,
    RenderedProtoCodec,
    first_values,
    is_base64,
)
from agentrouter_auth.http.representation import connect_error
from agentrouter_auth.rendered import render_message
from agentrouter_auth.status import Code, RpcError

from .conftest import MakeServicer


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


@pytest.mark.slow  # measured: ~3 s
@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="AQe30-_+/=!. %", max_size=14))
def test_base64_is_checked_as_strictly_as_it_decodes(text: str) -> None:
    assert is_base64(text) == decodes_strictly(text)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64), st.booleans(), st.booleans())
def test_every_encoding_a_client_may_send_is_base64(data: bytes, url: bool, pad: bool) -> None:
    encoded = (base64.urlsafe_b64encode if url else base64.standard_b64encode)(data).decode()
    assert is_base64(encoded if pad else encoded.rstrip("="))


@pytest.mark.slow  # measured: ~2 s
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
    assert first_values(query, ("base64", "message")) == expected


@pytest.mark.parametrize("text", [b"[]", b'"x"', b" [] ", b"1", b"null", b"\xef\xbb\xbf{}"])
def test_a_json_message_must_be_an_object(text: bytes) -> None:
    codec = RenderedJSONCodec()
    with pytest.raises(ValueError):  # noqa: PT011 - connectrpc turns any error into a 400
        codec.decode(text, auth_pb2.GetJWKSRequest)
    assert codec.decode(b' \n{"ignored": [1]} ', auth_pb2.GetJWKSRequest) == (
        auth_pb2.GetJWKSRequest()
    )


def test_codecs_write_a_rendered_answers_stored_bytes() -> None:
    response = auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="k", kty="OKP")])
    rendered = render_message(response)
    object.__setattr__(rendered, "json", b"stored json")  # what is written is what is stored
    object.__setattr__(rendered, "proto", b"stored proto")
    assert RenderedJSONCodec().encode(rendered) == b"stored json"
    assert RenderedProtoCodec().encode(rendered) == b"stored proto"
    assert RenderedJSONCodec().encode(response) == b'{"keys":[{"kty":"OKP","kid":"k"}]}'
    assert RenderedProtoCodec().encode(response) == response.SerializeToString()


ANSWER = render_message(auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="k")]))


def post(servicer: Any, path: str = "/agentrouter.auth.v1.AuthService/GetJWKS") -> Any:
    """One Connect JSON call through the app: (status, body, scope afterwards)."""
    scope: dict[str, Any] = {
        "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "http_version": "1.1", "scheme": "http", "server": ("test", 80), "root_path": "",
    }  # fmt: skip
    sent: list[Any] = []
    events = [{"type": "http.request", "body": b"{}", "more_body": False}]

    async def receive() -> Any:
        if events:
            return events.pop(0)
        await asyncio.Event().wait()
        return None

    async def send(message: Any) -> None:
        sent.append(message)

    app = connect.connect_app(servicer, error=connect_error)
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), scope


def test_the_app_calls_the_servicer_and_names_the_route(servicer: MakeServicer) -> None:
    status, body, scope = post(servicer(ANSWER))
    assert (status, body) == (200, b'{"keys":[{"kid":"k"}]}')
    assert scope["route"] == ("GetJWKS", "/agentrouter.auth.v1.AuthService/GetJWKS")


def test_an_rpc_error_is_a_connect_error_with_its_code(servicer: MakeServicer) -> None:
    status, body, _ = post(servicer(ANSWER, RpcError(Code.PERMISSION_DENIED, "no")))
    assert status == 403
    assert json.loads(body) == {"code": "permission_denied", "message": "no"}


def test_an_unknown_procedure_names_no_route(servicer: MakeServicer) -> None:
    status, _, scope = post(servicer(ANSWER), "/agentrouter.auth.v1.AuthService/Nope")
    assert status == 404
    assert "route" not in scope


@pytest.mark.parametrize(
    ("http", "body", "code"),
    [(200, b"", Code.OK), (429, b'{"code":"resource_exhausted","message":"big"}',
                           Code.RESOURCE_EXHAUSTED),
     (499, b'{"code":"canceled"}', Code.CANCELLED), (404, b"", Code.UNIMPLEMENTED),
     (415, b"", Code.UNIMPLEMENTED), (400, b"not json", Code.INVALID_ARGUMENT)],
)  # fmt: skip
def test_a_connect_answers_code_is_read_from_its_error_body(
    http: int, body: bytes, code: Code
) -> None:
    read = connect.connect_code_at_start(http, {"status": http, "headers": []})
    if read is None:
        read = connect.connect_code_in_body(body) or connect.code_of_bare_status(http)
    assert read is code


def test_a_grpc_web_answers_code_is_in_its_headers_or_trailers() -> None:
    trailers_only = {"status": 200, "headers": [(b"grpc-status", b"8")]}
    assert connect.grpc_web_code_at_start(200, trailers_only) is Code.RESOURCE_EXHAUSTED
    assert connect.grpc_web_code_at_start(200, {"status": 200, "headers": []}) is None
    data = b"\x00\x00\x00\x00\x02{}"
    trailers = b"\x80\x00\x00\x00\x1egrpc-status: 5\r\ngrpc-message: x\r\n"
    assert connect.grpc_web_code_in_body(data) is None
    assert connect.grpc_web_code_in_body(trailers) is Code.NOT_FOUND
    assert connect.grpc_web_code_in_body(b"\x80\x00\x00\x00\x0fgrpc-status: x\r\n") is Code.UNKNOWN
