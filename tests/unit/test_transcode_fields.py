"""transcode.fields: request fields from text (path, query) and from a JSON body."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from agentrouter_auth.status import Code
from agentrouter_auth.transcode.errors import TranscodeError
from agentrouter_auth.transcode.fields import assign, merge_body, merge_query, resolve


def test_fields_are_named_by_proto_camel_case_or_json_name(library: ModuleType) -> None:
    request = library.ListBooksRequest.DESCRIPTOR
    assert resolve(request, ["page_size"]) is resolve(request, ["pageSize"])
    assert resolve(request, ["options", "limit"]).name == "limit"  # type: ignore[union-attr]
    assert resolve(request, ["options", "nope"]) is None
    assert resolve(request, ["page_size", "x"]) is None


def test_query_fills_the_request_and_ignores_unknown_parameters(library: ModuleType) -> None:
    request: Any = library.ListBooksRequest()
    query = b"page_size=5&tags=a&tags=b&order=ORDER_TITLE&options.limit=3&token=AQI&unknown=1"
    merge_query(request, query)
    assert (request.page_size, list(request.tags), request.order) == (5, ["a", "b"], 1)
    assert (request.options.limit, request.token) == (3, b"\x01\x02")


def test_the_body_field_is_not_set_from_the_query(library: ModuleType) -> None:
    request: Any = library.CreateBookRequest()
    merge_query(request, b"book.title=T&parent=p", body_field="book")
    assert (request.book.title, request.parent) == ("", "p")


def test_path_values_convert_to_the_field_type(library: ModuleType) -> None:
    request: Any = library.GetBookRequest()
    assign(request, ("book_id",), ["42"], source="path")
    assert request.book_id == 42


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"{nope", "malformed request body"), (b"\xff\xfe", "request body is not UTF-8"),
     (b'{"no_such_field": 1}', "no_such_field")],
)  # fmt: skip
def test_malformed_bodies_are_invalid_argument(
    library: ModuleType, body: bytes, message: str
) -> None:
    with pytest.raises(TranscodeError) as refused:
        merge_body(body, library.Book())
    assert refused.value.code == Code.INVALID_ARGUMENT
    assert message in refused.value.message


def test_a_blank_body_sets_nothing(library: ModuleType) -> None:
    book = library.Book(title="kept")
    merge_body(b" \n", book)
    assert book.title == "kept"
