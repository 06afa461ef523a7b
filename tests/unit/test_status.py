"""status: one table from grpc.StatusCode to each transport's name for it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from connectrpc.code import Code as ConnectCode

from agentrouter_auth import status
from agentrouter_auth.status import Code

# The HTTP status of each code, as README, REST transcoding lists them.
EXPECTED_HTTP = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429, Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409, Code.OUT_OF_RANGE: 400, Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503, Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}  # fmt: skip


def test_every_code_has_the_http_status_the_readme_lists() -> None:
    assert {code: status.http_status(code) for code in Code} == EXPECTED_HTTP


def test_connect_names_are_connectrpcs_own() -> None:
    """Connect spells CANCELLED "canceled"; every other name is gRPC's in lower case."""
    names = {code: status.connect_name(code) for code in Code if code is not Code.OK}
    assert set(names.values()) == {code.value for code in ConnectCode}
    assert names[Code.CANCELLED] == ConnectCode.CANCELED.value
    for code, name in names.items():
        assert status.from_connect_name(name) is code
    assert status.from_connect_name("no_such_code") is Code.UNKNOWN


@pytest.mark.parametrize("code", list(Code))
def test_numbers_and_labels_are_grpcs(code: grpc.StatusCode) -> None:
    assert status.number(code) == code.value[0]
    assert status.from_number(status.number(code)) is code
    assert status.label(code) == code.name


def test_an_unknown_number_is_unknown() -> None:
    assert status.from_number(99) is Code.UNKNOWN


@pytest.mark.parametrize(
    ("http", "code"),
    [(200, Code.OK), (204, Code.OK), (304, Code.OK), (400, Code.INVALID_ARGUMENT),
     (404, Code.NOT_FOUND), (405, Code.UNIMPLEMENTED), (408, Code.DEADLINE_EXCEEDED),
     (413, Code.RESOURCE_EXHAUSTED), (415, Code.UNIMPLEMENTED), (429, Code.RESOURCE_EXHAUSTED),
     (499, Code.CANCELLED), (500, Code.UNKNOWN), (503, Code.UNAVAILABLE), (418, Code.UNKNOWN)],
)  # fmt: skip
def test_an_http_status_alone_stands_for_one_code(http: int, code: Code) -> None:
    assert status.from_http(http) is code


def test_each_code_reads_back_from_its_own_http_status_where_that_is_unique() -> None:
    for code, http in EXPECTED_HTTP.items():
        if list(EXPECTED_HTTP.values()).count(http) == 1:
            assert status.from_http(http) is code


# -- the project cites only files in the project --------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
GUIDE = "DESIGN" + ".md"  # spelt apart, so that this file does not cite it either


def test_no_project_file_cites_the_design_guide_that_is_not_in_it() -> None:
    assert not (REPO / GUIDE).exists()
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout.decode().split("\0")  # fmt: skip
    citing = []
    for name in filter(None, tracked):
        path = REPO / name
        if path.is_file() and GUIDE.encode() in path.read_bytes():
            citing.append(name)
    assert not citing, f"cite {GUIDE}, which is not in the repository: {citing}"
