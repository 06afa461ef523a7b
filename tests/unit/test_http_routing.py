"""Routing on the path as sent: an encoded `/` is no separator, an encoded unreserved
character is the character (RFC 3986 §6.2.2.2), on every row of the HTTP port."""

from __future__ import annotations

from typing import Any

import pytest

from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.transcode import request_path

from .conftest import Call


def scope(raw_path: bytes | None, path: str = "/decoded") -> dict[str, Any]:
    request: dict[str, Any] = {"type": "http", "path": path}
    if raw_path is not None:
        request["raw_path"] = raw_path
    return request


@pytest.mark.parametrize(
    ("raw", "routed"),
    [
        (b"/.well-known%2Fjwks.json", "/.well-known%2Fjwks.json"),
        (b"/.well-known%2fjwks.json", "/.well-known%2Fjwks.json"),
        (b"/%2Ewell-known/jwks.json", "/.well-known/jwks.json"),
        (b"/%2e%77ell-known/jwks%2Ejson", "/.well-known/jwks.json"),
        (b"/a%7E%5F%2D%30", "/a~_-0"),
        (b"/a%20b%3a%25%3F", "/a%20b%3A%25%3F"),  # reserved and others: kept, upper case
        (b"/a%2", "/a%2"),  # not an escape
        (b"/%2Fa?x=%2F", "/%2Fa"),  # the query is not the path (httpx's raw_path has it)
        (b"/%C3%A9", "/%C3%A9"),  # not ASCII: kept encoded, as sent
    ],
)
def test_the_routed_path_keeps_what_is_not_unreserved_encoded(raw: bytes, routed: str) -> None:
    assert request_path(scope(raw)) == routed


def test_without_an_escape_or_raw_path_the_decoded_path_is_routed() -> None:
    assert request_path(scope(b"/x/y", "/x/y")) == "/x/y"
    assert request_path(scope(None, "/a/b")) == "/a/b"


JWKS = "/.well-known/jwks.json"
RPC = "/agentrouter.auth.v1.AuthService/GetJWKS"


@pytest.mark.parametrize(
    "url",
    [
        "/.well-known%2Fjwks.json",
        "/%2Ewell-known%2fjwks.json",
        "/agentrouter.auth.v1.AuthService%2FGetJWKS?encoding=json&message=%7B%7D",
        "/%2Fagentrouter.auth.v1.AuthService/GetJWKS?encoding=json&message=%7B%7D",
        "/healthz%2F",
        "/%2Fhealthz",
    ],
)
def test_an_encoded_slash_routes_nowhere(http_app: HttpApp, call: Call, url: str) -> None:
    response = call(http_app, "GET", url)
    assert response.status_code == 404, url


@pytest.mark.parametrize(
    ("url", "like"),
    [
        ("/%2Ewell-known/jwks%2Ejson", JWKS),
        ("/%68ealthz", "/healthz"),
        ("/agentrouter%2Eauth.v1.AuthService/GetJWKS?encoding=json&message=%7B%7D", RPC
         + "?encoding=json&message=%7B%7D"),
    ],
)  # fmt: skip
def test_an_encoded_unreserved_character_routes_as_itself(
    http_app: HttpApp, call: Call, url: str, like: str
) -> None:
    response, plain = call(http_app, "GET", url), call(http_app, "GET", like)
    assert (response.status_code, response.content) == (200, plain.content)
