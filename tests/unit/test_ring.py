"""The key ring: lifecycle under a fake clock, last-good reloads, signing, imports, races.

Tests that take `store_factory` run against every store: a directory, and PostgreSQL."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto import jwk
from jwcrypto import jwt as jose_jwt

from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.material import generate_key
from agentrouter_auth.keys.policy import DAY, HOUR, Policy
from agentrouter_auth.keys.registry import open_store
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.schedule import next_events
from agentrouter_auth.keys.signing import SigningError
from agentrouter_auth.keys.store import Entry, KeyStore, KeyStoreError, State
from agentrouter_auth.snapshot import KeySetError
from tests.keystores import StoreFactory

T0 = 1_700_000_000
PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ring_at(where: Path | KeyStore, clock: Clock, policy: Policy | None = None) -> KeyRing:
    store = DirectoryStore(where) if isinstance(where, Path) else where
    return KeyRing(store, policy or Policy(), clock=clock)


def states(ring: KeyRing) -> dict[str, str]:
    return {k.kid: k.entry.state.value for k in ring.store.read().keys}


def published(ring: KeyRing) -> list[str]:
    return [key["kid"] for key in json.loads(ring.snapshot().json)["keys"]]


def test_lifecycle_walks_at_the_policys_times(store_factory: StoreFactory) -> None:
    clock = Clock()
    policy = Policy()  # 30d rotation, 1d publish-ahead, 1d retention
    ring = ring_at(store_factory(), clock, policy)
    (created,) = ring.init(["ES256"])
    first = created.kid
    ring.load()

    clock.now = T0 + policy.rotation_period - policy.publish_ahead - 1
    assert ring.step() == []
    clock.now += 1
    (pre_published,) = ring.step()
    second = pre_published.kid
    assert (pre_published.before, pre_published.after) == (None, State.PENDING)
    assert ring.refresh()
    assert sorted(published(ring)) == sorted([first, second])
    assert ring.signer("ES256")["kid"] == first  # published, but not signing yet

    clock.now = T0 + policy.rotation_period - 1
    assert ring.step() == []
    clock.now += 1
    changes = {c.kid: (c.before, c.after) for c in ring.step()}
    assert changes == {first: (State.ACTIVE, State.RETIRED), second: (State.PENDING, State.ACTIVE)}
    ring.refresh()
    assert ring.signer("ES256")["kid"] == second
    assert states(ring) == {first: "retired", second: "active"}

    clock.now = T0 + policy.rotation_period + policy.retain_after - 1
    assert ring.step() == []
    assert first in published(ring)
    clock.now += 1
    (deleted,) = ring.step()
    assert (deleted.kid, deleted.before, deleted.after) == (first, State.RETIRED, None)
    assert ring.refresh()
    assert published(ring) == [second]
    assert states(ring) == {second: "active"}
    if store_factory.kind == "directory":
        assert not (Path(store_factory.location) / f"{first}.jwk.json").exists()


def test_manual_rotation_signs_only_after_publish_ahead(store_factory: StoreFactory) -> None:
    clock = Clock()
    ring = ring_at(store_factory(), clock)
    (first,) = ring.init(["EdDSA"])
    (second,) = ring.rotate()
    assert ring.rotate() == []  # a successor is already pending: nothing more
    clock.now = T0 + DAY - 1
    assert ring.step() == []
    clock.now = T0 + DAY
    assert {c.kid for c in ring.step()} == {first.kid, second.kid}
    assert states(ring) == {first.kid: "retired", second.kid: "active"}


def test_a_failed_reload_keeps_the_last_good_set_and_loses_nothing(
    tmp_path: Path, key_pool: list[jwk.JWK]
) -> None:
    ring = ring_at(tmp_path, Clock())
    ring.init(["ES256", "EdDSA"])
    good = ring.load()
    on_disk = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    bad = DirectoryStore(tmp_path).key_file(ring.signer("EdDSA")["kid"])
    original = bad.read_bytes()
    bad.write_text('{"kty": "oct", "k": "c2VjcmV0"}')
    assert ring.refresh() is False
    assert ring.snapshot() is good
    status = ring.status()
    assert not status.healthy
    assert status.error is not None
    assert bad.name in status.error
    bad.write_bytes(original)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == on_disk

    ring.refresh()
    assert ring.status().healthy
    assert ring.snapshot().json == good.json

    for path in tmp_path.glob("*.json"):
        path.unlink()  # every key gone: an empty set is never published
    assert ring.refresh() is False
    assert ring.snapshot().json == good.json
    assert "empty" in str(ring.status().error)


def test_an_empty_store_will_not_load(store_factory: StoreFactory) -> None:
    with pytest.raises(KeySetError, match="empty"):
        ring_at(store_factory(), Clock()).load()


def test_restart_renders_the_same_bytes(store_factory: StoreFactory) -> None:
    clock = Clock()
    ring = ring_at(store_factory(), clock)
    ring.init(["RS256", "ES256", "EdDSA"])
    ring.rotate(["ES256"])
    first = ring.load()
    again = ring_at(store_factory(), clock).load()
    assert (again.json, again.proto, again.etag) == (first.json, first.proto, first.etag)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_signed_tokens_verify_against_the_published_set(
    store_factory: StoreFactory, alg: str
) -> None:
    clock = Clock(now=__import__("time").time())
    ring = ring_at(store_factory(), clock)
    ring.init([alg])
    snapshot = ring.load()
    token = ring.sign({"sub": "svc-a", "aud": "agentrouter"}, ttl=600)

    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == alg
    assert header["kid"] == ring.signer(alg)["kid"]
    jwks = pyjwt.PyJWKSet.from_dict(json.loads(snapshot.json))
    claims = pyjwt.decode(
        token, key=jwks[header["kid"]].key, algorithms=[alg], audience="agentrouter"
    )
    assert claims["sub"] == "svc-a"
    assert claims["exp"] - claims["iat"] == 600

    keyset = jwk.JWKSet.from_json(snapshot.json.decode())
    verified = jose_jwt.JWT(jwt=token, key=keyset, expected_type="JWS")
    assert json.loads(verified.claims)["sub"] == "svc-a"

    other = generate_key(alg)  # a key that is not published must not verify
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(
            token,
            key=pyjwt.PyJWK(json.loads(other.export_public())).key,
            algorithms=[alg],
            audience="agentrouter",
        )


def test_signing_refuses_what_the_policy_forbids(store_factory: StoreFactory) -> None:
    ring = ring_at(store_factory(), Clock())
    ring.init(["ES256", "EdDSA"])
    ring.load()
    with pytest.raises(SigningError, match="at most --max-token-ttl"):
        ring.sign({}, ttl=2 * HOUR)
    with pytest.raises(SigningError, match="exp is set from --ttl"):
        ring.sign({"exp": 1})
    with pytest.raises(SigningError, match="no active RS256 key"):
        ring.sign({}, alg="RS256")
    assert pyjwt.get_unverified_header(ring.sign({}))["alg"] == "ES256"


def test_imported_public_key_is_published_and_never_signs(
    store_factory: StoreFactory, key_pool: list[jwk.JWK]
) -> None:
    ring = ring_at(store_factory(), Clock())
    ring.init(["ES256"])
    foreign = json.loads(key_pool[0].export())  # RSA with its private half
    for member in ("kid", "alg", "use"):
        foreign.pop(member)
    ring.import_key(jwk.JWK(**foreign))
    ring.load()
    kid = key_pool[0].thumbprint()
    assert kid in published(ring)
    (imported,) = [k for k in store_factory().read().keys if k.kid == kid]
    assert not imported.key.has_private  # only the public half is kept
    secrets = [str(v) for m, v in json.loads(key_pool[0].export()).items() if m in PRIVATE]
    for text in store_factory.stored_text():  # at rest too
        assert not any(secret in text for secret in secrets)
    with pytest.raises(SigningError, match="no active RS256 key"):
        ring.sign({}, alg="RS256")
    with pytest.raises(ValueError, match="already in the store"):
        ring.import_key(jwk.JWK(**foreign))


def test_prune_deletes_only_expired_retired_keys(store_factory: StoreFactory) -> None:
    clock = Clock()
    policy = Policy()
    ring = ring_at(store_factory(), clock, policy)
    (first,) = ring.init(["ES256"])
    ring.rotate()
    clock.now = T0 + policy.publish_ahead
    ring.step()
    assert ring.prune() == []
    clock.now += policy.retain_after
    (pruned,) = ring.prune()
    assert pruned.kid == first.kid


def _race_step(factory: StoreFactory, now: float, barrier: Any, out: Any) -> None:
    store = open_store(factory.location, keks=factory.keks)  # a process of its own
    ring = KeyRing(store, Policy(), clock=lambda: now)
    barrier.wait()
    out.put(len(ring.step()))
    store.close()


@pytest.mark.parametrize("round_", range(3))
def test_processes_racing_the_rotation_step_create_one_key(
    store_factory: StoreFactory, round_: int
) -> None:
    policy = Policy()
    ring = ring_at(store_factory(), Clock(), policy)
    ring.init(["ES256"])
    ring.store.close()  # no session of this process is inherited by the racers
    due = T0 + policy.rotation_period - policy.publish_ahead + round_
    context = multiprocessing.get_context("fork")
    barrier, out = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=_race_step, args=(store_factory, due, barrier, out))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert sorted(out.get(timeout=5) for _ in workers) == [0, 0, 0, 1]
    assert sorted(states(ring).values()) == ["active", "pending"]
    if store_factory.kind == "directory":
        assert len(list(Path(store_factory.location).glob("*.jwk.json"))) == 2


def test_a_read_only_store_still_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ring = ring_at(tmp_path, Clock())
    ring.init(["ES256"])
    real_open = os.open

    def read_only_open(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(".lock"):  # a Kubernetes Secret mount: no lock file can be made
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    assert len(ring_at(tmp_path, Clock()).load().kids) == 1
    with pytest.raises(KeyStoreError, match="cannot lock the key store: .*Read-only file system"):
        ring.rotate()


member_names = st.sampled_from([*sorted(PRIVATE), "ext", "x5u", "iat", "extra"])
member_values = st.one_of(st.text(max_size=20), st.integers(), st.booleans())


@pytest.mark.slow  # measured: ~10 s with PostgreSQL, ~3 s with a directory
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=6, unique=True),
    extras=st.dictionaries(member_names, member_values, max_size=4),
    public_only=st.booleans(),
)
def test_whatever_the_store_holds_no_private_member_is_published(
    store_factory: StoreFactory,
    key_pool: list[jwk.JWK],
    picks: list[int],
    extras: dict[str, object],
    public_only: bool,
) -> None:
    store_factory.clear()  # each example starts from an empty store
    for index in picks:
        key = key_pool[index]
        members = json.loads(key.export_public() if public_only else key.export())
        members.update(extras)
        store_factory.plant(key["kid"], key["alg"], members)
    store = open_store(store_factory.location, keks=store_factory.keks)
    ring = KeyRing(store, Policy())
    try:
        snapshot = ring.load()
    except (KeyStoreError, KeySetError):
        return  # refused whole, which is allowed; publishing a secret is not
    finally:
        store.close()
    for document in (json.loads(snapshot.json),):
        for published_key in document["keys"]:
            assert not PRIVATE & set(published_key)
    for index in picks:
        secrets = {str(v) for m, v in json.loads(key_pool[index].export()).items() if m in PRIVATE}
        for secret in secrets:
            assert secret.encode() not in snapshot.json
            assert secret.encode() not in snapshot.proto


def test_next_events_name_what_happens_to_each_key_and_never_a_past_successor() -> None:
    policy = Policy()
    t0 = 1_000_000
    active = Entry("a", "ES256", State.ACTIVE, t0, activated=t0)
    pending = Entry("p", "ES256", State.PENDING, t0 + int(5 * DAY))  # a manual `keys rotate`
    retired = Entry("r", "ES256", State.RETIRED, t0 - int(40 * DAY), activated=t0 - int(40 * DAY),
                    retired=t0)  # fmt: skip
    imported = Entry("i", "RS256", State.PUBLISHED, t0)
    promote_at = int(pending.created + policy.publish_ahead)
    assert next_events([active, pending, retired, imported], policy) == {
        "p": ("signs", promote_at),
        "a": ("retires", promote_at),  # when its successor signs, not its own successor time
        "r": ("deleted", int(t0 + policy.retain_after)),
    }
    alone = next_events([active], policy)
    assert alone == {"a": ("successor", int(t0 + policy.rotation_period - policy.publish_ahead))}


# -- a clock that went back: keys dated in the future ----------------------------------------

YEAR = 365 * DAY


def _future_ring(store_factory: StoreFactory, clock: Clock) -> tuple[KeyRing, str, str]:
    """A ring whose keys were made while the clock ran two years ahead, then set back to T0:
    an active key and a pending successor, both dated T0 + 2 years."""
    clock.now = T0 + 2 * YEAR
    ring = ring_at(store_factory(), clock)
    (first,) = ring.init(["ES256"])
    (second,) = ring.rotate()
    clock.now = T0
    ring.load()
    return ring, first.kid, second.kid


def test_keys_dated_in_the_future_never_push_the_schedule_out(
    store_factory: StoreFactory,
) -> None:
    """The clock ran 2 years ahead and came back: the successor must sign `publish_ahead` from
    now (real time), not in 2 years, and never sooner."""
    clock = Clock()
    ring, first, second = _future_ring(store_factory, clock)
    policy = ring.policy
    assert ring.step() == []  # re-dates them: no state changes
    clock.now = T0 + policy.publish_ahead - 1
    assert ring.step() == []  # not before it has been published publish_ahead of real time
    clock.now = T0 + policy.publish_ahead
    changes = {c.kid: (c.before, c.after) for c in ring.step()}
    assert changes == {first: (State.ACTIVE, State.RETIRED), second: (State.PENDING, State.ACTIVE)}
    dates = {e.kid: e for e in ring.store.read().entries}
    assert dates[second].activated == T0 + policy.publish_ahead
    assert dates[first].created == T0  # re-dated to when the step saw it


def test_keys_dated_in_the_future_are_reported_until_redated(
    store_factory: StoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="agentrouter_auth.keys"):
        ring, first, second = _future_ring(store_factory, clock)
        status = ring.status()
        assert status.future_dated == tuple(sorted([first, second]))
        assert not status.serving
        assert status.healthy  # the set itself loaded and is served
        assert ring.due()  # re-dating is a step the upkeep takes at once
        ring.check_clock()
        ring.check_clock()  # once per state change, not per check
        ring.step()
        ring.refresh()
        assert ring.status().future_dated == ()
        assert ring.status().serving
        ring.check_clock()
    reported = [r for r in caplog.records if getattr(r, "event", "") == "key_dated_in_future"]
    assert sorted(getattr(r, "kid", "") for r in reported) == sorted([first, second])
    redated = [r for r in caplog.records if getattr(r, "event", "") == "key_redated"]
    assert sorted(getattr(r, "kid", "") for r in redated) == sorted([first, second])
    cleared = [r for r in caplog.records if getattr(r, "event", "") == "key_dates_ok"]
    assert len(cleared) == 1


def test_a_key_a_little_ahead_is_within_the_clock_skew(store_factory: StoreFactory) -> None:
    """Another replica's clock a few seconds ahead is normal: within --clock-skew, nothing."""
    clock = Clock(T0 + 60)
    ring = ring_at(store_factory(), clock)
    ring.init(["ES256"])
    clock.now = T0
    ring.load()
    assert ring.status().future_dated == ()
    assert ring.status().serving
    assert not ring.due()


def test_keys_prune_dates_now_the_keys_dated_in_the_future(store_factory: StoreFactory) -> None:
    """A store no server rotates (`--rotation off`) is mended by the operator's `keys prune`."""
    clock = Clock()
    ring, first, second = _future_ring(store_factory, clock)
    assert ring.prune() == []  # no state changes
    ring.refresh()
    assert ring.status().future_dated == ()
    dates = {e.kid: (e.created, e.activated) for e in ring.store.read().entries}
    assert dates == {first: (T0, T0), second: (T0, None)}
