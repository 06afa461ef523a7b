"""An answer rendered once and served many times, by every transport, without serializing.

A servicer method returns either a message or a `Rendered` answer: the message together with
its protobuf and compact JSON encodings (and each one's gzip form), a strong ETag of each body
and how long a cache may keep it. The transports write the stored bytes (gRPC and Connect
binary the `proto`, Connect JSON and REST the `json`), and the HTTP representation turns the
ETags and freshness into headers. Nothing here knows a transport.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from agentrouter_auth.protojson import compact_json

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Freshness:
    """How long a cache may reuse an answer, in seconds (RFC 9111 and RFC 5861 terms)."""

    max_age: float
    stale_while_revalidate: float = 0
    stale_if_error: float = 0


@dataclass(frozen=True, slots=True, eq=False)
class Rendered(Generic[M]):
    """A message and its encodings, rendered once; never mutate `message`.

    `media_types` are more specific names of the JSON document (as `application/jwk-set+json`
    names a JWK set) that a client may ask for.

    `etag` validates the `json` bytes, `etag_gzip` the `json_gzip` bytes, and so on for the
    protobuf bytes: a strong validator differs per representation (RFC 9110 §8.8.3), or a cache
    could combine a stored gzip body with identity metadata (or serve one coding to a client
    that asked for the other).
    """

    message: M
    proto: bytes
    json: bytes
    json_gzip: bytes
    etag: str
    etag_gzip: str
    proto_gzip: bytes
    etag_proto: str
    etag_proto_gzip: str
    freshness: Freshness | None = None
    media_types: tuple[str, ...] = ()
    derived: dict[Any, Any] = field(default_factory=dict, init=False, repr=False)
    """What a transport derives from this answer and keeps for the next request (the HTTP
    header lists); not part of the answer's value, and not copied by `dataclasses.replace`."""


Answer = Message | Rendered[Any]
"""What a servicer method returns: a message, or a message rendered once."""


def render_message(
    message: M, *, freshness: Freshness | None = None, media_types: tuple[str, ...] = ()
) -> Rendered[M]:
    """Render `message` once: its deterministic protobuf bytes and its compact proto3 JSON."""
    body = compact_json(message)
    zipped = _gzip(body)
    proto = message.SerializeToString(deterministic=True)
    proto_zipped = _gzip(proto)
    return Rendered(
        message=message,
        proto=proto,
        json=body,
        json_gzip=zipped,
        etag=strong_etag(body),
        etag_gzip=strong_etag(zipped),
        proto_gzip=proto_zipped,
        etag_proto=strong_etag(proto),
        etag_proto_gzip=strong_etag(proto_zipped),
        freshness=freshness,
        media_types=media_types,
    )


def _gzip(body: bytes) -> bytes:
    """The gzip form of `body`: the same bytes in every process (no time stamp)."""
    return gzip.compress(body, compresslevel=9, mtime=0)


def strong_etag(body: bytes) -> str:
    """A strong entity tag of `body`: the same bytes get the same tag in every process."""
    digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=")
    return f'"{digest.decode()}"'
