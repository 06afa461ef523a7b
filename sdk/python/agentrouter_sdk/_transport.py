"""The HTTP transport of every call: pyqwest's, with a bound on what a response may hold, and
redirects followed as pyqwest follows them except from https to http."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from pyqwest import Headers, SyncHTTPTransport, SyncRequest, SyncResponse, SyncTransport

# pyqwest's own bound on a chain of redirects.
MAX_REDIRECTS = 10
# What another origin is never sent on a redirect (reqwest's list, which pyqwest applies).
_CREDENTIALS = ("authorization", "proxy-authorization", "cookie")


class BoundedTransport:
    """A pyqwest transport whose responses end in a `resource_exhausted` ConnectError once their
    body passes `max_bytes`, while it is read: pyqwest has already decompressed it, so the bound
    holds for the decompressed size (a gzip bomb) and for a body without a Content-Length.

    connectrpc's own `read_max_bytes` is checked only after pyqwest has read the whole body
    into memory, and not for an error's body: this is what keeps the memory bounded."""

    def __init__(self, max_bytes: int, inner: SyncTransport | None = None) -> None:
        self._max_bytes = max_bytes
        self._inner = inner if inner is not None else RedirectTransport(_no_redirect_transport())

    def execute_sync(self, request: SyncRequest) -> SyncResponse:
        response = self._inner.execute_sync(request)
        return SyncResponse(
            status=response.status,
            http_version=response.http_version,
            headers=response.headers,
            content=self._bounded(response),
        )

    def _bounded(self, response: SyncResponse) -> Iterator[bytes]:
        read = 0
        with response:  # closes the connection's stream when the bound stops the reading
            for chunk in response.content:
                read += len(chunk)
                if read > self._max_bytes:
                    raise too_large(self._max_bytes)
                yield bytes(chunk)


class RedirectTransport:
    """Follows redirects as pyqwest does (at most 10; 303, and 301/302 of a POST, become a GET
    without a body; 307/308 resend the body when it is bytes, else are answered as they are;
    the credentials never go to another origin), but never from https to http: a plaintext hop
    must not choose what the call reads (such as a discovery document's jwks_uri). That
    redirect is a ConnectError `unavailable`."""

    def __init__(self, inner: SyncTransport) -> None:
        self._inner = inner

    def execute_sync(self, request: SyncRequest) -> SyncResponse:
        for _ in range(MAX_REDIRECTS + 1):
            response = self._inner.execute_sync(request)
            location = response.headers.get("location")
            if response.status not in (301, 302, 303, 307, 308) or location is None:
                return response
            following = _redirected(request, response.status, location)
            if following is None:
                return response
            response.close()
            request = following
        raise ConnectError(Code.UNAVAILABLE, f"stopped after {MAX_REDIRECTS} redirects")


def _redirected(request: SyncRequest, status: int, location: str) -> SyncRequest | None:
    """The request a redirect asks for; None when it is answered as it is."""
    target = urljoin(request.url, location)
    try:
        was, now = urlsplit(request.url), urlsplit(target)
        origins = (was.scheme, was.hostname, was.port), (now.scheme, now.hostname, now.port)
    except ValueError:
        raise ConnectError(Code.UNAVAILABLE, "a redirect to an unreadable URL") from None
    if now.scheme not in ("http", "https") or not now.hostname:
        raise ConnectError(Code.UNAVAILABLE, "a redirect to a URL that is not http(s)")
    if was.scheme == "https" and now.scheme != "https":
        raise ConnectError(Code.UNAVAILABLE, "a redirect from https to http is not followed")
    method, content = request.method, request.content
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, content = ("GET" if method != "HEAD" else method), b""
    elif not isinstance(content, bytes):
        return None  # a streamed body cannot be sent again
    headers = Headers(list(request.headers.items()))
    if origins[0] != origins[1]:
        for name in _CREDENTIALS:
            headers.pop(name, None)
    if method != request.method:
        for name in ("content-type", "content-length", "content-encoding"):
            headers.pop(name, None)
    return SyncRequest(method, target, headers, content)


@functools.cache
def _no_redirect_transport() -> SyncHTTPTransport:
    """pyqwest's default transport, but following no redirect: RedirectTransport does."""
    return SyncHTTPTransport(
        tls_include_system_certs=True,
        connect_timeout=30.0,
        pool_idle_timeout=90.0,
        tcp_keepalive_interval=30.0,
        follow_redirects=False,
    )


def too_large(max_bytes: int) -> ConnectError:
    return ConnectError(
        Code.RESOURCE_EXHAUSTED,
        f"the response is larger than the client's limit of {max_bytes} bytes (max_response_bytes)",
    )
