"""Prometheus metrics, summed across worker processes.

Request counters and latency histograms use prometheus-client's multiprocess mode when
`PROMETHEUS_MULTIPROC_DIR` is set (`agentrouter-auth serve` sets it for its workers), so a
scrape of any worker reports the sum over all of them. The key-set gauges are computed at
scrape time from the scraping worker's key ring: every worker follows the same store.

Metric names follow Prometheus conventions: base units, `_total` for counters, `_seconds`
for durations and ages.
"""

from __future__ import annotations

import bisect
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing, next_step_at
from agentrouter_auth.keys.store import Entry, State

MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR" in os.environ
CONTENT_TYPE = CONTENT_TYPE_LATEST

REQUESTS = Counter(
    "agentrouter_auth_requests",
    "Requests answered, by protocol, RPC method and gRPC status code.",
    ["protocol", "method", "code"],
)
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
DURATION = Histogram(
    "agentrouter_auth_request_duration_seconds",
    "Time from a request's arrival to its response, by protocol.",
    ["protocol"],
    buckets=DURATION_BUCKETS,
)
NOT_MODIFIED = Counter(
    "agentrouter_auth_not_modified",
    "REST and Connect GET requests answered 304 Not Modified (the client's copy is current).",
)
RELOAD_FAILURES = Counter(
    "agentrouter_auth_reload_failures",
    "Key-store reloads that failed and kept the last good set, counted in every worker.",
)
WORKER = Gauge(
    "agentrouter_auth_worker",
    "1 for each live server worker process, labelled by pid.",
    multiprocess_mode="liveall",
)

STEP_GRACE_SECONDS = 10.0
"""Besides two reload intervals, how late a due lifecycle step may be taken and seen by every
worker (an RSA key is generated in that time) before the next-step gauge calls it overdue."""


class Recorder:
    """Counts requests in plain Python numbers and hands them to prometheus-client in batches.

    prometheus-client's multiprocess values take a lock and write a memory-mapped file on every
    increment; at tens of thousands of requests per second per core that alone would cost more
    than answering. So the request path only bumps local counters (one dict update and one
    bucket index), and `flush` adds them to the shared metrics: the upkeep loop calls it every
    reload interval, and /metrics calls it before answering. Only the event-loop thread
    touches a Recorder.

    `protocols` are the values of the `protocol` label: the HTTP listener's dispatch table
    names its protocols, and the gRPC listener adds its own.
    """

    def __init__(self, protocols: Iterable[str]) -> None:
        self.protocols = tuple(protocols)
        self._bounds = (*tuple(DURATION_BUCKETS), float("inf"))
        self._counts: dict[tuple[str, str, str], int] = {}
        self._buckets = {protocol: [0] * len(self._bounds) for protocol in self.protocols}
        self._sums = dict.fromkeys(self.protocols, 0.0)
        self._not_modified = 0

    def record(self, protocol: str, method: str, code: str, started: float) -> None:
        """One answered request that arrived at `started` (a `time.perf_counter()` value)."""
        elapsed = time.perf_counter() - started
        self._buckets[protocol][bisect.bisect_left(self._bounds, elapsed)] += 1
        self._sums[protocol] += elapsed
        key = (protocol, method, code)
        self._counts[key] = self._counts.get(key, 0) + 1

    def not_modified(self) -> None:
        """One request answered 304 (REST or Connect GET)."""
        self._not_modified += 1

    def flush(self) -> None:
        """Add everything recorded since the last flush to the shared metrics."""
        counts, self._counts = self._counts, {}
        for labels, count in counts.items():
            REQUESTS.labels(*labels).inc(count)
        for protocol, buckets in self._buckets.items():
            if not any(buckets):
                continue
            child = DURATION.labels(protocol)
            # prometheus-client has no bulk observe: add to the same values observe() would.
            for index, count in enumerate(buckets):
                if count:
                    child._buckets[index].inc(count)
                    buckets[index] = 0
            child._sum.inc(self._sums[protocol])
            self._sums[protocol] = 0.0
        if self._not_modified:
            NOT_MODIFIED.inc(self._not_modified)
            self._not_modified = 0


class KeySetCollector(Collector):
    """Gauges describing the key set, computed when scraped.

    `reload_interval` is how often each worker takes due lifecycle steps and reloads the store:
    a step that came due less than two intervals (plus `STEP_GRACE_SECONDS`) ago is on schedule.
    """

    def __init__(
        self,
        ring: KeyRing,
        *,
        reload_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ring = ring
        self.grace = 2 * reload_interval + STEP_GRACE_SECONDS
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        """The key-set gauges at this moment."""
        ring, now = self.ring, self._clock()
        status = ring.status()
        keys = GaugeMetricFamily(
            "agentrouter_auth_keys", "Keys in the published set, by state.", labels=["state"]
        )
        counts = dict.fromkeys((state.value for state in State), 0)
        age = GaugeMetricFamily(
            "agentrouter_auth_active_key_age_seconds",
            "Seconds since the active key of each algorithm started signing.",
            labels=["alg"],
        )
        entries = ring.key_set.entries if status.loaded else ()
        for entry in entries:
            counts[entry.state.value] += 1
            if entry.state is State.ACTIVE:
                since = entry.activated if entry.activated is not None else entry.created
                age.add_metric([entry.alg], now - since)
        for state, count in counts.items():
            keys.add_metric([state], count)
        yield keys
        yield age
        yield GaugeMetricFamily(
            "agentrouter_auth_next_rotation_step_seconds",
            "Seconds until the policy's next lifecycle step is due; 0 while a due step waits "
            "for the next reload; negative: overdue.",
            value=next_step_seconds(entries, ring.policy, now, self.grace),
        )
        yield GaugeMetricFamily(
            "agentrouter_auth_last_reload_success_timestamp_seconds",
            "Unix time of the last successful key-store load.",
            value=status.loaded_at or 0.0,
        )
        yield GaugeMetricFamily(
            "agentrouter_auth_key_set_healthy",
            "1 when the last key-store reload succeeded, 0 while the last good set is served.",
            value=1.0 if status.healthy else 0.0,
        )
        yield GaugeMetricFamily(
            "agentrouter_auth_key_store_up",
            "1 when the key store answered the last reload, 0 while it cannot be reached.",
            value=1.0 if status.reachable else 0.0,
        )
        yield GaugeMetricFamily(
            "agentrouter_auth_rotation_failing",
            "1 while lifecycle steps cannot be written to the key store (read-only, full, "
            "locked), from the last step or write check until a step succeeds; 0 otherwise.",
            value=1.0 if status.rotation_error is not None else 0.0,
        )
        yield GaugeMetricFamily(
            "agentrouter_auth_future_dated_keys",
            "Keys dated later than now plus --clock-skew (written while a clock ran ahead).",
            value=float(len(status.future_dated)),
        )
        yield GaugeMetricFamily(
            "agentrouter_auth_unlisted_key_files",
            "Key files in the store that its manifest does not list: ignored, never published.",
            value=float(status.unlisted),
        )


def next_step_seconds(entries: Sequence[Entry], policy: Policy, now: float, grace: float) -> float:
    """Seconds from `now` until the next lifecycle step is due, for the next-step gauge.

    0 while a step that came due at most `grace` ago waits for a worker's upkeep to take it
    (that is on schedule); negative once it is later than that (overdue: the store may be
    read-only, or nothing rotates it); NaN when no step will ever be due.
    """
    at = next_step_at(entries, policy)
    if at is None:
        return math.nan
    remaining = at - now
    return 0.0 if -grace <= remaining < 0 else remaining


def registry_for(ring: KeyRing, *, reload_interval: float = 2.0) -> CollectorRegistry:
    """What /metrics exposes: every worker's counters (summed) and this worker's key set."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in (REQUESTS, DURATION, NOT_MODIFIED, RELOAD_FAILURES, WORKER):
            registry.register(collector)
    registry.register(KeySetCollector(ring, reload_interval=reload_interval))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)


def worker_started() -> None:
    """Mark this process as a live worker."""
    WORKER.set(1)


def worker_stopped() -> None:
    """Drop this process's live gauges from the multiprocess files."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
