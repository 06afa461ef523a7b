"""The batching recorder adds up to exactly what prometheus-client's own calls would; the
next-step gauge counts down to the step the ring will take, never below 0 while on schedule."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from agentrouter_auth import metrics
from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.policy import HOUR, Policy
from agentrouter_auth.keys.ring import Action, KeyRing, due_steps, next_step_at
from agentrouter_auth.keys.store import Entry, Origin, State


def sample_values(histogram: Histogram, protocol: str) -> dict[str, float]:
    return {
        f"{s.name}{s.labels.get('le', '')}": s.value
        for family in histogram.collect()
        for s in family.samples
        if s.labels.get("protocol") == protocol and not s.name.endswith("_created")
    }


def test_flushed_batches_equal_per_request_observations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "perf_counter", lambda: 1000.0)  # a clock that stands still
    reference = Histogram(
        "reference_seconds", "", ["protocol"], buckets=metrics.DURATION_BUCKETS,
        registry=CollectorRegistry(),
    )  # fmt: skip
    recorder = metrics.Recorder(("rest", "grpcweb"))
    before = sample_values(metrics.DURATION, "grpcweb")
    requests_before = metrics.REQUESTS.labels("grpcweb", "GetJWKS", "OK")._value.get()
    delays = [0.00005, 0.0003, 0.002, 0.02, 0.3, 2.0, 0.0001, 0.001]
    for delay in delays:
        recorder.record("grpcweb", "GetJWKS", "OK", 1000.0 - delay)
        reference.labels("grpcweb").observe(delay)
    assert sample_values(metrics.DURATION, "grpcweb") == before  # nothing shared until a flush
    recorder.flush()
    after = sample_values(metrics.DURATION, "grpcweb")
    expected = sample_values(reference, "grpcweb")
    for name, value in expected.items():
        shared = name.replace("reference_seconds", "agentrouter_auth_request_duration_seconds")
        if name.endswith("_sum"):
            assert abs(after[shared] - before.get(shared, 0) - value) < 1e-9
        else:
            assert after[shared] - before.get(shared, 0) == value, name
    requests_after = metrics.REQUESTS.labels("grpcweb", "GetJWKS", "OK")._value.get()
    assert requests_after - requests_before == len(delays)
    recorder.flush()  # a second flush adds nothing
    assert sample_values(metrics.DURATION, "grpcweb") == after


def test_the_recorder_takes_only_the_protocols_it_was_given() -> None:
    recorder = metrics.Recorder(("rest", "grpc"))
    assert recorder.protocols == ("rest", "grpc")
    with pytest.raises(KeyError):
        recorder.record("carrier-pigeon", "GetJWKS", "OK", time.perf_counter())


# -- the next-step gauge ---------------------------------------------------------------------

T0 = 1_700_000_000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def next_step_gauge(collector: metrics.KeySetCollector) -> float:
    (value,) = [
        sample.value
        for family in collector.collect()
        for sample in family.samples
        if sample.name == "agentrouter_auth_next_rotation_step_seconds"
    ]
    return value


def test_next_step_gauge_is_never_negative_while_on_schedule(tmp_path: Path) -> None:
    """A pending successor is not an overdue step: the gauge counts down to its promotion, and
    a step whose time has come reads 0 until the upkeep has had its reload intervals."""
    clock, policy = Clock(), Policy()  # 30d rotation, 1d publish-ahead, 1d retention
    ring = KeyRing(DirectoryStore(tmp_path / "keys"), policy, clock=clock)
    ring.init(["ES256"])
    ring.load()
    collector = metrics.KeySetCollector(ring, reload_interval=2.0, clock=clock)
    pre_publish_at = T0 + policy.rotation_period - policy.publish_ahead
    assert next_step_gauge(collector) == pre_publish_at - T0

    clock.now = pre_publish_at  # the scheduled step: a successor is published, not signing
    assert [change.after for change in ring.step()] == [State.PENDING]
    assert ring.refresh()
    promote_at = pre_publish_at + policy.publish_ahead
    for waited in (0.0, 0.5, HOUR, policy.publish_ahead - 1):
        clock.now = pre_publish_at + waited
        assert next_step_gauge(collector) == promote_at - clock.now > 0

    clock.now = promote_at + 1.5  # due; the upkeep takes it at its next reload interval
    assert next_step_gauge(collector) == 0.0
    entries = ring.key_set.entries
    assert next_step_at(entries, policy) == promote_at
    assert due_steps(entries, promote_at - 0.001, policy) == []
    assert [step.action for step in due_steps(entries, promote_at, policy)] == [Action.PROMOTE]

    assert {change.after for change in ring.step()} == {State.ACTIVE, State.RETIRED}
    ring.refresh()  # the same public set: states change, the snapshot stays
    delete_at = int(clock.now) + policy.retain_after  # before the next pre-publication
    assert next_step_gauge(collector) == delete_at - clock.now > 0

    clock.now = delete_at + collector.grace  # nobody took the step, but it is not late yet
    assert next_step_gauge(collector) == 0.0
    clock.now = delete_at + collector.grace + 1  # overdue, e.g. a read-only store
    assert next_step_gauge(collector) == -(collector.grace + 1)


def test_next_step_gauge_grace_follows_the_reload_interval(tmp_path: Path) -> None:
    clock, policy = Clock(), Policy()
    ring = KeyRing(DirectoryStore(tmp_path / "keys"), policy, clock=clock)
    ring.init(["EdDSA"])
    ring.load()
    due = T0 + policy.rotation_period - policy.publish_ahead
    slow = metrics.KeySetCollector(ring, reload_interval=60.0, clock=clock)
    fast = metrics.KeySetCollector(ring, reload_interval=0.2, clock=clock)
    clock.now = due + 60  # one slow interval late: on schedule for it, overdue for the fast one
    assert next_step_gauge(slow) == 0.0
    assert next_step_gauge(fast) == -60
    assert slow.grace == 2 * 60 + metrics.STEP_GRACE_SECONDS


entry_times = st.integers(min_value=T0 - 100 * 86_400, max_value=T0 + 100 * 86_400)


@st.composite
def manifests(draw: st.DrawFn) -> list[Entry]:
    """Any mix of keys, states, origins and times a manifest can hold."""
    entries = []
    for index in range(draw(st.integers(min_value=0, max_value=6))):
        state = draw(st.sampled_from(list(State)))
        created = draw(entry_times)
        entries.append(
            Entry(
                f"kid{index}",
                draw(st.sampled_from(["ES256", "EdDSA"])),
                state,
                created,
                activated=draw(st.one_of(st.none(), entry_times)),
                retired=draw(st.one_of(st.none(), entry_times)),
                origin=draw(st.sampled_from(list(Origin))),
            )
        )
    return entries


@settings(max_examples=300, deadline=None)
@given(
    entries=manifests(),
    policy=st.sampled_from(
        [Policy(), Policy(rotation_period=4, publish_ahead=2, retain_after=2,
                          max_token_ttl=1, clock_skew=0, cache_max_age=1,
                          stale_while_revalidate=0)]
    ),
)  # fmt: skip
def test_next_step_is_when_due_steps_first_acts(entries: list[Entry], policy: Policy) -> None:
    """The gauge's step time is exactly where the ring's own rule starts to return a step."""
    at = next_step_at(entries, policy)
    if at is None:
        assert due_steps(entries, T0 + 10_000 * 86_400, policy) == []
    else:
        assert due_steps(entries, at, policy)
        assert due_steps(entries, at - 0.001, policy) == []
