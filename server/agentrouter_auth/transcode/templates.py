"""`google.api.http` path templates: parsing and matching.

The grammar of `google/api/http.proto`: literal and variable path segments, `*` (one segment),
`**` (the rest of the path), `{field=pattern}` and a custom verb after the last `:`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from agentrouter_auth.errors import AgentRouterAuthError


class TemplateError(AgentRouterAuthError, ValueError):
    """A `google.api.http` path template that does not follow the grammar."""


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
