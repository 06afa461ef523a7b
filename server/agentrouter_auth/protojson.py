"""Compact proto3 JSON: the one way this service writes a message as JSON.

`json_format.MessageToJson` pretty-prints; verifiers and caches want the compact form, and the
REST, Connect and snapshot writers must agree byte for byte.
"""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.message import Message


def compact_json(message: Message) -> bytes:
    """`message` as compact proto3 JSON (field JSON names, no insignificant white space)."""
    document = json_format.MessageToDict(message)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
