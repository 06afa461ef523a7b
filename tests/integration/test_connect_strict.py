"""Connect and gRPC-Web hold clients to the protocol: a GET message that is not base64, a JSON
message that is not an object and a request body that cannot be read are `invalid_argument`
(HTTP 400, or grpc-status 3), never a success or a `canceled` — over raw sockets and httpx
against the real server."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentrouter.auth.v1 import auth_pb2

from .serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv

pytestmark = pytest.mark.integration
CONNECT = "/agentrouter.auth.v1.AuthService/GetJWKS"
JSON = {"content-type": "application/json"}
GRPC_WEB_JSON = {"content-type": "application/grpc-web+json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    keys_dir = tmp_path_factory.mktemp("strict") / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off")) as running:
        yield running
        assert running.terminate() == 0


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def envelope(payload: bytes) -> bytes:
    """One gRPC-Web data frame."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def grpc_web_status(response: httpx.Response) -> str | None:
    """grpc-status of a trailers-only answer or of the trailers frame ending the body."""
    if "grpc-status" in response.headers:
        return response.headers["grpc-status"]
    body, position = response.content, 0
    while position + 5 <= len(body):
        flags, length = body[position], int.from_bytes(body[position + 1 : position + 5], "big")
        if flags & 0x80:
            for line in body[position + 5 : position + 5 + length].decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "grpc-status":
                    return value.strip()
        position += 5 + length
    return None


def exchange(port: int, request: bytes, *, half_close: bool = False) -> tuple[int, bytes]:
    """Send raw bytes on a new connection; return the answer's HTTP status and body, or
    (0, b"") when the server closes the connection without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(request)
        if half_close:
            raw.shutdown(socket.SHUT_WR)
        with raw.makefile("rb") as reply:
            status_line = reply.readline()
            if not status_line:
                return 0, b""
            length = 0
            while (line := reply.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            return int(status_line.split()[1]), reply.read(length)


def counted(server: ServerProcess, protocol: str, code: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text  # one worker: exact counts
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "agentrouter_auth_requests_total"
        and sample.labels == {"protocol": protocol, "method": "GetJWKS", "code": code}
    )


def test_connect_get_message_must_be_valid_base64(http: httpx.Client) -> None:
    empty_json = base64.urlsafe_b64encode(b"{}").decode()  # "e30="
    binary = b"\x7a\x06\xfb\xef\xbe\xff\xff\xff"  # field 15, unknown: skipped
    assert auth_pb2.GetJWKSRequest.FromString(binary).ByteSize() == len(binary)  # parses
    cases = {
        ("proto", "!!!@@@"): 400,  # no base64 at all (connectrpc decoded it to b"")
        ("proto", "QUJD!"): 400,  # one stray character
        ("json", "e30 "): 400,  # a blank inside
        ("json", "e3"): 400,  # bytes and a half
        ("json", "e30=="): 400,  # too much padding
        ("json", "e30=e30="): 400,  # padding in the middle
        ("json", "e-0+"): 400,  # both alphabets at once
        ("json", "A"): 400,  # a length no encoding produces
        ("json", empty_json): 200,  # url-safe, padded
        ("json", empty_json.rstrip("=")): 200,  # url-safe, unpadded
        ("proto", ""): 200,  # the empty message
        ("proto", base64.urlsafe_b64encode(binary).decode().rstrip("=")): 200,  # "-_" alphabet
        ("proto", base64.standard_b64encode(binary).decode()): 200,  # "+/" alphabet, padded
    }
    wrong = {}
    for (encoding, message), expected in cases.items():
        params = {"encoding": encoding, "base64": "1", "message": message}
        response = http.get(CONNECT, params=params)
        got = (response.status_code, response.json().get("code") if response.is_error else None)
        if got != (expected, "invalid_argument" if expected == 400 else None):
            wrong[(encoding, message)] = got
    assert wrong == {}


def test_a_json_message_must_be_an_object(server: ServerProcess, http: httpx.Client) -> None:
    """protobuf's JSON parser takes `[]` and `"x"` for an empty message; Connect does not."""
    not_objects = [b"[]", b'"x"', b" [] ", b"1", b"null", b"[{}]", b"\xef\xbb\xbf{}"]
    before = counted(server, "grpcweb", "INVALID_ARGUMENT")
    wrong = {}
    for message in not_objects:
        post = http.post(CONNECT, content=message, headers=JSON)
        get = http.get(CONNECT, params={"encoding": "json", "message": message.decode("utf-8")})
        web = http.post(CONNECT, content=envelope(message), headers=GRPC_WEB_JSON)
        got = (
            (post.status_code, post.json().get("code") if post.is_error else None),
            (get.status_code, get.json().get("code") if get.is_error else None),
            (web.status_code, grpc_web_status(web)),
        )
        if got != ((400, "invalid_argument"), (400, "invalid_argument"), (200, "3")):
            wrong[message] = got
    assert wrong == {}
    assert counted(server, "grpcweb", "INVALID_ARGUMENT") == before + len(not_objects)
    for blank in (b"{}", b" \t\r\n{ }\n", b'{"unknown": [1]}'):  # objects are fine
        assert http.post(CONNECT, content=blank, headers=JSON).status_code == 200
        ok = http.post(CONNECT, content=envelope(blank), headers=GRPC_WEB_JSON)
        assert grpc_web_status(ok) == "0"


def chunked(content_type: str, body: bytes) -> bytes:
    head = (f"POST {CONNECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    return head.encode() + body


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n{}\r\n0\r\n\r\n",  # a chunk size that is not hex
        b"2\r\n{}\r\nzz\r\n",  # ... after a good chunk
        b"2\r\n{}XX0\r\n\r\n",  # a chunk without its CRLF
        b"-2\r\n{}\r\n0\r\n\r\n",  # a negative size
    ],
)
def test_a_malformed_chunked_body_is_invalid_argument(server: ServerProcess, body: bytes) -> None:
    before = {code: counted(server, "connect", code) for code in ("INVALID_ARGUMENT", "CANCELLED")}
    status, answer = exchange(server.http_port, chunked("application/json", body))
    assert status == 400
    assert json.loads(answer)["code"] == "invalid_argument"
    after = {code: counted(server, "connect", code) for code in before}
    assert after == {"INVALID_ARGUMENT": before["INVALID_ARGUMENT"] + 1,
                     "CANCELLED": before["CANCELLED"]}  # fmt: skip

    frame_body = body.replace(b"{}", b"\x00\x00")  # same framing, gRPC-Web content
    status, answer = exchange(server.http_port, chunked("application/grpc-web+proto", frame_body))
    assert status == 200
    reply = httpx.Response(200, content=answer)
    assert grpc_web_status(reply) == "3"


def test_bodies_that_end_early_or_on_time(server: ServerProcess) -> None:
    """granian reports a body cut short by the client shutting its sending side exactly as a
    malformed one (one `http.disconnect`), so both are a 400. A complete body followed by the
    same shutdown is a call like any other: answered OK (granian then drops the answer, as
    hyper closes a half-closed connection), never counted as malformed or cancelled."""
    head = f"POST {CONNECT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    short = (head + "Content-Length: 10\r\n\r\n{}").encode()
    status, answer = exchange(server.http_port, short, half_close=True)
    assert (status, json.loads(answer)["code"]) == (400, "invalid_argument")
    status, _ = exchange(server.http_port, chunked("application/json", b"2\r\n{"), half_close=True)
    assert status == 400

    codes = ("OK", "INVALID_ARGUMENT", "CANCELLED")
    before = {code: counted(server, "connect", code) for code in codes}
    whole = (head + "Content-Length: 2\r\n\r\n{}").encode()
    exchange(server.http_port, whole, half_close=True)
    exchange(
        server.http_port, chunked("application/json", b"2\r\n{}\r\n0\r\n\r\n"), half_close=True
    )
    expected = {"OK": before["OK"] + 2, "INVALID_ARGUMENT": before["INVALID_ARGUMENT"],
                "CANCELLED": before["CANCELLED"]}  # fmt: skip
    deadline = time.monotonic() + 10  # the answer may be recorded after the socket closed
    while (after := {code: counted(server, "connect", code) for code in codes}) != expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert after == expected
