"""http.representation: every response header of a REST answer, decided in one place."""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest

import agentrouter_auth
from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.http.representation import Representation, cache_control, uncached
from agentrouter_auth.rendered import Freshness, Rendered, render_message
from agentrouter_auth.status import Code
from agentrouter_auth.transcode import TranscodeError

JWK_SET = "application/jwk-set+json"


POLICY = Freshness(120, 30, 7200)


def rendered(freshness: Freshness | None = POLICY) -> Rendered[Any]:
    keys = [auth_pb2.JWK(kty="OKP", kid=f"k{n}", use="sig", alg="EdDSA", x="A" * 43)
            for n in range(20)]  # fmt: skip
    return render_message(
        auth_pb2.GetJWKSResponse(keys=keys), freshness=freshness, media_types=(JWK_SET,)
    )


def answer(
    answer: object, headers: dict[str, str] | None = None, *, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    """What Representation writes for `answer`: (status, headers, body)."""
    scope = {"type": "http", "method": method,
             "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()]}  # fmt: skip
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(Representation().answer(scope, send, answer, head=method == "HEAD"))
    start, body = sent
    written = {name.decode(): value.decode() for name, value in start["headers"]}
    assert len(written) == len(start["headers"]), "a header written twice"
    return start["status"], written, body["body"]


def test_a_rendered_answer_is_its_stored_json_with_validators_and_freshness() -> None:
    document = rendered()
    status, headers, body = answer(document)
    assert (status, body) == (200, document.json)
    assert headers == {
        "etag": document.etag,
        "vary": "Accept, Accept-Encoding",
        "access-control-allow-origin": "*",
        "access-control-expose-headers": "etag, content-length",
        "cache-control": "public, max-age=120, stale-while-revalidate=30, stale-if-error=7200",
        "content-type": "application/json",
        "content-length": str(len(document.json)),
    }


def test_an_answer_without_freshness_has_no_cache_control() -> None:
    _, headers, _ = answer(rendered(freshness=None))
    assert "cache-control" not in headers


@pytest.mark.parametrize("if_none_match", ["{etag}", "W/{etag}", '"other", {etag}', "*"])
def test_a_matching_if_none_match_is_304_with_validators_only(if_none_match: str) -> None:
    document = rendered()
    status, headers, body = answer(
        document, {"if-none-match": if_none_match.format(etag=document.etag)}
    )
    assert (status, body) == (304, b"")
    assert headers["etag"] == document.etag
    assert headers["cache-control"].startswith("public, max-age=120")
    assert "content-type" not in headers
    assert "content-length" not in headers


def test_a_stale_if_none_match_gets_the_document() -> None:
    assert answer(rendered(), {"if-none-match": '"stale"'})[0] == 200


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [("gzip", True), ("br, gzip;q=0.5", True), ("x-gzip", True), ("GZIP ; Q=0.5", True),
     ("gzip;q=0", False), ("identity", False), ("gzip;q=bogus", False), ("", False),
     # The highest q wins (RFC 9110 §12.5.3); identity on a tie, gzip only when higher.
     ("gzip;q=0.001, identity;q=0.5", False), ("identity;q=0.5, gzip;q=0.001", False),
     ("gzip;q=0.6, identity;q=0.5", True), ("gzip, identity", False),
     ("gzip;q=0.5, identity;q=0.5", False), ("*", False), ("gzip, *", False),
     ("gzip;q=0.3, *;q=0.2", True),
     # identity unlisted is acceptable, below any coding the client names.
     ("gzip;q=0.001", True),
     # A specific entry overrides `*`, whatever the order.
     ("*, gzip;q=0", False), ("*;q=0, gzip", True), ("*;q=0, gzip;q=0.2, identity;q=0.1", True),
     # identity;q=0 (or *;q=0 without identity) refuses identity: any acceptable gzip is sent.
     ("gzip;q=0.001, identity;q=0", True), ("identity;q=0, *;q=0.1", True),
     ("*;q=0.1, identity;q=0", True),
     # Nothing acceptable left: identity all the same (RFC 9110 §12.5.3's SHOULD), not 406.
     ("identity;q=0", False), ("*;q=0", False), ("gzip;q=0, identity;q=0", False),
     ("br, identity;q=0", False)],
)  # fmt: skip
def test_gzip_when_the_client_accepts_it(accept_encoding: str, gzipped: bool) -> None:
    document = rendered()
    _, headers, body = answer(document, {"accept-encoding": accept_encoding})
    assert ("content-encoding" in headers) is gzipped
    assert (gzip.decompress(body) if gzipped else body) == document.json
    assert headers["content-length"] == str(len(body))
    assert "Accept-Encoding" in headers["vary"]


def test_the_gzip_body_has_its_own_etag_and_validates_only_itself() -> None:
    document = rendered()
    _, zipped, _ = answer(document, {"accept-encoding": "gzip"})
    _, plain, _ = answer(document)
    assert zipped["etag"] != plain["etag"]
    for encoding, tag, other in (("gzip", zipped["etag"], plain["etag"]),
                                 ("identity", plain["etag"], zipped["etag"])):  # fmt: skip
        status, headers, body = answer(
            document, {"accept-encoding": encoding, "if-none-match": tag}
        )
        assert (status, headers["etag"], body) == (304, tag, b"")
        status, headers, _ = answer(document, {"accept-encoding": encoding, "if-none-match": other})
        assert (status, headers["etag"]) == (200, tag)


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [("gzip;q=0.001, identity;q=0.5", False), ("gzip;q=0.1, identity;q=0", True),
     ("*, gzip;q=0", False), ("identity;q=0", False)],
)  # fmt: skip
def test_if_none_match_is_compared_with_the_etag_of_the_coding_chosen(
    accept_encoding: str, gzipped: bool
) -> None:
    document = rendered()
    chosen, other = (
        (document.etag_gzip, document.etag) if gzipped else (document.etag, document.etag_gzip)
    )
    asked = {"accept-encoding": accept_encoding}
    status, headers, body = answer(document, {**asked, "if-none-match": chosen})
    assert (status, headers["etag"], body) == (304, chosen, b"")
    status, headers, body = answer(document, {**asked, "if-none-match": other})
    assert (status, headers["etag"]) == (200, chosen)
    assert (gzip.decompress(body) if gzipped else body) == document.json


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [(JWK_SET, JWK_SET), (f"{JWK_SET}; q=1", JWK_SET),
     (f"{JWK_SET}, application/json", "application/json"), ("*/*", "application/json"),
     ("application/json", "application/json"),
     (f"{JWK_SET};q=0", "application/json"), (f"{JWK_SET} ; Q=0", "application/json"),
     (f"{JWK_SET};q=0.000, */*;q=0.1", "application/json"),
     (f"{JWK_SET};q=0.5, application/json;q=0.4", JWK_SET),
     (f"application/*;q=0.3, {JWK_SET};q=0.4", JWK_SET),
     (f"application/*;q=0.5, {JWK_SET};q=0.4", "application/json"),
     (f"application/json;charset=utf-8;q=0.1, {JWK_SET};q=0.2", JWK_SET),
     (f"{JWK_SET};q=2", "application/json"),  # malformed qvalue: the element is dropped
     (f"{JWK_SET};q=0.1234", "application/json"),
     (f"{JWK_SET};q=-0", "application/json"),
     ("text/html", "application/json"), ("garbage", "application/json"),
     (",,;", "application/json"),
     ("image/*, text/*;q=0", "application/json")],
)  # fmt: skip
def test_the_media_type_accept_prefers_by_q_value(accept: str, content_type: str) -> None:
    document = rendered()
    status, headers, body = answer(document, {"accept": accept})
    assert (status, headers["content-type"]) == (200, content_type)
    assert body == document.json


@pytest.mark.parametrize(
    "accept",
    ["application/json;q=0", f"application/json;q=0, {JWK_SET};q=0.0", "*/*;q=0",
     f"application/*;q=0, {JWK_SET};q=0, */*"],
)  # fmt: skip
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_an_accept_that_refuses_application_json_and_leaves_nothing_is_406(
    accept: str, method: str
) -> None:
    document = rendered()
    status, headers, body = answer(
        document, {"accept": accept, "if-none-match": document.etag}, method=method
    )
    assert status == 406
    assert headers["vary"] == "Accept"
    if method == "GET":
        assert json.loads(body)["code"] == 3
    else:
        assert body == b""


def test_without_a_specific_media_type_accept_is_not_consulted() -> None:
    document = render_message(auth_pb2.GetJWKSResponse(), freshness=POLICY)
    status, headers, _ = answer(document, {"accept": "application/json;q=0"})
    assert (status, headers["content-type"], headers["vary"]) == (
        200, "application/json", "Accept-Encoding")  # fmt: skip


def test_head_has_the_headers_and_no_body() -> None:
    document = rendered()
    _, get, _ = answer(document)
    status, head, body = answer(document, method="HEAD")
    assert (status, body, head) == (200, b"", get)


def test_header_lists_are_built_once_per_answer() -> None:
    document = rendered()
    answer(document)
    built = dict(document.derived)
    assert built  # the first answer built the header list it sent
    answer(document)
    assert document.derived == built
    assert all(document.derived[key] is headers for key, headers in built.items())


def test_a_plain_message_is_compact_json_with_cors() -> None:
    status, headers, body = answer(auth_pb2.GetJWKSResponse(keys=[auth_pb2.JWK(kid="k")]))
    assert (status, body) == (200, b'{"keys":[{"kid":"k"}]}')
    assert headers["access-control-allow-origin"] == "*"
    assert "etag" not in headers


def run(coroutine: Any) -> tuple[int, dict[str, str], bytes]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(coroutine(send))
    start, body = sent
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body["body"]


def test_an_error_is_google_rpc_status_with_cors() -> None:
    error = TranscodeError(Code.UNIMPLEMENTED, "no", allow=b"GET", http_status=405)
    status, headers, body = run(
        lambda send: Representation().error({"method": "PUT"}, send, error, head=False)
    )
    assert status == 405
    assert json.loads(body) == {"code": 12, "message": "no", "details": []}
    assert (headers["allow"], headers["access-control-allow-origin"]) == ("GET", "*")


def test_options_is_a_cors_preflight() -> None:
    scope = {"headers": [(b"access-control-request-headers", b"authorization, x-trace")]}
    status, headers, body = run(
        lambda send: Representation().options(scope, send, b"GET, HEAD, OPTIONS")
    )
    assert (status, body) == (204, b"")
    assert headers["access-control-allow-origin"] == "*"
    assert headers["access-control-allow-methods"] == headers["allow"] == "GET, HEAD, OPTIONS"
    assert headers["access-control-allow-headers"] == "authorization, x-trace"
    assert headers["access-control-max-age"] == "86400"


def test_cache_control_is_written_from_the_freshness_in_whole_seconds() -> None:
    assert cache_control(Freshness(299.9, 60, 86400)) == (
        b"public, max-age=299, stale-while-revalidate=60, stale-if-error=86400"
    )


def test_the_services_own_endpoints_are_never_cached() -> None:
    assert uncached("text/plain", b"abc") == [
        (b"content-type", b"text/plain"), (b"content-length", b"3"), (b"cache-control", b"no-store")
    ]  # fmt: skip


# -- one module writes every response header of the HTTP port ----------------------------------

PACKAGE = Path(agentrouter_auth.__file__).parent
HEADERS_MODULE = PACKAGE / "http" / "representation.py"
# The gRPC port answers in gRPC metadata, not HTTP headers; asgi_types is ASGI's plumbing
# (`respond` sends the headers it is given, `content_length` measures a body).
NOT_ON_THE_HTTP_PORT = (PACKAGE / "grpc", PACKAGE / "asgi_types.py")
HEADER_NAME = re.compile(rb"[a-z][a-z0-9-]*\Z")


def header_writes(tree: ast.AST) -> list[str]:
    """Where a module writes a response header: a `(b"name", value)` pair, an ASGI response
    start it builds, or a call of `respond`."""
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Tuple)
            and len(node.elts) == 2
            and isinstance(first := node.elts[0], ast.Constant)
            and isinstance(first.value, bytes)
            and HEADER_NAME.match(first.value)
        ):
            found.append(f"line {node.lineno}: header {first.value.decode()}")
        elif isinstance(node, ast.Dict) and any(
            isinstance(value, ast.Constant) and value.value == "http.response.start"
            for value in node.values
        ):
            found.append(f"line {node.lineno}: a response start")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "respond":
            found.append(f"line {node.lineno}: respond()")
    return found


def test_every_response_header_of_the_http_port_is_written_in_representation() -> None:
    """README, Development: a response header, for any protocol on the HTTP port, changes in
    http/representation.py (connectrpc writes its protocol's own headers itself)."""
    elsewhere = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == HEADERS_MODULE or any(path.is_relative_to(p) for p in NOT_ON_THE_HTTP_PORT):
            continue
        writes = header_writes(ast.parse(path.read_text(), str(path)))
        if writes:
            elsewhere[str(path.relative_to(PACKAGE))] = writes
    assert not elsewhere, f"response headers written outside http/representation.py: {elsewhere}"
    assert header_writes(ast.parse(HEADERS_MODULE.read_text()))  # the check sees them here
