"""transcode.templates: the google.api.http path template grammar."""

from __future__ import annotations

import pytest

from agentrouter_auth.transcode.templates import PathTemplate, TemplateError


@pytest.mark.parametrize(
    ("text", "segments", "verb"),
    [
        ("/.well-known/jwks.json", (".well-known", "jwks.json"), None),
        ("/v1/{name=shelves/*/books/*}", ("v1", "shelves", "*", "books", "*"), None),
        ("/v1/{id}:cancel", ("v1", "*"), "cancel"),
        ("/v1/files/{path=**}", ("v1", "files", "**"), None),
        ("/v1/*/x/**", ("v1", "*", "x", "**"), None),
    ],
)
def test_templates_parse(text: str, segments: tuple[str, ...], verb: str | None) -> None:
    template = PathTemplate.parse(text)
    assert template.segments == segments
    assert template.verb == verb


@pytest.mark.parametrize(
    "text",
    ["v1/x", "/v1//x", "/v1/{a{b}}", "/v1/{a", "/v1/a}", "/v1/**/x", "/v1/{9bad}", "/v1/{a=b=c}"],
)
def test_bad_templates_are_refused(text: str) -> None:
    with pytest.raises(TemplateError):
        PathTemplate.parse(text)


@pytest.mark.parametrize(
    ("text", "path", "verb", "bound"),
    [
        ("/v1/{name=shelves/*/books/*}", "v1/shelves/s/books/b", None,
         {("name",): "shelves/s/books/b"}),
        ("/v1/files/{path=**}", "v1/files/a/b/c", None, {("path",): "a/b/c"}),
        ("/v1/files/{path=**}", "v1/files", None, {("path",): ""}),
        ("/v1/{id}:cancel", "v1/7", "cancel", {("id",): "7"}),
        ("/v1/{id}:cancel", "v1/7", None, None),
        ("/v1/{book.name=shelves/*}", "v1/shelves/x", None, {("book", "name"): "shelves/x"}),
        ("/v1/{name=shelves/*}", "v1/shelves/", None, None),  # `*` needs a segment
        ("/v1/x", "v1/y", None, None),
    ],
)  # fmt: skip
def test_templates_bind_path_variables(
    text: str, path: str, verb: str | None, bound: dict[tuple[str, ...], str] | None
) -> None:
    assert PathTemplate.parse(text).match(path.split("/"), verb) == bound


def test_only_templates_without_wildcards_or_verbs_are_literal() -> None:
    assert PathTemplate.parse("/.well-known/jwks.json").literal
    assert not PathTemplate.parse("/v1/{id}").literal
    assert not PathTemplate.parse("/v1/x:run").literal
