"""What a request head must be before any handler of the HTTP listener sees it.

- At most `MAX_HEAD_BYTES` (request line, header lines, blank line), else 431. granian's
  `HTTP1Settings.max_buffer_size` is hyper's read-buffer limit, checked only between reads: a
  head that arrives in large reads passes it by up to one read (heads of ~112 KiB were served
  on loopback), so the documented limit is kept here, exactly, from the head as sent. The
  header-line limit (100) is hyper's own.
- HTTP/1.x: at most one Host header, and HTTP/1.1 exactly one, with a valid `uri-host[:port]`
  (RFC 9112 §3.2: anything else is a 400): a port up to 65535, and no comma (a Host line
  with one is a list of values). granian hands an HTTP/1.1 request without Host to the app
  with an empty one, and an `http` URI has no empty host (RFC 9110 §4.2.1), so an empty Host
  is refused as a missing one. With an absolute-form target (`GET http://a.example/x`) and no
  Host line, granian (hyper) hands the app the target's authority as Host and its path as
  the target, so the request cannot be told from one that sent that Host: its authority is
  checked as a Host, and a valid one is served (README, Limits). HTTP/2 names the
  authority in `:authority`.

Every route of the port is held to it, health and metrics included (Kubernetes' HTTP probes
send Host). The answer is a `representation.Refusal`: a `google.rpc.Status` JSON, as every error
of the listener, and the connection is closed: a head the server refuses says nothing about
where the next one starts.
"""

from __future__ import annotations

import re
from functools import lru_cache

from agentrouter_auth import status
from agentrouter_auth.asgi_types import Scope
from agentrouter_auth.http.representation import Refusal

MAX_HEAD_BYTES = 64 * 1024
"""README, Limits: a request head above this many bytes is answered 431."""

# RFC 3986 §3.2.2 uri-host (IP-literal, IPv4address or a non-empty reg-name, less the comma:
# a Host line with one is a list, RFC 9110 §5.3) and §3.2.3 port (a number up to 65535).
_HOST = re.compile(rb"(?:\[[0-9A-Za-z:.]+\]|[A-Za-z0-9\-._~!$&'()*+;=%]+)(?::(?P<port>[0-9]*))?")
_MAX_PORT = 65535


@lru_cache(maxsize=256)  # clients send the same few Host values: match each once
def _valid_host(host: bytes) -> bool:
    """Whether `host` is a `uri-host[:port]` with a port of at most 65535."""
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    port = match["port"]
    return not port or int(port) <= _MAX_PORT


_LINE_END = len(b": \r\n")  # what a header line adds to its name and value
_REQUEST_LINE = len(b"  HTTP/1.1\r\n")  # what the request line adds to method and target
_HTTP_1_0 = ("1.0", "1")  # granian 2.8 says "1" for HTTP/1.0


TOO_LARGE = Refusal(
    431,
    status.Code.RESOURCE_EXHAUSTED,
    f"the request head is larger than {MAX_HEAD_BYTES} bytes",
)
BAD_HOST = Refusal(
    400,
    status.Code.INVALID_ARGUMENT,
    "an HTTP/1.1 request needs exactly one Host header with a valid host (RFC 9112 §3.2)",
)


def refusal(scope: Scope) -> Refusal | None:
    """Why the head of this HTTP request is refused, or None (it is fine)."""
    size = len(scope.get("method", "")) + _REQUEST_LINE + 2  # + the blank line
    raw = scope.get("raw_path")
    target = raw if raw is not None else scope.get("path", "").encode()
    query = scope.get("query_string")
    size += len(target) + (len(query) + 1 if query and b"?" not in target else 0)
    hosts = 0
    host = b""
    for name, value in scope.get("headers") or ():
        size += len(name) + len(value) + _LINE_END
        if name == b"host":
            hosts += 1
            host = value
    if size > MAX_HEAD_BYTES:
        return TOO_LARGE
    version = scope.get("http_version")
    if version == "1.1":
        if hosts != 1 or not _valid_host(host):
            return BAD_HOST
    elif version in _HTTP_1_0 and (hosts > 1 or (host and not _valid_host(host))):
        return BAD_HOST
    return None
