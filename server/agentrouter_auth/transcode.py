"""REST for any annotated gRPC service: routes read from `google.api.http` rules.

A generic transcoder in the manner of grpc-gateway and Envoy's grpc_json_transcoder: it reads
the HTTP rules from service descriptors and knows nothing of any particular service. It
supports the rule grammar of `google/api/http.proto`: literal and variable path segments, `*`,
`**`, `{field=pattern}`, custom verbs, `body` (`*` or a top-level field), `response_body`,
`additional_bindings`, and query parameters mapped to request fields.

Decisions where the rule text leaves room (documented in README.md):
- Unknown query parameters are ignored, so a cache-busting parameter never breaks a verifier;
  a known one with a malformed value is a 400.
- A handler may return a `Prerendered` response instead of a message: bytes rendered once,
  with their ETag and optional gzip form. The transcoder then never serializes per request.
- Errors are `google.rpc.Status` JSON with the usual gRPC-code to HTTP-status mapping.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qsl, unquote_to_bytes

import grpc
from connectrpc.errors import ConnectError
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, json_format, message_factory
from google.protobuf.message import Message

from agentrouter_auth.protojson import compact_json

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
UnaryHandler = Callable[[Message], Awaitable["Message | Prerendered"]]

DEFAULT_MAX_BODY_BYTES = 64 * 1024

# gRPC status code -> HTTP status, as grpc-gateway and Envoy map them (names: grpc.StatusCode).
GRPC_TO_HTTP: dict[int, int] = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409,
    11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip
# Connect names its codes as gRPC does, in lower case, but spells CANCELLED "canceled".
_GRPC_CODE_BY_CONNECT_NAME = {code.name.lower(): code.value[0] for code in grpc.StatusCode} | {
    "canceled": grpc.StatusCode.CANCELLED.value[0]
}


class TranscodeError(Exception):
    """An error with a gRPC status code, answered as google.rpc.Status JSON."""

    def __init__(
        self,
        code: int,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        *,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = tuple(headers)
        self.http_status = http_status or GRPC_TO_HTTP.get(code, 500)


@dataclass(slots=True)
class Outcome:
    """How a request was answered: its HTTP status, gRPC code, RPC name ("" if none) and the
    path template it matched ("" if none: never the raw path, which may carry a credential)."""

    http_status: int
    code: int
    rpc: str
    template: str = ""


class TemplateError(ValueError):
    """A `google.api.http` path template that does not follow the grammar."""


# -- path templates --------------------------------------------------------------------------

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_LITERAL = re.compile(r"[^/{}*:]+$")


@dataclass(frozen=True, slots=True)
class _Variable:
    field_path: tuple[str, ...]
    start: int
    end: int | None  # None: to the end of the path (the pattern ends in `**`)


@dataclass(frozen=True, slots=True)
class PathTemplate:
    """A parsed `google.api.http` path template.

    Segments are literals, `*` (one segment) or `**` (the rest of the path); variables bind a
    run of segments to a request field.
    """

    text: str
    segments: tuple[str, ...]
    variables: tuple[_Variable, ...]
    verb: str | None

    @property
    def literal(self) -> bool:
        """True when every segment is a literal and there is no verb."""
        return self.verb is None and not any(s in ("*", "**") for s in self.segments)

    @classmethod
    def parse(cls, text: str) -> PathTemplate:
        """Parse `text`; raise TemplateError on anything outside the grammar."""
        if not text.startswith("/"):
            raise TemplateError(f"{text!r}: a template starts with '/'")
        body, verb = text[1:], None
        last_slash = body.rfind("/")
        last_brace = body.rfind("}")
        colon = body.rfind(":")
        if colon > max(last_slash, last_brace):
            body, verb = body[:colon], body[colon + 1 :]
            if not _LITERAL.match(verb):
                raise TemplateError(f"{text!r}: bad verb {verb!r}")
        segments: list[str] = []
        variables: list[_Variable] = []
        for token in _split_template(body, text):
            if token.startswith("{"):
                inner = token[1:-1]
                name, _, pattern = inner.partition("=")
                if not _IDENT.match(name):
                    raise TemplateError(f"{text!r}: bad field path {name!r}")
                parts = pattern.split("/") if pattern else ["*"]
                start = len(segments)
                for part in parts:
                    cls._check_segment(part, text, in_variable=True)
                    segments.append(part)
                end = None if parts[-1] == "**" else len(segments)
                variables.append(_Variable(tuple(name.split(".")), start, end))
            else:
                cls._check_segment(token, text, in_variable=False)
                segments.append(token)
        if "**" in segments[:-1]:
            raise TemplateError(f"{text!r}: '**' must be the last segment")
        return cls(text, tuple(segments), tuple(variables), verb)

    @staticmethod
    def _check_segment(segment: str, text: str, *, in_variable: bool) -> None:
        if segment in ("*", "**"):
            return
        if not _LITERAL.match(segment) or (in_variable and "=" in segment):
            where = "in a variable " if in_variable else ""
            raise TemplateError(f"{text!r}: bad segment {where}{segment!r}")

    def match(self, segments: Sequence[str], verb: str | None) -> dict[tuple[str, ...], str] | None:
        """Bind the decoded path `segments` (and verb) to field values, or None on no match."""
        if verb != self.verb:
            return None
        multi = bool(self.segments) and self.segments[-1] == "**"
        count = len(self.segments)
        if (multi and len(segments) < count - 1) or (not multi and len(segments) != count):
            return None
        for pattern, actual in zip(self.segments, segments, strict=False):
            if pattern == "**":
                break
            if pattern == "*":
                if not actual:
                    return None
            elif pattern != actual:
                return None
        return {
            var.field_path: "/".join(segments[var.start : var.end if var.end is not None else None])
            for var in self.variables
        }


def _split_template(body: str, text: str) -> list[str]:
    """Split a template body on '/' outside braces."""
    tokens: list[str] = []
    depth, current = 0, list[str]()
    for char in body:
        if char == "{":
            if depth:
                raise TemplateError(f"{text!r}: nested '{{'")
            depth = 1
        elif char == "}":
            if not depth:
                raise TemplateError(f"{text!r}: unbalanced '}}'")
            depth = 0
        if char == "/" and not depth:
            tokens.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise TemplateError(f"{text!r}: unbalanced '{{'")
    tokens.append("".join(current))
    if any(not token for token in tokens):
        raise TemplateError(f"{text!r}: empty segment")
    return tokens


# -- routes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of an RPC."""

    http_method: str
    template: PathTemplate
    rpc: descriptor.MethodDescriptor
    body: str
    response_body: str
    handler: UnaryHandler = field(compare=False)

    shared_request: Message | None = field(default=None, compare=False)
    """For RPCs whose request has no fields, the one request every call gets (none can
    differ, and building it per call is measurable on the hot path)."""
    rpc_name: str = ""
    """`rpc.name`, read once (a descriptor attribute costs a C call per request)."""

    def __post_init__(self) -> None:
        if not self.rpc_name:  # every route knows its RPC: metrics and logs name it
            object.__setattr__(self, "rpc_name", self.rpc.name)


def rules_of(method: descriptor.MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The HTTP rule of an RPC and its additional bindings (empty when not annotated)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def routes_for(
    service: descriptor.ServiceDescriptor, handlers: Mapping[str, UnaryHandler]
) -> list[Route]:
    """Routes for every annotated RPC of `service` that has a handler (keyed by RPC name)."""
    routes = []
    for method in service.methods:
        handler = handlers.get(method.name)
        if handler is None:
            continue
        for rule in rules_of(method):
            kind = rule.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, path = rule.custom.kind.upper(), rule.custom.path
            else:
                verb, path = kind.upper(), getattr(rule, kind)
            _check_body(method, rule.body, rule.response_body)
            routes.append(
                Route(
                    verb, PathTemplate.parse(path), method, rule.body, rule.response_body, handler
                )
            )
    return routes


def _check_body(method: descriptor.MethodDescriptor, body: str, response_body: str) -> None:
    if body not in ("", "*") and body not in method.input_type.fields_by_name:
        raise TemplateError(f"{method.full_name}: body {body!r} is not a request field")
    if response_body and response_body not in method.output_type.fields_by_name:
        raise TemplateError(f"{method.full_name}: response_body {response_body!r} is not a field")


# -- responses -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prerendered:
    """A response rendered once and served many times, with its validators.

    `alternate_types` are media types a client gets when its Accept header asks for exactly
    one of them (the body is the same).
    """

    body: bytes
    etag: str
    content_type: str = "application/json"
    alternate_types: tuple[str, ...] = ()
    headers: tuple[tuple[bytes, bytes], ...] = ()
    gzip_body: bytes | None = None
    _variants: dict[tuple[str | None, bool], list[tuple[bytes, bytes]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def variant(self, content_type: str | None, *, gzipped: bool) -> list[tuple[bytes, bytes]]:
        """Response headers for one representation, built once and reused.

        `content_type` None is the 304 form: validators and caching headers, no entity ones.
        """
        key = (content_type, gzipped)
        headers = self._variants.get(key)
        if headers is None:
            vary = b"Accept, Accept-Encoding" if self.alternate_types else b"Accept-Encoding"
            headers = [(b"etag", self.etag.encode()), (b"vary", vary), *_CORS, *self.headers]
            if content_type is not None:
                body = self.gzip_body if gzipped and self.gzip_body is not None else self.body
                headers.append((b"content-type", content_type.encode()))
                if gzipped:
                    headers.append((b"content-encoding", b"gzip"))
                headers.append((b"content-length", str(len(body)).encode()))
            self._variants[key] = headers
        return headers


@dataclass(frozen=True, slots=True)
class _Resource:
    """The routes that share one path, by HTTP method, with the `Allow` they imply."""

    methods: dict[str, Route]
    allow: bytes

    @classmethod
    def of(cls, routes: Iterable[Route]) -> _Resource:
        methods: dict[str, Route] = {}
        for route in routes:
            methods.setdefault(route.http_method, route)
        allowed = set(methods) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        return cls(methods, ", ".join(sorted(allowed)).encode())


_CORS = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", b"etag, content-length"),
)


class Transcoder:
    """An ASGI app that answers the REST bindings of its routes."""

    def __init__(
        self, routes: Iterable[Route], *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> None:
        self.routes = tuple(routes)
        self.max_body_bytes = max_body_bytes
        # Routes whose templates are all literal are found by one dict lookup.
        by_path: dict[str, list[Route]] = {}
        self._patterned: list[Route] = []
        for route in self.routes:
            if route.template.literal:
                by_path.setdefault(route.template.text, []).append(route)
            else:
                self._patterned.append(route)
        self._literal = {path: _Resource.of(routes) for path, routes in by_path.items()}

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        """Answer one HTTP request (the ASGI entry point)."""
        await self.handle(scope, receive, send)

    async def handle(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> Outcome:
        """Answer one HTTP request and say how it went."""
        outcome = Outcome(0, 5, "")
        try:
            await self._handle(scope, receive, send, outcome)
        except TranscodeError as err:
            await send_status(send, err, head=scope["method"] == "HEAD")
            outcome.http_status, outcome.code = err.http_status, err.code
        return outcome

    async def _handle(
        self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend, outcome: Outcome
    ) -> None:
        method: str = scope["method"]
        matches = None
        resource = self._literal.get(scope["path"])
        if resource is None:
            matches = self._match(scope)
            if not matches:
                raise TranscodeError(5, f"no route for {scope['path']}")
            resource = _Resource.of([route for route, _ in matches])
            outcome.template = matches[0][0].template.text
        else:
            outcome.template = scope["path"]  # a literal template is its own path
        if method == "OPTIONS":
            await _send_preflight(send, scope, resource.allow)
            outcome.http_status, outcome.code = 204, 0
            return
        route = resource.methods.get("GET" if method == "HEAD" else method)
        if route is None:
            raise TranscodeError(
                12,
                f"method {method} is not allowed on {scope['path']}",
                [(b"allow", resource.allow)],
                http_status=405,
            )
        outcome.rpc = route.rpc_name
        request = route.shared_request
        if request is None:
            bound = {} if matches is None else next(b for r, b in matches if r is route)
            request = await self._build_request(route, bound, scope, receive)
        outcome.http_status = await _call(route, request, scope, send, head=method == "HEAD")
        outcome.code = 0

    def _match(self, scope: ASGIScope) -> list[tuple[Route, dict[tuple[str, ...], str]]]:
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        raw_segments = raw.split(b"?", 1)[0][1:].split(b"/")
        found = []
        for route in self._patterned:
            segments = list(raw_segments)
            verb = None
            if route.template.verb is not None and segments:
                head, sep, tail = segments[-1].rpartition(b":")
                if not sep:
                    continue
                segments[-1], verb = head, _decode(tail)
            bound = route.template.match([_decode(s) for s in segments], verb)
            if bound is not None:
                found.append((route, bound))
        return found

    async def _build_request(
        self,
        route: Route,
        bound: dict[tuple[str, ...], str],
        scope: ASGIScope,
        receive: ASGIReceive,
    ) -> Message:
        request = _message_class(route.rpc.input_type)()
        if not route.body and not bound and not scope.get("query_string"):
            return request
        if route.body:
            raw = await self._read_body(scope, receive)
            target = request if route.body == "*" else getattr(request, route.body)
            if raw.strip():
                try:
                    json_format.Parse(raw, target)
                except json_format.ParseError as err:
                    raise TranscodeError(3, f"malformed request body: {err}") from err
                except UnicodeDecodeError as err:
                    raise TranscodeError(3, "request body is not UTF-8") from err
        for path, value in bound.items():
            _assign(request, path, [value], source="path")
        if route.body != "*":
            query = scope.get("query_string", b"")
            if query:
                self._apply_query(request, route, query)
        return request

    def _apply_query(self, request: Message, route: Route, query: bytes) -> None:
        try:
            pairs = parse_qsl(query.decode("utf-8"), keep_blank_values=True, errors="strict")
        except UnicodeDecodeError as err:
            raise TranscodeError(3, "query string is not UTF-8") from err
        grouped: dict[str, list[str]] = {}
        for name, value in pairs:
            grouped.setdefault(name, []).append(value)
        for name, values in grouped.items():
            path = tuple(name.split("."))
            if route.body and path[0] == route.body:
                continue
            if _resolve(_descriptor_of(request), path) is None:
                continue  # unknown parameters are ignored (see the module docstring)
            _assign(request, path, values, source="query")

    async def _read_body(self, scope: ASGIScope, receive: ASGIReceive) -> bytes:
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise TranscodeError(3, "malformed Content-Length") from None
                if declared > self.max_body_bytes:
                    raise _too_large(self.max_body_bytes)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise TranscodeError(1, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _too_large(self.max_body_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


async def _call(
    route: Route, request: Message, scope: ASGIScope, send: ASGISend, *, head: bool
) -> int:
    """Run the handler and write its answer; return the HTTP status sent."""
    try:
        result = await route.handler(request)
    except ConnectError as err:
        raise TranscodeError(_GRPC_CODE_BY_CONNECT_NAME[err.code.value], err.message) from err
    if isinstance(result, Prerendered):
        return await _send_prerendered(send, result, scope.get("headers") or (), head=head)
    if route.response_body:
        result = getattr(result, route.response_body)
    body = compact_json(result)
    await _send(send, 200, [(b"content-type", b"application/json"), *_CORS], body, head=head)
    return 200


def _too_large(limit: int) -> TranscodeError:
    return TranscodeError(8, f"request body is larger than {limit} bytes", http_status=413)


def _decode(segment: bytes) -> str:
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise TranscodeError(3, "path is not valid UTF-8 after percent-decoding") from None


_MESSAGE_CLASSES: dict[str, type[Message]] = {}


def _message_class(message_descriptor: descriptor.Descriptor) -> type[Message]:
    cls = _MESSAGE_CLASSES.get(message_descriptor.full_name)
    if cls is None:
        cls = message_factory.GetMessageClass(message_descriptor)
        _MESSAGE_CLASSES[message_descriptor.full_name] = cls
    return cls


def _descriptor_of(message: Message) -> descriptor.Descriptor:
    return cast(descriptor.Descriptor, message.DESCRIPTOR)


def _resolve(
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


def _assign(message: Message, path: Sequence[str], values: list[str], *, source: str) -> None:
    """Set the field at `path` from text values, converting to the field's type."""
    target = message
    for name in path[:-1]:
        field_descriptor = _resolve(_descriptor_of(target), [name])
        if field_descriptor is None or field_descriptor.message_type is None:
            raise TranscodeError(3, f"{source} parameter {'.'.join(path)!r} is not a field")
        target = getattr(target, field_descriptor.name)
    leaf = _resolve(_descriptor_of(target), [path[-1]])
    name = ".".join(path)
    if leaf is None:
        raise TranscodeError(3, f"{source} parameter {name!r} is not a field")
    if leaf.message_type is not None:
        raise TranscodeError(3, f"{source} parameter {name!r} names a message, not a value")
    converted = [_convert(leaf, value, name) for value in values]
    if leaf.is_repeated:
        getattr(target, leaf.name).extend(converted)
    elif len(converted) > 1:
        raise TranscodeError(3, f"{source} parameter {name!r} is not repeated")
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
            probe = _message_class(cast(descriptor.Descriptor, leaf.containing_type))()
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
        raise TranscodeError(3, f"parameter {name!r}: invalid value {value!r}") from err
    raise TranscodeError(3, f"parameter {name!r} cannot be set from text")


# -- writing ---------------------------------------------------------------------------------


async def _send(
    send: ASGISend,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    head: bool = False,
) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def send_status(send: ASGISend, error: TranscodeError, *, head: bool = False) -> None:
    """Answer with `error` as a google.rpc.Status JSON body."""
    headers = [(b"content-type", b"application/json"), *_CORS, *error.headers]
    body = json.dumps({"code": error.code, "message": error.message, "details": []}).encode()
    await _send(send, error.http_status, headers, body, head=head)


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
_NEGOTIATED: dict[tuple[bytes, tuple[str, ...], str], str] = {}


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


def _negotiated_type(accept: bytes | None, rendered: Prerendered) -> str:
    if not accept or not rendered.alternate_types:
        return rendered.content_type
    key = (accept, rendered.alternate_types, rendered.content_type)
    chosen = _NEGOTIATED.get(key)
    if chosen is None:
        if len(_NEGOTIATED) >= _PARSED_CACHE_LIMIT:
            _NEGOTIATED.clear()
        ranges = [
            part.split(";")[0].strip().lower() for part in accept.decode("latin-1").split(",")
        ]
        single = len(ranges) == 1 and ranges[0] in rendered.alternate_types
        chosen = _NEGOTIATED[key] = ranges[0] if single else rendered.content_type
    return chosen


async def _send_prerendered(
    send: ASGISend,
    rendered: Prerendered,
    request_headers: Iterable[tuple[bytes, bytes]],
    *,
    head: bool,
) -> int:
    if_none_match = accept = accept_encoding = None
    for name, value in request_headers:
        if name == b"if-none-match":
            if_none_match = value
        elif name == b"accept":
            accept = value
        elif name == b"accept-encoding":
            accept_encoding = value
    if if_none_match is not None and _etag_matches(if_none_match, rendered.etag):
        status, headers, body = 304, rendered.variant(None, gzipped=False), b""
    else:
        gzipped = (
            rendered.gzip_body is not None
            and accept_encoding is not None
            and _accepts_gzip(accept_encoding)
        )
        status = 200
        headers = rendered.variant(_negotiated_type(accept, rendered), gzipped=gzipped)
        body = b"" if head else (rendered.gzip_body if gzipped else rendered.body) or b""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_preflight(send: ASGISend, scope: ASGIScope, allow: bytes) -> None:
    requested = dict(scope.get("headers") or ()).get(b"access-control-request-headers")
    headers = [
        (b"allow", allow),
        (b"access-control-allow-origin", b"*"),
        (b"access-control-allow-methods", allow),
        (b"access-control-max-age", b"86400"),
    ]
    if requested:
        headers.append((b"access-control-allow-headers", requested))
    await _send(send, 204, headers, b"")
