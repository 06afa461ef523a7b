"""How an answer is represented over HTTP: every response header of the REST routes.

One module decides them all, so changing a caching or CORS header is a change here (and, for a
cache lifetime, to the rotation policy that sets it):

- a `Rendered` answer: its stored bytes with a strong `ETag` per content coding (the gzip body
  has its own), `If-None-Match` → 304 when it names the representation that would be sent, the
  gzip form when the client accepts it (`Vary: Accept-Encoding`), `Cache-Control` from the
  answer's freshness, and the media type Accept prefers by its q-values among
  `application/json` and the answer's more specific ones (`application/jwk-set+json`; `Vary:
  Accept` too): `application/json` on a tie, and when Accept names none of them; 406 when it
  refuses `application/json` (q=0) and leaves nothing else. HEAD gets the same headers, no
  body;
- a plain message: compact proto3 JSON; an error: `google.rpc.Status` JSON;
- every answer: `Access-Control-Allow-Origin: *` (the routes are public), and OPTIONS answers
  a CORS preflight;
- the RPC routes (Connect, gRPC-Web) get the same cross-origin access from `RpcCors`: a
  preflight that allows the protocols' request headers, and gRPC-Web's status headers exposed,
  so that browser clients (connect-web, grpc-web) can call them from any page;
- the service's own endpoints (health, metrics, a 408) are never cached: `no-store`.

Header lists of a rendered answer are built once per answer and representation, and kept in
`Rendered.derived`: a request only picks one.
"""

from __future__ import annotations

from typing import Any

from agentrouter_auth.asgi_types import (
    App,
    Headers,
    Message,
    Receive,
    Scope,
    Send,
    content_length,
    header,
    respond,
)
from agentrouter_auth.rendered import Freshness, Rendered
from agentrouter_auth.status import Code
from agentrouter_auth.transcode import JSONResponder, TranscodeError

JSON = "application/json"
CORS: Headers = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"etag, content-length"),
)
PREFLIGHT_MAX_AGE = 86400  # seconds a browser may reuse a preflight answer


class Representation(JSONResponder):
    """The transcoder's responder for this service's REST routes."""

    headers = CORS

    async def answer(self, scope: Scope, send: Send, answer: object, *, head: bool) -> None:
        """Write a rendered answer from its stored bytes, any other message as JSON."""
        if not isinstance(answer, Rendered):
            await super().answer(scope, send, answer, head=head)
            return
        if_none_match = accept = accept_encoding = None
        for name, value in scope.get("headers") or ():
            if name == b"if-none-match":
                if_none_match = value
            elif name == b"accept":
                accept = value
            elif name == b"accept-encoding":
                accept_encoding = value
        content_type = _negotiated_type(accept, answer)
        if content_type is None:
            await self.error(scope, send, _not_acceptable(answer), head=head)
            return
        gzipped = accept_encoding is not None and _accepts_gzip(accept_encoding)
        etag = answer.etag_gzip if gzipped else answer.etag
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            status, headers, body = 304, _variant(answer, None, gzipped=gzipped), b""
        else:
            status = 200
            headers = _variant(answer, content_type, gzipped=gzipped)
            body = b"" if head else answer.json_gzip if gzipped else answer.json
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def options(self, scope: Scope, send: Send, allow: bytes) -> None:
        """A CORS preflight: any origin, the path's methods, the headers asked for."""
        headers = [
            (b"allow", allow),
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", allow),
            (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
        ]
        requested = header(scope, b"access-control-request-headers")
        if requested:
            headers.append((b"access-control-allow-headers", requested))
        headers.append(content_length(b""))
        await respond(send, 204, headers, b"")


# What a browser may send to and read from the RPC routes: Connect's and gRPC-Web's request
# headers (as connectrpc.com/cors lists them) and the bearer token the SDKs send; gRPC-Web's
# status headers, for a trailers-only answer.
RPC_METHODS = b"GET, POST"
RPC_REQUEST_HEADERS = (
    b"authorization, content-type, connect-protocol-version, connect-timeout-ms, "
    b"grpc-timeout, x-grpc-web, x-user-agent"
)
RPC_CORS: Headers = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"grpc-status, grpc-message, grpc-status-details-bin"),
)
_RPC_PREFLIGHT = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", RPC_METHODS),
    (b"access-control-allow-headers", RPC_REQUEST_HEADERS),
    (b"access-control-max-age", str(PREFLIGHT_MAX_AGE).encode()),
    (b"allow", RPC_METHODS),
    content_length(b""),
]


class RpcCors:
    """Cross-origin access to an RPC app (Connect and gRPC-Web): OPTIONS is a preflight
    answered here; every other answer gets `RPC_CORS` added to its headers."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point (HTTP requests only)."""
        if scope["method"] == "OPTIONS":
            await respond(send, 204, _RPC_PREFLIGHT, b"")
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *RPC_CORS]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def cache_control(freshness: Freshness) -> bytes:
    """The `Cache-Control` of an answer a shared cache may keep for `freshness`."""
    return (
        f"public, max-age={int(freshness.max_age)}, "
        f"stale-while-revalidate={int(freshness.stale_while_revalidate)}, "
        f"stale-if-error={int(freshness.stale_if_error)}"
    ).encode()


def uncached(content_type: str, body: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of an answer no cache may keep (health, metrics, a request limit's)."""
    return [
        (b"content-type", content_type.encode()),
        content_length(body),
        (b"cache-control", b"no-store"),
    ]


def _variant(
    rendered: Rendered[Any], content_type: str | None, *, gzipped: bool
) -> list[tuple[bytes, bytes]]:
    """The headers of one representation of `rendered`, built once and reused.

    `content_type` None is the 304 form: validators and caching headers, no entity ones.
    """
    key = (content_type, gzipped)
    headers: list[tuple[bytes, bytes]] | None = rendered.derived.get(key)
    if headers is None:
        vary = b"Accept, Accept-Encoding" if rendered.media_types else b"Accept-Encoding"
        etag = rendered.etag_gzip if gzipped else rendered.etag
        headers = [(b"etag", etag.encode()), (b"vary", vary), *CORS]
        if rendered.freshness is not None:
            headers.append((b"cache-control", cache_control(rendered.freshness)))
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
            if gzipped:
                headers.append((b"content-encoding", b"gzip"))
            headers.append(content_length(rendered.json_gzip if gzipped else rendered.json))
        rendered.derived[key] = headers
    return headers


def _etag_matches(if_none_match: bytes, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against a list, or `*`."""
    wanted = etag.removeprefix("W/")
    for item in if_none_match.decode("latin-1").split(","):
        candidate = item.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


# Clients send the same few Accept and Accept-Encoding values over and over: parse each once.
_PARSED_CACHE_LIMIT = 512
_GZIP_ACCEPTED: dict[bytes, bool] = {}
_NEGOTIATED: dict[tuple[bytes, tuple[str, ...]], str] = {}  # "": not acceptable (406)


def _accepts_gzip(accept_encoding: bytes) -> bool:
    accepted = _GZIP_ACCEPTED.get(accept_encoding)
    if accepted is None:
        if len(_GZIP_ACCEPTED) >= _PARSED_CACHE_LIMIT:
            _GZIP_ACCEPTED.clear()
        accepted = _GZIP_ACCEPTED[accept_encoding] = _parse_accepts_gzip(accept_encoding)
    return accepted


def _parse_accepts_gzip(accept_encoding: bytes) -> bool:
    for item in accept_encoding.decode("latin-1").lower().split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            quality = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


def _negotiated_type(accept: bytes | None, rendered: Rendered[Any]) -> str | None:
    """The answer's media type by the client's Accept, or None when it is not acceptable."""
    if not accept or not rendered.media_types:
        return JSON
    key = (accept, rendered.media_types)
    chosen = _NEGOTIATED.get(key)
    if chosen is None:
        if len(_NEGOTIATED) >= _PARSED_CACHE_LIMIT:
            _NEGOTIATED.clear()
        chosen = _NEGOTIATED[key] = _negotiate(accept, (JSON, *rendered.media_types))
    return chosen or None


def _negotiate(accept: bytes, offered: tuple[str, ...]) -> str:
    """RFC 9110 §12.5.1: the offered type of highest quality, the first offered on a tie.

    A type's quality is the q of the most specific range that matches it (`type/subtype`,
    then `type/*`, then `*/*`); q=0 means "not acceptable". When Accept matches no offered
    type at all, it is disregarded (as the RFC allows and JWKS servers do, so that an odd
    Accept never costs a verifier its keys): the first offered type. Only when it refuses that
    one explicitly is nothing left: "" (406).
    """
    ranges = _media_ranges(accept)
    qualities = [_quality(ranges, offer) for offer in offered]
    best = max(range(len(offered)), key=lambda n: (qualities[n] or 0.0, -n))
    if qualities[best]:
        return offered[best]
    return "" if qualities[0] == 0.0 else offered[0]


def _media_ranges(accept: bytes) -> list[tuple[str, float]]:
    """The (media range, q) of each element of an Accept value; malformed ones are skipped.

    Parameters other than q are not compared: `application/json; charset=utf-8` asks for
    application/json."""
    ranges = []
    for element in accept.decode("latin-1").lower().split(","):
        media_range, *params = element.split(";")
        media_range = media_range.strip()
        if media_range.count("/") != 1:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                quality = _qvalue(value.strip())
                break
        if quality >= 0:
            ranges.append((media_range, quality))
    return ranges


def _qvalue(text: str) -> float:
    """A qvalue (`0`, `0.5`, `1.000`: RFC 9110 §12.4.2), or -1 when malformed."""
    try:
        value = float(text)
    except ValueError:
        return -1.0
    return value if 0 <= value <= 1 and text[:1].isdigit() and len(text) <= 5 else -1.0


def _quality(ranges: list[tuple[str, float]], offer: str) -> float | None:
    """The q the most specific matching range gives `offer`, or None when none matches."""
    kind = offer.partition("/")[0] + "/*"
    found: tuple[int, float] | None = None
    for media_range, quality in ranges:
        rank = 3 if media_range == offer else 2 if media_range == kind else 1
        if rank == 1 and media_range != "*/*":
            continue
        if found is None or (rank, quality) > found:
            found = (rank, quality)
    return None if found is None else found[1]


def _not_acceptable(rendered: Rendered[Any]) -> TranscodeError:
    offered = ", ".join((JSON, *rendered.media_types))
    return TranscodeError(
        Code.INVALID_ARGUMENT,
        f"Accept refuses every media type of this resource ({offered})",
        [(b"vary", b"Accept")],
        http_status=406,
    )
