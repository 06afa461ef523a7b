"""gRPC status codes and what each transport calls them: one table, keyed by grpc.StatusCode.

Every transport answers an RPC error with the same code: native gRPC as the code itself, REST
as an HTTP status and a `google.rpc.Status` body carrying the code's number, Connect and
gRPC-Web as the code's name. Metrics and logs label a request with the code the client read.
This module is the one place those names and numbers are written down; elsewhere a status is a
`grpc.StatusCode`.
"""

from __future__ import annotations

import grpc

from agentrouter_auth.errors import AgentRouterAuthError

Code = grpc.StatusCode

# The HTTP status of an answer with each code: the mapping grpc-gateway (`HTTPStatusFromCode`),
# Envoy's grpc_json_transcoder and the Connect protocol share (README, REST transcoding).
_HTTP: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}
# Connect names codes as gRPC does, in lower case, but spells CANCELLED "canceled".
_CONNECT: dict[Code, str] = {code: code.name.lower() for code in Code} | {
    Code.CANCELLED: "canceled"
}
_BY_NUMBER: dict[int, Code] = {code.value[0]: code for code in Code}
_BY_CONNECT_NAME: dict[str, Code] = {name: code for code, name in _CONNECT.items()}
# On a request path a code is looked up by its number: an enum member's `name` and `value`
# are Python-level properties and its hash a Python-level method, while `_value_` and
# `_name_` (Enum's own supported attributes) are plain ones.
_HTTP_BY_NUMBER = {code.value[0]: http for code, http in _HTTP.items()}
_CONNECT_BY_NUMBER = {code.value[0]: name for code, name in _CONNECT.items()}
# The code an HTTP status stands for when an answer's body names none (the answer to a HEAD
# request, a protocol's bare error): the first code of the table with that status, and the
# statuses HTTP layers answer by themselves (no such method or media type; a request limit).
_BY_HTTP: dict[int, Code] = {
    **{http: code for code, http in reversed(_HTTP.items())},
    405: Code.UNIMPLEMENTED,
    408: Code.DEADLINE_EXCEEDED,
    412: Code.FAILED_PRECONDITION,
    413: Code.RESOURCE_EXHAUSTED,
    415: Code.UNIMPLEMENTED,
    431: Code.RESOURCE_EXHAUSTED,
    502: Code.UNAVAILABLE,
}


class RpcError(AgentRouterAuthError):
    """An RPC answered with a status other than OK, whatever the transport.

    The servicer raises it; each transport writes it in its own protocol.
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def http_status(code: Code) -> int:
    """The HTTP status of an answer with `code`."""
    return _HTTP_BY_NUMBER[code._value_[0]]


def number(code: Code) -> int:
    """The code's number, as `google.rpc.Status.code` and the `grpc-status` header carry it."""
    value: int = code._value_[0]
    return value


def connect_name(code: Code) -> str:
    """The code's name in the Connect protocol (`resource_exhausted`, `canceled`, …)."""
    return _CONNECT_BY_NUMBER[code._value_[0]]


def label(code: Code) -> str:
    """The code as metrics and access logs label it (`RESOURCE_EXHAUSTED`)."""
    return code._name_


def from_number(value: int) -> Code:
    """The code numbered `value`; UNKNOWN for a number no code has."""
    return _BY_NUMBER.get(value, Code.UNKNOWN)


def from_connect_name(name: str) -> Code:
    """The code a Connect error names; UNKNOWN for a name no code has."""
    return _BY_CONNECT_NAME.get(name, Code.UNKNOWN)


def from_http(status: int) -> Code:
    """The code an answer's HTTP status stands for when nothing else names one."""
    if status < 400:  # 2xx, and 304: the client's copy is current
        return Code.OK
    return _BY_HTTP.get(status, Code.UNKNOWN)
