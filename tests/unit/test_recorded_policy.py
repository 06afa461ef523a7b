"""The rotation policy a store records for its ring, in a directory's manifest and in the
PostgreSQL ring state: a rotating ring records its own when none is, refuses to take steps under
another (keyring health NOT_SERVING, one log line), and a manifest written before policies were
recorded is adopted. Tests that take `store_factory` run against both stores."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.http.health import _reason as readiness_reason
from agentrouter_auth.keys.directory import MANIFEST, DirectoryStore
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import KeyStoreError, PolicyConflictError, RecordedPolicy
from agentrouter_auth.keys.transfer import copy_keys
from tests.conftest import Seeder
from tests.keystores import StoreFactory

T0 = 1_700_000_000
FAST = Policy(rotation_period=40, publish_ahead=20, retain_after=10, max_token_ttl=5,
              clock_skew=0, cache_max_age=5, stale_while_revalidate=0)  # fmt: skip
SLOW = Policy(rotation_period=80, publish_ahead=40, retain_after=10, max_token_ttl=5,
              clock_skew=0, cache_max_age=5, stale_while_revalidate=0)  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def _conflicts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if getattr(record, "event", None) == "rotation_step_failed"
    ]


def test_the_store_records_the_rotation_policy_and_reads_it_back(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    store_factory.seed(key_pool[:1])
    assert store_factory().read().policy is None
    with store_factory().transaction() as tx:
        tx.record_policy(RecordedPolicy.of(FAST))
    assert store_factory().read().policy == RecordedPolicy.of(FAST)
    with store_factory().transaction() as tx:
        tx.record_policy(RecordedPolicy.of(SLOW))
    key_set = store_factory().read()
    assert key_set.policy == RecordedPolicy.of(SLOW)
    assert [stored.kid for stored in key_set.keys] == [key_pool[0]["kid"]]


def test_a_rotating_server_records_its_policy_and_one_with_another_takes_no_step(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    KeyRing(store_factory(), FAST, clock=clock).init(["ES256"])
    fast = KeyRing(store_factory(), FAST, clock=clock, rotating=True)
    fast.load()
    assert fast.check_writable()
    assert store_factory().read().policy == RecordedPolicy.of(FAST)
    slow = KeyRing(store_factory(), SLOW, clock=clock, rotating=True)
    caplog.set_level(logging.INFO)
    slow.load()
    with pytest.raises(PolicyConflictError) as refused:
        slow.check_policy()  # what `serve` does before binding a port
    assert str(RecordedPolicy.of(FAST)) in str(refused.value)
    assert str(RecordedPolicy.of(SLOW)) in str(refused.value)
    assert "--rotation-period 40s, --publish-ahead 20s" in str(refused.value)
    assert not slow.status().serving, "a server with another policy reports healthy"
    assert len(_conflicts(caplog)) == 1
    clock.now += SLOW.rotation_period  # steps are due under either policy
    assert not slow.due()
    with pytest.raises(PolicyConflictError):
        slow.step()
    assert not slow.check_writable()
    assert len(_conflicts(caplog)) == 1  # one log line, however often it is tried
    assert len(store_factory().read().keys) == 1  # the slow ring wrote nothing
    assert fast.due()
    assert fast.step()
    assert fast.status().serving


def test_a_running_ring_stops_its_steps_when_the_recorded_policy_changes(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    KeyRing(store_factory(), FAST, clock=clock).init(["ES256"])
    ring = KeyRing(store_factory(), FAST, clock=clock, rotating=True)
    ring.load()
    assert ring.check_writable()
    assert ring.status().serving
    caplog.set_level(logging.INFO)
    with store_factory().transaction() as tx:  # `keys policy --set` with the slow options
        tx.record_policy(RecordedPolicy.of(SLOW))
    ring.refresh()
    assert not ring.status().serving
    (line,) = _conflicts(caplog)
    assert "records the rotation policy --rotation-period 1m20s" in line
    clock.now += FAST.rotation_period
    assert not ring.due()
    with store_factory().transaction() as tx:  # and back: the steps resume
        tx.record_policy(RecordedPolicy.of(FAST))
    ring.refresh()
    assert ring.status().serving
    assert ring.due()


def test_a_ring_that_does_not_rotate_ignores_the_recorded_policy(
    store_factory: StoreFactory,
) -> None:
    KeyRing(store_factory(), FAST).init(["ES256"])
    with store_factory().transaction() as tx:
        tx.record_policy(RecordedPolicy.of(FAST))
    cli = KeyRing(store_factory(), SLOW)  # `keys list`, `token sign`, `serve --rotation off`
    cli.load()
    assert cli.status().serving
    cli.rotate()
    assert store_factory().read().policy == RecordedPolicy.of(FAST)


def test_a_manifest_written_before_policies_were_recorded_is_adopted(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Seeder
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[:2])
    document = json.loads((store.path / MANIFEST).read_text())
    assert set(document) == {"format", "keys"}  # what every earlier version wrote
    ring = KeyRing(DirectoryStore(store.path), FAST, rotating=True)
    ring.load()
    assert ring.check_writable()
    document = json.loads((store.path / MANIFEST).read_text())
    assert document["policy"] == {"rotation_period": 40.0, "publish_ahead": 20.0,
                                  "retain_after": 10.0}  # fmt: skip
    assert len(document["keys"]) == 2


@pytest.mark.parametrize(
    "policy",
    [{"rotation_period": 40}, {"rotation_period": -1, "publish_ahead": 1, "retain_after": 1},
     {"rotation_period": "1d", "publish_ahead": 1, "retain_after": 1}, [40, 20, 10]],
)  # fmt: skip
def test_a_malformed_recorded_policy_is_refused(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Seeder, policy: object
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[:1])
    document = json.loads((store.path / MANIFEST).read_text())
    document["policy"] = policy
    (store.path / MANIFEST).write_text(json.dumps(document))
    with pytest.raises(KeyStoreError, match="corrupt manifest: a rotation policy"):
        DirectoryStore(store.path).read()


def test_keys_copy_carries_the_recorded_policy(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    store_factory.seed(key_pool[:2])
    with store_factory().transaction() as tx:
        tx.record_policy(RecordedPolicy.of(SLOW))
    target = store_factory.fresh()
    copy_keys(store_factory(), target())
    copied = target().read()
    assert copied.policy == RecordedPolicy.of(SLOW)
    assert len(copied.keys) == 2


def test_the_loser_of_two_rotating_servers_started_together_is_told_the_policies_differ(
    store_factory: StoreFactory,
) -> None:
    """Attack F8b: both start on a store with no recorded policy (both pass the check before
    binding), the first records its own; the second's start check then meets it. Its readiness
    reason must say the policies differ, not that the store cannot be written."""
    clock = Clock()
    KeyRing(store_factory(), FAST, clock=clock).init(["ES256"])
    fast = KeyRing(store_factory(), FAST, clock=clock, rotating=True)
    slow = KeyRing(store_factory(), SLOW, clock=clock, rotating=True)
    fast.load()
    slow.load()
    slow.check_policy()  # nothing recorded yet: both pass the check before binding
    assert fast.check_writable()
    assert not slow.check_writable()
    assert not slow.status().serving
    reason = readiness_reason(slow.status())
    assert "rotation policy" in reason, f"the loser is told: {reason!r}"
    assert "cannot be written" not in reason
    assert fast.status().serving
