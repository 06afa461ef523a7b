"""transcode.errors: errors as google.rpc.Status JSON with their HTTP status."""

from __future__ import annotations

import json

import pytest

from agentrouter_auth.status import Code, RpcError
from agentrouter_auth.transcode.errors import (
    TranscodeError,
    body_too_large,
    code_of_status_json,
    status_json,
)


def test_status_json_is_google_rpc_status() -> None:
    assert json.loads(status_json(Code.NOT_FOUND, "no route for /x")) == {
        "code": 5, "message": "no route for /x", "details": [],
    }  # fmt: skip


@pytest.mark.parametrize("code", list(Code))
def test_the_code_is_read_back_from_the_body(code: Code) -> None:
    assert code_of_status_json(status_json(code, "m")) is code


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"code": "5"}', b'{"code": true}', b"{}"])
def test_a_body_that_is_not_a_status_names_no_code(body: bytes) -> None:
    assert code_of_status_json(body) is None


def test_an_error_takes_its_codes_http_status_unless_http_says_more() -> None:
    assert TranscodeError(Code.UNAVAILABLE, "m").http_status == 503
    too_large = body_too_large(10)
    assert (too_large.code, too_large.http_status) == (Code.RESOURCE_EXHAUSTED, 413)


def test_any_rpc_error_becomes_a_transcode_error() -> None:
    error = TranscodeError.of(RpcError(Code.PERMISSION_DENIED, "no"))
    assert (error.code, error.message, error.http_status, error.allow) == (
        Code.PERMISSION_DENIED, "no", 403, b""
    )  # fmt: skip
    assert TranscodeError.of(too_large := body_too_large(1)) is too_large
