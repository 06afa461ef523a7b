"""Transcoder errors, and the `google.rpc.Status` JSON body that answers them.

`{"code": 5, "message": "…", "details": []}`: the code's number, as grpc-gateway and Envoy's
grpc_json_transcoder write it, with the HTTP status of `status.http_status`. A responder
writes the answer (its headers are the application's choice).
"""

from __future__ import annotations

import json

from agentrouter_auth import status
from agentrouter_auth.status import Code, RpcError


class TranscodeError(RpcError):
    """An RPC error with what HTTP adds: where HTTP has a more precise status than the code's
    (405, 406, 413), that status, and for a 405 the methods the path allows (`Allow`, as the
    responder writes it)."""

    def __init__(
        self, code: Code, message: str, *, allow: bytes = b"", http_status: int | None = None
    ) -> None:
        super().__init__(code, message)
        self.allow = allow
        self.http_status = http_status or status.http_status(code)

    @classmethod
    def of(cls, error: RpcError) -> TranscodeError:
        """`error` as a TranscodeError (itself when it is one)."""
        return error if isinstance(error, TranscodeError) else cls(error.code, error.message)


def status_json(code: Code, message: str) -> bytes:
    """The `google.rpc.Status` JSON of an error."""
    document = {"code": status.number(code), "message": message, "details": []}
    return json.dumps(document).encode()


_STATUS_JSON_START = b'{"code": '  # how status_json's output begins: the code comes first


def code_of_status_json(body: bytes) -> Code | None:
    """The code of a `google.rpc.Status` JSON body, or None when `body` is not one.

    What status_json wrote is read without a JSON parser (the code is its first member);
    anything else is parsed.
    """
    if body.startswith(_STATUS_JSON_START):
        start = len(_STATUS_JSON_START)
        digits = body[start : body.find(b",", start)]
        if digits.isdigit():
            return status.from_number(int(digits))
    try:
        document = json.loads(body)
    except ValueError:
        return None
    number = document.get("code") if isinstance(document, dict) else None
    if not isinstance(number, int) or isinstance(number, bool):
        return None
    return status.from_number(number)


def body_too_large(limit: int) -> TranscodeError:
    """The error for a request body over `limit` bytes: RESOURCE_EXHAUSTED, HTTP 413."""
    return TranscodeError(
        Code.RESOURCE_EXHAUSTED, f"request body is larger than {limit} bytes", http_status=413
    )
