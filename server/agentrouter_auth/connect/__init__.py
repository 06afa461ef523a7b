"""Connect and gRPC-Web on the HTTP listener.

`app`: the generated connectrpc app serving the servicer's coroutines (every call it is given,
every error), held to the protocol where connectrpc is lenient, and where a Connect or gRPC-Web
answer carries its code (for metrics). `unary`: the unary calls of rendered answers, answered
from their stored bytes in front of it.
"""

from agentrouter_auth.connect.app import (
    DEFAULT_READ_MAX_BYTES,
    ConnectApp,
    ErrorWriter,
    RenderedJSONCodec,
    RenderedProtoCodec,
    code_of_bare_status,
    connect_app,
    connect_code_at_start,
    connect_code_in_body,
    grpc_web_code_at_start,
    grpc_web_code_in_body,
    is_base64,
)
from agentrouter_auth.connect.unary import UnaryPath

__all__ = [
    "DEFAULT_READ_MAX_BYTES",
    "ConnectApp",
    "ErrorWriter",
    "RenderedJSONCodec",
    "RenderedProtoCodec",
    "UnaryPath",
    "code_of_bare_status",
    "connect_app",
    "connect_code_at_start",
    "connect_code_in_body",
    "grpc_web_code_at_start",
    "grpc_web_code_in_body",
    "is_base64",
]
