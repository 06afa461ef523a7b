"""Connect and gRPC-Web for AuthService: the generated connectrpc ASGI app, with codecs that
write the snapshot's pre-rendered bytes instead of serializing the response per request.

connectrpc's default JSON codec pretty-prints; these write compact proto3 JSON, which for the
JWKS response is exactly the RFC 7517 document REST serves.
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from agentrouter.auth.v1.auth_connect import AuthServiceASGIApplication
from agentrouter_auth.protojson import compact_json
from agentrouter_auth.service import AuthService
from agentrouter_auth.snapshot import Snapshot, SnapshotSource

CONNECT_PATH_PREFIX = "/agentrouter.auth.v1.AuthService/"
DEFAULT_READ_MAX_BYTES = 64 * 1024
M = TypeVar("M", bound=Message)


class _SnapshotCodec:
    """A Connect codec that writes the current snapshot's message as its stored bytes."""

    codec_name = ""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source

    def name(self) -> str:
        """The Connect codec name."""
        return self.codec_name

    def encode(self, message: Message) -> bytes:
        """The stored bytes when `message` is the snapshot's own, else a fresh encoding."""
        snapshot = self._source.snapshot()
        if message is snapshot.message:
            return self._stored(snapshot)
        return self._serialize(message)

    def _stored(self, snapshot: Snapshot) -> bytes:
        raise NotImplementedError

    def _serialize(self, message: Message) -> bytes:
        raise NotImplementedError


class SnapshotProtoCodec(_SnapshotCodec):
    """Protobuf binary."""

    codec_name = "proto"

    def _stored(self, snapshot: Snapshot) -> bytes:
        return snapshot.proto

    def _serialize(self, message: Message) -> bytes:
        return message.SerializeToString()

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        """Parse a request."""
        return message_class.FromString(bytes(data))


class SnapshotJSONCodec(_SnapshotCodec):
    """Compact proto3 JSON."""

    codec_name = "json"

    def _stored(self, snapshot: Snapshot) -> bytes:
        return snapshot.json

    def _serialize(self, message: Message) -> bytes:
        return compact_json(message)

    def decode(self, data: bytes | bytearray, message_class: type[M]) -> M:
        """Parse a request; unknown fields are ignored, as connectrpc's own codec does."""
        message = message_class()
        json_format.Parse(bytes(data), message, ignore_unknown_fields=True)
        return message


def connect_app(
    service: AuthService, *, read_max_bytes: int = DEFAULT_READ_MAX_BYTES
) -> AuthServiceASGIApplication:
    """The Connect + gRPC-Web application for AuthService."""
    return AuthServiceASGIApplication(
        service,
        codecs=[SnapshotProtoCodec(service.source), SnapshotJSONCodec(service.source)],
        read_max_bytes=read_max_bytes,
    )
