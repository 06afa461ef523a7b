"""Request fields from what HTTP carries: path variables, query parameters and a JSON body.

Path and query values are text, converted to each field's type (integers range-checked, enums
by name or number, bytes as URL-safe base64); a field may be named by its proto name, its
lowerCamelCase name or its `json_name`. Unknown query parameters are ignored, so a
cache-busting parameter never breaks a client; a known one with a malformed value is a 400.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import cast
from urllib.parse import parse_qsl

from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from agentrouter_auth.status import Code
from agentrouter_auth.transcode.errors import TranscodeError

_MESSAGE_CLASSES: dict[str, type[Message]] = {}


def message_class(message_descriptor: descriptor.Descriptor) -> type[Message]:
    """The message class of a descriptor (looked up once)."""
    cls = _MESSAGE_CLASSES.get(message_descriptor.full_name)
    if cls is None:
        cls = message_factory.GetMessageClass(message_descriptor)
        _MESSAGE_CLASSES[message_descriptor.full_name] = cls
    return cls


def merge_body(raw: bytes, target: Message) -> None:
    """Merge a JSON request body into `target`; a blank body sets nothing."""
    if not raw.strip():
        return
    try:
        json_format.Parse(raw, target)
    except json_format.ParseError as err:
        raise _invalid(f"malformed request body: {err}") from err
    except UnicodeDecodeError as err:
        raise _invalid("request body is not UTF-8") from err


def merge_query(request: Message, query: bytes, *, body_field: str = "") -> None:
    """Set the fields a query string names; `body_field`, filled from the body, is skipped."""
    try:
        pairs = parse_qsl(query.decode("utf-8"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as err:
        raise _invalid("query string is not UTF-8") from err
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name, []).append(value)
    for name, values in grouped.items():
        path = tuple(name.split("."))
        if body_field and path[0] == body_field:
            continue
        if resolve(_descriptor_of(request), path) is None:
            continue  # unknown parameters are ignored (see the module docstring)
        assign(request, path, values, source="query")


def _descriptor_of(message: Message) -> descriptor.Descriptor:
    return cast(descriptor.Descriptor, message.DESCRIPTOR)


def resolve(
    message_descriptor: descriptor.Descriptor, path: Sequence[str]
) -> descriptor.FieldDescriptor | None:
    """The field at `path` (proto or JSON names), or None when any step is unknown."""
    current: descriptor.Descriptor | None = message_descriptor
    found = None
    for name in path:
        if current is None:
            return None
        found = current.fields_by_name.get(name) or current.fields_by_camelcase_name.get(name)
        if found is None:
            found = next((f for f in current.fields if f.json_name == name), None)
        if found is None:
            return None
        current = found.message_type
    return found


def assign(message: Message, path: Sequence[str], values: list[str], *, source: str) -> None:
    """Set the field at `path` from text values, converting to the field's type."""
    target = message
    for name in path[:-1]:
        field_descriptor = resolve(_descriptor_of(target), [name])
        if field_descriptor is None or field_descriptor.message_type is None:
            raise _invalid(f"{source} parameter {'.'.join(path)!r} is not a field")
        target = getattr(target, field_descriptor.name)
    leaf = resolve(_descriptor_of(target), [path[-1]])
    name = ".".join(path)
    if leaf is None:
        raise _invalid(f"{source} parameter {name!r} is not a field")
    if leaf.message_type is not None:
        raise _invalid(f"{source} parameter {name!r} names a message, not a value")
    converted = [_convert(leaf, value, name) for value in values]
    if leaf.is_repeated:
        getattr(target, leaf.name).extend(converted)
    elif len(converted) > 1:
        raise _invalid(f"{source} parameter {name!r} is not repeated")
    else:
        setattr(target, leaf.name, converted[0])


_INT_TYPES = frozenset(
    {
        descriptor.FieldDescriptor.TYPE_INT32, descriptor.FieldDescriptor.TYPE_INT64,
        descriptor.FieldDescriptor.TYPE_UINT32, descriptor.FieldDescriptor.TYPE_UINT64,
        descriptor.FieldDescriptor.TYPE_SINT32, descriptor.FieldDescriptor.TYPE_SINT64,
        descriptor.FieldDescriptor.TYPE_FIXED32, descriptor.FieldDescriptor.TYPE_FIXED64,
        descriptor.FieldDescriptor.TYPE_SFIXED32, descriptor.FieldDescriptor.TYPE_SFIXED64,
    }
)  # fmt: skip
_FLOAT_TYPES = frozenset(
    {descriptor.FieldDescriptor.TYPE_FLOAT, descriptor.FieldDescriptor.TYPE_DOUBLE}
)


def _convert(leaf: descriptor.FieldDescriptor, value: str, name: str) -> object:
    kind = leaf.type
    try:
        if kind == descriptor.FieldDescriptor.TYPE_STRING:
            return value
        if kind in _INT_TYPES:
            number = int(value)
            probe = message_class(cast(descriptor.Descriptor, leaf.containing_type))()
            if not leaf.is_repeated:
                setattr(probe, leaf.name, number)  # raises ValueError when out of range
            return number
        if kind in _FLOAT_TYPES:
            return float(value)
        if kind == descriptor.FieldDescriptor.TYPE_BOOL:
            if value not in ("true", "false", "1", "0"):
                raise ValueError(value)
            return value in ("true", "1")
        if kind == descriptor.FieldDescriptor.TYPE_BYTES:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        if kind == descriptor.FieldDescriptor.TYPE_ENUM:
            enum_type = cast(descriptor.EnumDescriptor, leaf.enum_type)
            enum_value = enum_type.values_by_name.get(value)
            return enum_value.number if enum_value is not None else int(value)
    except (ValueError, TypeError) as err:
        raise _invalid(f"parameter {name!r}: invalid value {value!r}") from err
    raise _invalid(f"parameter {name!r} cannot be set from text")


def _invalid(message: str) -> TranscodeError:
    return TranscodeError(Code.INVALID_ARGUMENT, message)
