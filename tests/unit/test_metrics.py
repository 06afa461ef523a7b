"""The batching recorder adds up to exactly what prometheus-client's own calls would."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from agentrouter_auth import metrics


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
    recorder = metrics.Recorder()
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
