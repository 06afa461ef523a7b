"""grpc.budget: health Watch streams, health Checks and other calls each have their own pool,
bounded per worker (and Watch per connection). (Enforced against the real server in
tests/integration/test_grpc_limits.py.)"""

from __future__ import annotations

from agentrouter_auth.config import GrpcLimits
from agentrouter_auth.grpc.budget import CallBudget
from agentrouter_auth.grpc.health import HEALTH_CHECK, HEALTH_WATCH

GET_JWKS = "/agentrouter.auth.v1.AuthService/GetJWKS"


def test_the_call_budget_keeps_watch_check_and_other_calls_apart() -> None:
    budget = CallBudget(GrpcLimits(max_calls=2, max_watches=3, max_connection_watches=2))
    watches, checks, calls = (budget.pool(m) for m in (HEALTH_WATCH, HEALTH_CHECK, GET_JWKS))
    assert len({id(watches), id(checks), id(calls)}) == 3
    full = "this worker is serving its limit of 2 calls"
    assert [calls.take("") for _ in range(3)] == [None, None, full]
    assert checks.take("") is None  # the call pool is full; Check has its own
    assert [watches.take("a"), watches.take("a")] == [None, None]
    assert watches.take("a") == "this connection holds its limit of 2 health Watch streams"
    assert watches.take("b") is None
    assert watches.take("c") == "this worker is serving its limit of 3 health Watch streams"
    watches.give_back("a")
    assert (watches.take("c"), watches.used) == (None, 3)
    calls.give_back("")
    assert calls.take("") is None
