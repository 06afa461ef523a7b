"""The HTTP transport of every call: pyqwest's, with a bound on what a response may hold, and
redirects followed as pyqwest follows them except from https to http."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterator
from urllib.parse import SplitResult, urljoin, urlsplit

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from pyqwest import Headers, SyncHTTPTransport, SyncRequest, SyncResponse, SyncTransport

# The most requests one call makes, redirects included: a tenth redirect is not followed (Go's
# net/http: "stopped after 10 redirects" once `len(via) >= 10`).
MAX_REDIRECTS = 10
# What a Location may not hold: a control character (Go's url.Parse refuses it; urllib and
# reqwest drop a tab or a newline where they please), whitespace, Unicode's included (str's
# isspace, as Go's unicode.IsSpace: U+00A0, U+2028, U+3000, ...; parsers disagree on whether
# it is dropped, kept or ends the host), or a backslash (for reqwest, which reads a URL by the
# WHATWG rules, it ends an http URL's authority; for urllib it does not, so the two would read
# different hosts in `http://B\\@A/`).
_REFUSED_IN_LOCATION = re.compile(r"[\s\x00-\x1f\x7f\\]")
# A host a redirect may name: a name or an IPv4 address in ASCII letters, digits, ".", "-" and
# "_", or an IPv6 address in brackets; what urllib and reqwest cannot read apart.
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_PORT = re.compile(r"[0-9]{0,10}")
_DEFAULT_PORTS = {"http": 80, "https": 443}
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
    """Follows redirects as Go's net/http does (at most 9: the tenth is an `unavailable`
    ConnectError; a 3xx without a Location, or with an empty one, is the answer; 303, and
    301/302 of a POST, become a GET without a body; 307/308 resend the body when it is bytes,
    else are answered as they are; the credentials never go to another origin), but never from
    https to http: a plaintext hop must not choose what the call reads (such as a discovery
    document's jwks_uri). A Location holding a control character, whitespace or a backslash is
    refused (`unavailable`, the 3xx closed); the others are sent to the URL their origin was
    judged on (see redirect_target)."""

    def __init__(self, inner: SyncTransport) -> None:
        self._inner = inner

    def execute_sync(self, request: SyncRequest) -> SyncResponse:
        for _ in range(MAX_REDIRECTS):
            response = self._inner.execute_sync(request)
            location = response.headers.get("location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response
            try:
                following = _redirected(request, response.status, location)
            except BaseException:
                response.close()  # a refused redirect's connection is not left open
                raise
            if following is None:
                return response
            response.close()
            request = following
        raise ConnectError(Code.UNAVAILABLE, f"stopped after {MAX_REDIRECTS} redirects")


def redirect_target(url: str, location: str) -> str:
    """The URL a redirect from `url` to `location` is sent to: `location` resolved against
    `url`, then rebuilt from that one parse as scheme://host[:port]/path[?query] (no userinfo,
    no fragment) of a host spelled so that reqwest, which sends it, reads the host and port
    urllib read: the origin judged is the origin reached. ConnectError `unavailable` for a
    Location with a control character, whitespace or a backslash, or whose URL is not http(s)
    with such a host."""
    if _REFUSED_IN_LOCATION.search(location):
        raise _refused(
            "a redirect to a Location with a control character, whitespace or a backslash"
        )
    try:
        parts = urlsplit(urljoin(url, location))
    except ValueError:
        raise _refused("a redirect to an unreadable URL") from None
    address = _address(parts)
    if address is None:
        raise _refused("a redirect to a URL that is not http(s) with a plain host")
    scheme, host, port = address
    authority = f"{host}:{int(port)}" if port else host
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{authority}{parts.path or '/'}{query}"


def _address(parts: SplitResult) -> tuple[str, str, str] | None:
    """(scheme, host, port as spelled, "" when none) of an http(s) URL whose host is plainly
    spelled (see _NAME, _IPV6: the host lowercased, an IPv6 address compressed) and whose port,
    if any, is a number; None for any other URL."""
    if parts.scheme not in _DEFAULT_PORTS:
        return None
    address = parts.netloc.rpartition("@")[2]
    if address.startswith("["):
        end = address.find("]") + 1
        host, rest = address[:end], address[end:]
        if end == 0 or not _IPV6.fullmatch(host):
            return None
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            return None
    else:
        host, colon, port = address.partition(":")
        rest = colon + port
        if not _NAME.fullmatch(host):
            return None
        host = host.lower()
    if rest and (rest[0] != ":" or not _PORT.fullmatch(rest[1:]) or int(rest[1:] or 0) > 65535):
        return None
    return parts.scheme, host, rest[1:]


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of `url` (the scheme's default port when none is spelled), or None
    when _address reads none."""
    try:
        address = _address(urlsplit(url))
    except ValueError:
        return None
    if address is None:
        return None
    scheme, host, port = address
    return scheme, host, int(port) if port else _DEFAULT_PORTS[scheme]


def _refused(why: str) -> ConnectError:
    return ConnectError(Code.UNAVAILABLE, why)


def _redirected(request: SyncRequest, status: int, location: str) -> SyncRequest | None:
    """The request a redirect asks for; None when it is answered as it is."""
    target = redirect_target(request.url, location)
    was, now = _origin(request.url), _origin(target)
    if was is not None and was[0] == "https" and now is not None and now[0] != "https":
        raise _refused("a redirect from https to http is not followed")
    method, content = request.method, request.content
    if status == 303 or (status in (301, 302) and method == "POST"):
        method, content = ("GET" if method != "HEAD" else method), b""
    elif not isinstance(content, bytes):
        return None  # a streamed body cannot be sent again
    headers = Headers(list(request.headers.items()))
    if was is None or was != now:
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
