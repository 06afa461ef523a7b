"""transcode.routes: routes from google.api.http rules, and the route a request names."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.status import Code
from agentrouter_auth.transcode.errors import TranscodeError
from agentrouter_auth.transcode.routes import Resource, Router, routes_for


async def handler(request: Any) -> Any:
    return request


def library_routes(library: ModuleType) -> list[Any]:
    service = library.DESCRIPTOR.services_by_name["Library"]
    return routes_for(service, {method.name: handler for method in service.methods})


def scope(path: str) -> dict[str, Any]:
    return {"path": path, "raw_path": path.encode()}


def test_only_annotated_methods_get_routes(library: ModuleType) -> None:
    routes = library_routes(library)
    names = {route.rpc.name for route in routes}
    assert "Hidden" not in names
    assert len([r for r in routes if r.rpc.name == "GetBook"]) == 2  # additional binding
    assert {(r.http_method, r.template.text) for r in routes if r.rpc.name == "Search"} == {
        ("SEARCH", "/v1/search")
    }


def test_methods_without_a_handler_get_no_route(library: ModuleType) -> None:
    service = library.DESCRIPTOR.services_by_name["Library"]
    routes = routes_for(service, {"Search": handler})
    assert [route.rpc.name for route in routes] == ["Search"]


def test_a_route_is_named_by_its_rpc_and_template(library: ModuleType) -> None:
    names = {route.name for route in library_routes(library)}
    assert ("GetFile", "/v1/files/{path=**}") in names
    assert ("CancelJob", "/v1/jobs/{id}:cancel") in names


def test_a_request_without_fields_is_built_once() -> None:
    (route,) = routes_for(auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
                          {"GetJWKS": handler})  # fmt: skip
    assert route.shared_request == auth_pb2.GetJWKSRequest()


def test_requests_with_fields_are_built_per_call(library: ModuleType) -> None:
    assert all(route.shared_request is None for route in library_routes(library))


def test_a_resource_allows_its_methods_head_and_options(library: ModuleType) -> None:
    path = "/v1/{parent=shelves/*}/books"
    routes = [route for route in library_routes(library) if route.template.text == path]
    resource = Resource.of(routes)
    assert resource.allow == b"GET, HEAD, OPTIONS, POST"
    assert resource.name == ("", "/v1/{parent=shelves/*}/books")


def test_the_router_finds_literal_paths_by_lookup_and_binds_the_others(
    library: ModuleType,
) -> None:
    router = Router(library_routes(library))
    assert set(router.literal) == {"/v1/search"}
    resource, found = router.match(scope("/v1/shelves/s1/books"))
    assert set(resource.methods) == {"GET", "POST"}
    assert {route.rpc.name: bound for route, bound in found} == {
        "ListBooks": {("parent",): "shelves/s1"},
        "CreateBook": {("parent",): "shelves/s1"},
    }


@pytest.mark.parametrize(
    ("path", "code"),
    [("/v2/nothing", Code.NOT_FOUND), ("/v1/jobs/7:stop", Code.NOT_FOUND),
     ("/v1/books/%ff", Code.INVALID_ARGUMENT)],
)  # fmt: skip
def test_the_router_refuses_what_no_route_takes(library: ModuleType, path: str, code: Code) -> None:
    with pytest.raises(TranscodeError) as refused:
        Router(library_routes(library)).match(scope(path))
    assert refused.value.code == code
