"""grpc.budget: health Watch streams, health Checks, reflection streams and other calls each
have their own pool, bounded per worker, per client address and (all but the call pool) per
connection. (Enforced against the real server in tests/integration/test_grpc_limits.py.)"""

from __future__ import annotations

import pytest

from agentrouter_auth.config import ConfigError, GrpcLimits
from agentrouter_auth.grpc.budget import CallBudget, peer_address
from agentrouter_auth.grpc.health import HEALTH_CHECK, HEALTH_WATCH

GET_JWKS = "/agentrouter.auth.v1.AuthService/GetJWKS"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
A1, A2, B1, C1 = "ipv4:10.0.0.1:1001", "ipv4:10.0.0.1:1002", "ipv4:10.0.0.2:1001", "ipv6:[::1]:7"


def test_the_call_budget_keeps_watch_check_reflection_and_other_calls_apart() -> None:
    budget = CallBudget(
        GrpcLimits(max_calls=2, max_watches=3, max_connection_watches=2, max_address_share=100)
    )
    pools = [budget.pool(m) for m in (HEALTH_WATCH, HEALTH_CHECK, REFLECTION, GET_JWKS)]
    watches, checks, reflections, calls = pools
    assert len({id(pool) for pool in pools}) == 4
    full = "this worker is serving its limit of 2 calls"
    assert [calls.take(A1) for _ in range(3)] == [None, None, full]
    assert checks.take(A1) is None  # the call pool is full; Check has its own
    assert reflections.take(A1) is None  # and so has reflection
    assert [watches.take(A1), watches.take(A1)] == [None, None]
    assert watches.take(A1) == "this connection holds its limit of 2 health Watch streams"
    assert watches.take(A2) is None
    assert watches.take(B1) == "this worker is serving its limit of 3 health Watch streams"
    watches.give_back(A1)
    assert (watches.take(B1), watches.used) == (None, 3)
    calls.give_back(A1)
    assert calls.take(A1) is None


def test_one_address_holds_at_most_its_share_of_each_pool() -> None:
    budget = CallBudget(GrpcLimits(max_calls=10, max_connection_checks=3, max_address_share=40))
    calls, checks = budget.pool(GET_JWKS), budget.pool(HEALTH_CHECK)
    # 4 of 10 per address, whatever the connection: A1 and A2 are one address.
    assert [calls.take(peer) for peer in (A1, A2, A1, A2)] == [None] * 4
    refused = "this client address holds its limit of 4 calls"
    assert (calls.take(A2), calls.take(B1), calls.take(C1)) == (refused, None, None)
    calls.give_back(A1)
    assert calls.take(A2) is None
    assert [checks.take(A1) for _ in range(4)][-1] == (
        "this connection holds its limit of 3 health Check calls"
    )
    assert checks.take(A2) is None  # the address's fourth
    assert CallBudget(GrpcLimits(max_watches=1)).pool(HEALTH_WATCH).take(A1) is None  # >= 1


def test_peer_address_drops_the_port_only() -> None:
    assert [peer_address(p) for p in (A1, C1, "unix:/run/s.sock", "")] == [
        "ipv4:10.0.0.1",
        "ipv6:[::1]",
        "unix:/run/s.sock",
        "",
    ]


def test_the_address_share_is_a_percentage() -> None:
    with pytest.raises(ConfigError, match="at most 100"):
        GrpcLimits(max_address_share=101)
