"""What a REST request asks of an answer's representation: its media type (Accept), gzip
(Accept-Encoding) and whether the client's copy is current (If-None-Match).

It reads request headers and chooses; the headers of the answer are written by
`representation`. Clients send the same few Accept and Accept-Encoding values over and over,
so each value is parsed once.
"""

from __future__ import annotations

from typing import Any

from agentrouter_auth.rendered import Rendered

JSON = "application/json"


def etag_matches(if_none_match: bytes, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against a list, or `*`."""
    wanted = etag.removeprefix("W/")
    for item in if_none_match.decode("latin-1").split(","):
        candidate = item.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


_PARSED_CACHE_LIMIT = 512
_GZIP_ACCEPTED: dict[bytes, bool] = {}
_NEGOTIATED: dict[tuple[bytes, tuple[str, ...]], str] = {}  # "": not acceptable (406)


def accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether to send the gzip form to a request with this Accept-Encoding value (present:
    without the header no coding is applied)."""
    accepted = _GZIP_ACCEPTED.get(accept_encoding)
    if accepted is None:
        if len(_GZIP_ACCEPTED) >= _PARSED_CACHE_LIMIT:
            _GZIP_ACCEPTED.clear()
        accepted = _GZIP_ACCEPTED[accept_encoding] = _prefers_gzip(accept_encoding)
    return accepted


def _prefers_gzip(accept_encoding: bytes) -> bool:
    """RFC 9110 §12.5.3, with the two codings offered (gzip and identity):

    - a coding's q is that of its own entry (`x-gzip` is gzip), else that of `*`; q=0 refuses
      it, and an element with a malformed q is skipped;
    - identity that is neither listed nor refused by `*;q=0` is acceptable, below any coding
      the client names (`Accept-Encoding: gzip` gets gzip);
    - the higher q wins, identity on a tie (no work for either side, and the body is small);
    - when both are refused (`identity;q=0` alone, `*;q=0`), identity all the same: the RFC
      says a server SHOULD then send no coding (RFC 2616's 406 is gone), and an odd header
      never costs a verifier its keys.
    """
    listed: dict[str, float] = {}
    for name, quality in _weighted(accept_encoding):
        coding = "gzip" if name == "x-gzip" else name
        if coding:
            listed[coding] = max(quality, listed.get(coding, 0.0))
    gzip_q = listed.get("gzip", listed.get("*", 0.0))
    identity_q = listed.get("identity", listed.get("*", _UNLISTED))
    return gzip_q > 0 and gzip_q > identity_q


_UNLISTED = 1e-9
"""The q of an identity the client did not name: acceptable, below any named coding (qvalues
have three decimals, so the smallest named one is 0.001)."""


def negotiated_type(accept: bytes | None, rendered: Rendered[Any]) -> str | None:
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
    return [(media_range, q) for media_range, q in _weighted(accept) if media_range.count("/") == 1]


def _weighted(value: bytes) -> list[tuple[str, float]]:
    """Each element of a comma-separated header value with its q (RFC 9110 §12.4.2), lower
    case; an element whose q is malformed is skipped."""
    elements = []
    for element in value.decode("latin-1").lower().split(","):
        token, *params = element.split(";")
        quality = 1.0
        for param in params:
            name, _, text = param.partition("=")
            if name.strip() == "q":
                quality = _qvalue(text.strip())
                break
        if quality >= 0:
            elements.append((token.strip(), quality))
    return elements


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
