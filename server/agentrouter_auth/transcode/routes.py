"""Routes read from the `google.api.http` rules of a service descriptor, and finding the one
a request names.

One rule gives one route per binding (the rule and its `additional_bindings`); the routes that
share a path make a resource, whose methods give the `Allow` header.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_to_bytes

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor
from google.protobuf.message import Message

from agentrouter_auth.asgi_types import Scope
from agentrouter_auth.status import Code
from agentrouter_auth.transcode.errors import TranscodeError
from agentrouter_auth.transcode.fields import message_class
from agentrouter_auth.transcode.templates import PathTemplate, TemplateError

Handler = Callable[[Any], Awaitable[object]]
"""Answers one RPC: takes its request message, returns what the responder writes."""
Bindings = dict[tuple[str, ...], str]
"""Path variables bound to the request fields they name."""
RouteName = tuple[str, str]
"""How metrics and logs name a route: (its RPC, or "" for none; its path template)."""


_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def request_path(scope: Scope) -> str:
    """The path to route a request on: the path as sent (ASGI `raw_path`), with escapes of
    unreserved characters decoded (RFC 3986 §6.2.2.2: `%2E` is `.`) and every other escape
    kept, in upper case, so that an encoded `/` (`%2F`) never separates segments as a `/`
    does. Without `raw_path` (an ASGI server may omit it), the decoded path: the only one
    there is.

    `scope["path"]` is decoded before any routing could see it, so `/a%2Fb` and `/a/b` are
    the same string there; a route must never match the one as the other.
    """
    raw: bytes | None = scope.get("raw_path")
    if not raw or b"%" not in raw:  # nothing encoded: the decoded path is the path as sent
        return str(scope["path"])
    return _ESCAPE.sub(_normalized, raw.split(b"?", 1)[0]).decode("utf-8", "surrogateescape")


def _normalized(escape: re.Match[bytes]) -> bytes:
    octet = int(escape[1], 16)
    return bytes((octet,)) if octet in _UNRESERVED else b"%" + escape[1].upper()


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of an RPC."""

    http_method: str
    template: PathTemplate
    rpc: descriptor.MethodDescriptor
    body: str
    response_body: str
    handler: Handler = field(compare=False)
    shared_request: Message | None = field(default=None, compare=False)
    """For RPCs whose request has no fields and no body, the one request every call gets
    (none can differ, and building it per call is measurable on the hot path)."""
    name: RouteName = ("", "")
    """(`rpc.name`, the template's text), read once: a descriptor attribute costs a C call."""

    def __post_init__(self) -> None:
        if not self.name[0]:
            object.__setattr__(self, "name", (self.rpc.name, self.template.text))


def rules_of(method: descriptor.MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The HTTP rule of an RPC and its additional bindings (empty when not annotated)."""
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule: http_pb2.HttpRule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def routes_for(
    service: descriptor.ServiceDescriptor, handlers: Mapping[str, Handler]
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
            shared = None
            if not rule.body and not method.input_type.fields:
                shared = message_class(method.input_type)()
            template = PathTemplate.parse(path)
            routes.append(
                Route(verb, template, method, rule.body, rule.response_body, handler, shared)
            )
    return routes


def _check_body(method: descriptor.MethodDescriptor, body: str, response_body: str) -> None:
    if body not in ("", "*") and body not in method.input_type.fields_by_name:
        raise TemplateError(f"{method.full_name}: body {body!r} is not a request field")
    if response_body and response_body not in method.output_type.fields_by_name:
        raise TemplateError(f"{method.full_name}: response_body {response_body!r} is not a field")


@dataclass(frozen=True, slots=True)
class Resource:
    """The routes that share one path, by HTTP method, with the `Allow` they imply."""

    methods: dict[str, Route]
    allow: bytes
    name: RouteName
    """The resource's name for a request no method of it answers: no RPC, the template."""

    @classmethod
    def of(cls, routes: Iterable[Route]) -> Resource:
        """The resource of `routes` (all on one path; the first route of a method wins)."""
        methods: dict[str, Route] = {}
        for route in routes:
            methods.setdefault(route.http_method, route)
        allowed = set(methods) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        template = next(iter(methods.values())).template.text
        return cls(methods, ", ".join(sorted(allowed)).encode(), ("", template))


class Router:
    """Finds the resource a request path names: literal paths by one dict lookup, templates
    with variables, wildcards or a verb by matching each in turn."""

    def __init__(self, routes: Iterable[Route]) -> None:
        by_path: dict[str, list[Route]] = {}
        self.patterned: list[Route] = []
        for route in routes:
            if route.template.literal:
                by_path.setdefault(route.template.text, []).append(route)
            else:
                self.patterned.append(route)
        self.literal = {path: Resource.of(routes) for path, routes in by_path.items()}

    def match(self, scope: Scope) -> tuple[Resource, list[tuple[Route, Bindings]]]:
        """The resource of a path no literal route has, and each route's path variables."""
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        raw_segments = raw.split(b"?", 1)[0][1:].split(b"/")
        found: list[tuple[Route, Bindings]] = []
        for route in self.patterned:
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
        if not found:
            raise TranscodeError(Code.NOT_FOUND, f"no route for {scope['path']}")
        return Resource.of(route for route, _ in found), found


def _decode(segment: bytes) -> str:
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        raise TranscodeError(
            Code.INVALID_ARGUMENT, "path is not valid UTF-8 after percent-decoding"
        ) from None
