"""http.app: whatever arrives over HTTP, the app answers with a proper status, never a 500.

The whole HTTP app (transcoder, Connect, gRPC-Web, health, metrics) is driven in-process with
generated requests: methods, paths with percent-escapes and invalid UTF-8, query strings,
content types and bodies.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrouter_auth.http.app import HttpApp

from .conftest import Call

segment = st.one_of(
    st.sampled_from([".well-known", "jwks.json", "agentrouter.auth.v1.AuthService", "GetJWKS",
                     "healthz", "readyz", "metrics", "%ff", "%2F", "..", "", "a:b"]),
    st.text(alphabet="abc%0123456789fF:.-_~", max_size=12),
)  # fmt: skip
paths = st.lists(segment, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
content_types = st.sampled_from(
    ["", "application/json", "application/proto", "application/grpc-web+proto",
     "application/grpc-web+json", "application/grpc", "application/connect+json",
     "text/plain", "application/xml", "application/json; charset=utf-8"]
)  # fmt: skip


@pytest.mark.slow  # measured: ~2 s
@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "SEARCH"]),
    path=paths,
    query=st.text(alphabet="a=&%ff0-9xyzmessageencodingjsonbase64{}", max_size=40),
    content_type=content_types,
    body=st.one_of(st.binary(max_size=300), st.sampled_from([b"{}", b"{", b"\x00\x00\x00\x00\x00",
                                                              b"\x00\x00\x00\x00\x10"])),
    accept=st.sampled_from(["", "*/*", "application/jwk-set+json", "text/html;q=0"]),
    encoding=st.sampled_from(["", "gzip", "br", "gzip;q=0", "identity, *;q=0", "bogus"]),
)  # fmt: skip
def test_no_request_gets_a_500(
    http_app: HttpApp,
    call: Call,
    method: str,
    path: str,
    query: str,
    content_type: str,
    body: bytes,
    accept: str,
    encoding: str,
) -> None:
    headers = {"authorization": "Bearer fuzz"}
    for name, value in (("content-type", content_type), ("accept", accept),
                        ("accept-encoding", encoding)):  # fmt: skip
        if value:
            headers[name] = value
    url = path + ("?" + query if query else "")
    response = call(http_app, method, "http://fuzz" + url, headers=headers, content=body)
    assert response.status_code < 500 or response.status_code == 501, (
        method,
        url,
    )  # 501: UNIMPLEMENTED
    assert 100 <= response.status_code < 600
