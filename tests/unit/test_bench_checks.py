"""bench/run.py's pure logic: the "Must hold" list evaluated on made-up measurements, the
gRPC-Web answer check."""

from __future__ import annotations

from typing import Any

import pytest

from bench.run import Check, Report, Result, checks, grpc_web_status

ROTATED = {"seconds": 20.0, "rotation_steps": 21, "non_2xx": 0, "socket_errors": 0}


def result(rps: float, p99_ms: float = 1.0) -> Result:
    return Result(target="t", tool="wrk", rps=rps, p50_ms=0.5, p99_ms=p99_ms, requests=1)


def report(rps: dict[str, float], **extras: Any) -> Report:
    made = Report(duration=1, rounds=1, concurrency=32, machine={})
    made.results = {name: result(value) for name, value in rps.items()}
    made.extras = {
        "rotation": ROTATED,
        "replica_rotation": {**ROTATED, "steps_taken_twice": 0, "errors_logged": 0},
        "rss_mb_after_load": {"workers": [60.0]},
        **extras,
    }
    return made


# Every ratio at its bound: REST 1000; Connect GET 900 = 0.9 x REST (and 0.604 x Go's
# 1490); POST JSON and gRPC-Web 750 = 0.75 x REST; Go's REST 1000 = 1.0 x; gRPC 400 = 0.8 x 500.
AT_BOUNDS: dict[str, float] = {
    "rest_http1": 1000,
    "connect_get": 900,
    "connect_post_json": 750,
    "grpc_web": 750,
    "go_rest_http1": 1000,
    "go_connect_get": 1490,
    "grpc": 400,
    "go_grpc": 500,
}


def by_requirement(found: list[Check]) -> dict[str, bool]:
    return {check.requirement: check.passed for check in found}


def test_every_requirement_holds_at_its_bound() -> None:
    found = checks(report(AT_BOUNDS))
    assert len(found) == 11  # 6 ratios, 2 latencies, 2 rotations, RSS
    failed = [check.line() for check in found if not check.passed]
    assert failed == []
    assert all(check.line().startswith("PASS  ") for check in found)


@pytest.mark.parametrize(
    ("name", "rps", "requirement"),
    [
        ("connect_get", 899, "Connect GET ≥ 0.9 x our REST"),
        ("connect_post_json", 749, "Connect POST JSON ≥ 0.75 x our REST"),
        ("grpc_web", 749, "gRPC-Web ≥ 0.75 x our REST"),
        ("go_rest_http1", 1001, "REST ≥ 1.0 x the Go peer's REST"),
        ("go_connect_get", 1501, "Connect GET ≥ 0.6 x the Go peer's Connect GET"),
        ("go_grpc", 501, "gRPC ≥ 0.8 x the Go peer's gRPC"),
    ],
)
def test_a_ratio_below_its_bound_fails_that_line_only(
    name: str, rps: float, requirement: str
) -> None:
    found = by_requirement(checks(report({**AT_BOUNDS, name: rps})))
    assert found[requirement] is False
    assert [r for r, passed in found.items() if not passed] == [requirement]


def test_a_missing_measurement_fails_and_says_so() -> None:
    found = checks(report({k: v for k, v in AT_BOUNDS.items() if k != "go_grpc"}))
    line = next(c for c in found if c.requirement == "gRPC ≥ 0.8 x the Go peer's gRPC")
    assert line.line() == "FAIL  gRPC ≥ 0.8 x the Go peer's gRPC: not measured"


def test_p99_of_five_ms_fails() -> None:
    made = report(AT_BOUNDS)
    made.results["connect_get"].p99_ms = 5.0
    made.results["rest_http1"].p99_ms = 4.99
    found = by_requirement(checks(made))
    assert found["p99 < 5 ms for Connect GET at 32 connections"] is False
    assert found["p99 < 5 ms for REST at 32 connections"] is True


@pytest.mark.parametrize(
    "facts",
    [
        {**ROTATED, "non_2xx": 1},
        {**ROTATED, "socket_errors": 3},
        {**ROTATED, "rotation_steps": 0},  # no key rotated: the load proved nothing
        {**ROTATED, "rotation_steps": 9},  # fewer than one step every two seconds
    ],
)
def test_rotation_fails_on_an_error_or_without_rotating(facts: dict[str, Any]) -> None:
    found = by_requirement(checks(report(AT_BOUNDS, rotation=facts)))
    assert found["0 errors while a key rotates every second (one server)"] is False


def test_replica_rotation_fails_on_a_step_taken_twice_or_an_error_logged() -> None:
    replicas = "0 errors while a key rotates every second (replicas on PostgreSQL)"
    for fault in ("steps_taken_twice", "errors_logged"):
        facts = {**ROTATED, "steps_taken_twice": 0, "errors_logged": 0, fault: 1}
        assert by_requirement(checks(report(AT_BOUNDS, replica_rotation=facts)))[replicas] is False


def test_rss_is_judged_by_the_largest_worker() -> None:
    requirement = "RSS per worker ≤ 72 MB"
    at_bound = report(AT_BOUNDS, rss_mb_after_load={"workers": [12.0, 72.0]})
    assert by_requirement(checks(at_bound))[requirement] is True
    above = report(AT_BOUNDS, rss_mb_after_load={"workers": [72.1, 12.0]})
    assert by_requirement(checks(above))[requirement] is False
    assert by_requirement(checks(report(AT_BOUNDS, rss_mb_after_load={})))[requirement] is False


MESSAGE = b"\x0a\x03abc"


def test_grpc_web_status_reads_the_trailers_frame_after_the_message() -> None:
    ok = b"\x00\x00\x00\x00\x05" + MESSAGE + b"\x80\x00\x00\x00\x10grpc-status: 0\r\n"
    assert grpc_web_status(ok, MESSAGE) == "0"
    # Any case of the trailer's name, no space, and other trailers before it.
    other = (
        b"\x00\x00\x00\x00\x05"
        + MESSAGE
        + b"\x80\x00\x00\x00\x21Grpc-Message: x\r\nGRPC-STATUS:13\r\n"
    )
    assert grpc_web_status(other, MESSAGE) == "13"


@pytest.mark.parametrize(
    "answer",
    [
        b"\x80\x00\x00\x00\x11grpc-status: 14\r\n",  # an error: trailers only
        b"\x00\x00\x00\x00\x05\x0a\x03abd\x80\x00\x00\x00\x10grpc-status: 0\r\n",  # other bytes
        b"\x00\x00\x00\x00\x05" + MESSAGE,  # no trailers frame
    ],
)
def test_grpc_web_status_is_none_unless_the_message_comes_first(answer: bytes) -> None:
    assert grpc_web_status(answer, MESSAGE) is None
