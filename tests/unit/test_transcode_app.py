"""transcode.app: the generic transcoder on a test-only service that uses the whole
google.api.http grammar, driven over HTTP in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from agentrouter_auth.http.representation import Representation
from agentrouter_auth.status import Code, RpcError
from agentrouter_auth.transcode import Transcoder, routes_for

from .conftest import Call

# The gRPC code -> HTTP status table of README, REST transcoding.
EXPECTED_HTTP = {
    Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}  # fmt: skip
GRPC_NUMBER = {code: code.value[0] for code in Code}


@pytest.fixture(scope="module")
def app(library: ModuleType) -> Transcoder:
    lib: Any = library

    async def get_book(req: Any) -> Any:
        return lib.Book(name=req.name or f"books/{req.book_id}")

    async def list_books(req: Any) -> Any:
        return lib.ListBooksResponse(echo=req)

    async def create_book(req: Any) -> Any:
        return lib.Book(
            name="created", title=req.book.title, parent=req.parent, pages=req.book.pages
        )

    async def update_book(req: Any) -> Any:
        return req.book

    async def get_file(req: Any) -> Any:
        return lib.File(path=req.path, content=lib.Content(text=f"text of {req.path}"))

    async def cancel_job(req: Any) -> Any:
        return lib.Job(id=req.id, state=f"cancelled: {req.reason}")

    async def search(req: Any) -> Any:
        return lib.SearchResponse(hits=[req.q])

    async def fail(req: Any) -> Any:
        code = next(c for c, n in GRPC_NUMBER.items() if n == req.code)
        raise RpcError(code, f"failed with {code.name}")

    handlers = {
        "GetBook": get_book, "ListBooks": list_books, "CreateBook": create_book,
        "UpdateBook": update_book, "GetFile": get_file, "CancelJob": cancel_job,
        "Search": search, "Fail": fail, "Hidden": fail,
    }  # fmt: skip
    service = lib.DESCRIPTOR.services_by_name["Library"]
    return Transcoder(
        routes_for(service, handlers), responder=Representation(), max_body_bytes=1024
    )


# -- binding ---------------------------------------------------------------------------------


def test_variables_with_patterns_and_additional_bindings(app: Transcoder, call: Call) -> None:
    assert call(app, "GET", "/v1/shelves/s1/books/b1").json() == {"name": "shelves/s1/books/b1"}
    assert call(app, "GET", "/v1/books/42").json() == {"name": "books/42"}
    bad = call(app, "GET", "/v1/books/forty-two")
    assert bad.status_code == 400
    assert "'book_id'" in bad.json()["message"]


def test_query_parameters_fill_the_request(app: Transcoder, call: Call) -> None:
    query = (
        "page_size=5&tags=a&tags=b&order=ORDER_TITLE&include_drafts=true&options.limit=3"
        "&token=AQI&minRating=4.5&unknown=ignored"
    )
    echo = call(app, "GET", f"/v1/shelves/s9/books?{query}").json()["echo"]
    assert echo == {
        "parent": "shelves/s9", "pageSize": 5, "tags": ["a", "b"], "order": "ORDER_TITLE",
        "includeDrafts": True, "options": {"limit": 3}, "token": "AQI=", "minRating": 4.5,
    }  # fmt: skip
    assert call(app, "GET", "/v1/shelves/s9/books?order=1").json()["echo"]["order"] == "ORDER_TITLE"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("page_size=many", "'page_size': invalid value"),
        ("page_size=99999999999", "'page_size': invalid value"),
        ("page_size=1&page_size=2", "'page_size' is not repeated"),
        ("options=1", "'options' names a message"),
        ("include_drafts=maybe", "'include_drafts': invalid value"),
        ("order=ORDER_NONE", "'order': invalid value"),
        ("q=%ff", "query string is not UTF-8"),
    ],
)
def test_malformed_query_values_are_400(
    app: Transcoder, query: str, message: str, call: Call
) -> None:
    response = call(app, "GET", f"/v1/shelves/s9/books?{query}")
    assert response.status_code == 400
    assert message in response.json()["message"]
    assert response.json()["code"] == 3


def test_body_field_and_path_variable(app: Transcoder, call: Call) -> None:
    response = call(app, "POST", "/v1/shelves/s1/books", json={"title": "T", "pages": 3})
    assert response.json() == {"name": "created", "title": "T", "parent": "shelves/s1", "pages": 3}


def test_body_star_with_a_nested_path_variable(app: Transcoder, call: Call) -> None:
    response = call(app, "PATCH", "/v1/shelves/s1/books/b2", json={"book": {"title": "New"}})
    assert response.json() == {"name": "shelves/s1/books/b2", "title": "New"}


def test_double_star_and_response_body(app: Transcoder, call: Call) -> None:
    response = call(app, "GET", "/v1/files/a/b%20c/d.txt")
    assert response.json() == {"text": "text of a/b c/d.txt"}


def test_custom_verb(app: Transcoder, call: Call) -> None:
    response = call(app, "POST", "/v1/jobs/7:cancel", json={"reason": "late"})
    assert response.json() == {"id": "7", "state": "cancelled: late"}
    assert call(app, "POST", "/v1/jobs/7", json={}).status_code == 404
    assert call(app, "POST", "/v1/jobs/7:stop", json={}).status_code == 404


def test_custom_method(app: Transcoder, call: Call) -> None:
    assert call(app, "SEARCH", "/v1/search?q=dune").json() == {"hits": ["dune"]}


# -- HTTP semantics --------------------------------------------------------------------------


def test_unknown_path_is_404_status_json(app: Transcoder, call: Call) -> None:
    response = call(app, "GET", "/v2/nothing")
    assert response.status_code == 404
    assert response.json() == {"code": 5, "message": "no route for /v2/nothing", "details": []}


def test_known_path_wrong_method_is_405_with_allow(app: Transcoder, call: Call) -> None:
    response = call(app, "PUT", "/v1/shelves/s1/books")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS, POST"


def test_head_and_options(app: Transcoder, call: Call) -> None:
    head = call(app, "HEAD", "/v1/books/1")
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(call(app, "GET", "/v1/books/1").content)
    options = call(app, "OPTIONS", "/v1/shelves/s1/books")
    assert options.status_code == 204
    assert options.headers["allow"] == "GET, HEAD, OPTIONS, POST"


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"{nope", {}, 400, "malformed request body"),
        (b'{"title": 5}', {}, 400, "malformed request body"),
        (b'{"no_such_field": 1}', {}, 400, "no_such_field"),
        (b"\xff\xfe", {}, 400, "request body is not UTF-8"),
        (b"x" * 2048, {}, 413, "larger than 1024 bytes"),
    ],
)
def test_bad_bodies(
    app: Transcoder, body: bytes, headers: dict[str, str], status: int, message: str, call: Call
) -> None:
    response = call(app, "POST", "/v1/shelves/s1/books", content=body, headers=headers)
    assert response.status_code == status
    assert message in response.json()["message"]


def test_oversized_chunked_body_is_413(app: Transcoder) -> None:
    def chunks() -> Iterator[bytes]:
        yield from [b"x" * 600, b"y" * 600]

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:

            async def body() -> Any:
                for chunk in chunks():
                    yield chunk

            return await client.post("/v1/shelves/s1/books", content=body())

    assert asyncio.run(go()).status_code == 413


def test_invalid_utf8_in_a_path_variable_is_400(app: Transcoder, call: Call) -> None:
    response = call(app, "GET", "/v1/books/%ff")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["message"]


@pytest.mark.parametrize("code", list(EXPECTED_HTTP))
def test_errors_map_grpc_codes_to_http(app: Transcoder, code: Code, call: Call) -> None:
    response = call(app, "GET", f"/v1/fail/{GRPC_NUMBER[code]}")
    assert response.status_code == EXPECTED_HTTP[code]
    assert response.json() == {
        "code": GRPC_NUMBER[code],
        "message": f"failed with {code.name}",
        "details": [],
    }


# -- what the app tells its caller and its responder ----------------------------------------


def run_app(app: Any, method: str, path: str) -> tuple[dict[str, Any], list[Any]]:
    """One request straight through the ASGI callable: its scope afterwards and what it sent."""
    scope: dict[str, Any] = {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": [],
    }  # fmt: skip
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return scope, sent


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/v1/books/7", ("GetBook", "/v1/books/{book_id}")),
        ("SEARCH", "/v1/search", ("Search", "/v1/search")),
        ("OPTIONS", "/v1/search", ("", "/v1/search")),
        ("PUT", "/v1/shelves/s1/books", ("", "/v1/{parent=shelves/*}/books")),
        ("GET", "/v1/books/x", ("GetBook", "/v1/books/{book_id}")),  # a 400 of a known route
    ],
)
def test_the_app_names_the_route_it_matched(
    app: Transcoder, method: str, path: str, route: tuple[str, str]
) -> None:
    scope, _ = run_app(app, method, path)
    assert scope["route"] == route


def test_an_unrouted_request_names_no_route(app: Transcoder) -> None:
    scope, sent = run_app(app, "GET", "/v2/secret-token")
    assert sent[0]["status"] == 404
    assert "route" not in scope


def test_a_responder_writes_every_answer(library: ModuleType) -> None:
    calls: list[tuple[str, object]] = []

    class Recording:
        async def answer(self, scope: Any, send: Any, answer: object, *, head: bool) -> None:
            calls.append(("answer", answer))

        async def error(self, scope: Any, send: Any, error: Any, *, head: bool) -> None:
            calls.append(("error", error.code))

        async def options(self, scope: Any, send: Any, allow: bytes) -> None:
            calls.append(("options", allow))

    async def get_book(req: Any) -> Any:
        return "a pre-rendered answer"

    service = library.DESCRIPTOR.services_by_name["Library"]
    transcoder = Transcoder(routes_for(service, {"GetBook": get_book}), responder=Recording())
    run_app(transcoder, "GET", "/v1/books/1")
    run_app(transcoder, "GET", "/v1/nothing")
    run_app(transcoder, "OPTIONS", "/v1/books/1")
    assert calls == [("answer", "a pre-rendered answer"), ("error", Code.NOT_FOUND),
                     ("options", b"GET, HEAD, OPTIONS")]  # fmt: skip


def test_response_body_needs_a_message(library: ModuleType, call: Call) -> None:
    async def get_file(req: Any) -> Any:
        return "not a message"

    service = library.DESCRIPTOR.services_by_name["Library"]
    transcoder = Transcoder(routes_for(service, {"GetFile": get_file}), responder=Representation())
    response = call(transcoder, "GET", "/v1/files/a")
    assert response.status_code == 500
    assert response.json()["code"] == Code.INTERNAL.value[0]
