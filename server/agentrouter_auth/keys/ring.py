"""The key ring: the lifecycle of signing keys and the snapshot of their public half.

`KeyRing` is the Python API behind the CLI and the server. The servicer asks it for the current
snapshot; a token issuer in the same process asks it to sign. Reloads and rotation steps run
off the request path and swap one reference; a reload that fails keeps the last good snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from jwcrypto import jwk, jwt

from agentrouter_auth.keys.material import (
    DEFAULT_ALGORITHM,
    InvalidKeyError,
    default_alg,
    generate_key,
    public_copy,
    validate,
)
from agentrouter_auth.keys.policy import Policy, format_duration
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailableError,
    Origin,
    RecordedPolicy,
    State,
    Transaction,
    policy_conflict,
)
from agentrouter_auth.snapshot import KeySetError, NotLoadedError, Snapshot, render

log = logging.getLogger("agentrouter_auth.keys")


class SigningError(ValueError):
    """A token cannot be signed as asked; the message says why."""


class _Abandon(Exception):  # noqa: N818 - not an error: ends a probe transaction unwritten
    """Raised inside a transaction to leave it without writing anything."""


class Action(Enum):
    """A lifecycle step the policy calls for."""

    CREATE = "create"  # pre-publish a new pending key for an algorithm
    PROMOTE = "promote"  # a pending key starts signing; the active one of its alg retires
    DELETE = "delete"  # a retired key has outlived every token it signed
    REDATE = "redate"  # a key dated in the future (a clock went back) is dated now


@dataclass(frozen=True, slots=True)
class Step:
    """One due lifecycle step: `subject` is an algorithm for CREATE, else a kid."""

    action: Action
    subject: str


@dataclass(frozen=True, slots=True)
class Change:
    """A key moved from one state to another (None: did not exist / no longer exists)."""

    kid: str
    alg: str
    before: State | None
    after: State | None

    def __str__(self) -> str:
        fields = self.fields()
        return f"key {self.kid} ({self.alg}): {fields['from']} -> {fields['to']}"

    def fields(self) -> dict[str, str]:
        """The change as log fields."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "from": self.before.value if self.before else "new",
            "to": self.after.value if self.after else "deleted",
        }


@dataclass(frozen=True, slots=True)
class RingStatus:
    """Health of the ring: whether the last reload succeeded, and when one last did.

    `unlisted` counts the key files the store ignored at the last good load because its
    manifest does not list them (see `KeySet.unlisted`).

    `healthy` is about the set served (the last reload succeeded); `serving` is the keyring's
    health as a whole, which also needs its lifecycle steps to be taken (`rotation_error`) and
    its keys' dates to be believable (`future_dated`).
    """

    healthy: bool
    error: str | None
    version: int
    loaded_at: float | None
    unlisted: int = 0
    reachable: bool = True
    """False while the store cannot be reached (KeyStoreUnavailableError), as opposed to a
    store that answers with something refused."""
    rotation_error: str | None = None
    """Why the last lifecycle step, or the check that one could be written, failed; None
    once one succeeds (and always with `--rotation off`, which writes nothing)."""
    future_dated: tuple[str, ...] = ()
    """Kids of keys whose times are later than now plus the clock skew: written while a clock
    ran ahead. Until re-dated they would hold the schedule back by as long."""

    @property
    def loaded(self) -> bool:
        """Whether a key set has been loaded (and is served)."""
        return self.version > 0

    @property
    def serving(self) -> bool:
        """The keyring's health: a set is served, the last reload succeeded, lifecycle steps
        can be taken, and no key is dated in the future."""
        return self.healthy and self.rotation_error is None and not self.future_dated


def scheduled_steps(entries: Iterable[Entry], policy: Policy) -> list[tuple[Step, float]]:
    """Every lifecycle step the policy will call for on this manifest, with the Unix time
    from which it is due (a pure function of the manifest).

    Per algorithm with a generated key: a successor is pre-published `publish_ahead` before the
    active key's `rotation_period` ends, and promoted once it has been published for
    `publish_ahead`, whenever it was created (so a manual rotation is as safe as a scheduled
    one). Retired keys go `retain_after` after they stopped signing.
    """
    steps: list[tuple[Step, float]] = []
    entries = sorted(entries, key=lambda e: (e.created, e.kid))
    generated = [e for e in entries if e.origin is Origin.GENERATED]
    for alg in sorted({e.alg for e in generated}):
        pending = [e for e in generated if e.alg == alg and e.state is State.PENDING]
        active = [e for e in generated if e.alg == alg and e.state is State.ACTIVE]
        if pending:
            at = pending[0].created + policy.publish_ahead
            steps.append((Step(Action.PROMOTE, pending[0].kid), at))
        elif active:
            since = active[0].activated if active[0].activated is not None else active[0].created
            steps.append(
                (Step(Action.CREATE, alg), since + policy.rotation_period - policy.publish_ahead)
            )
    for entry in entries:
        if entry.state is State.RETIRED:
            retired = entry.retired if entry.retired is not None else entry.created
            steps.append((Step(Action.DELETE, entry.kid), retired + policy.retain_after))
    return steps


def future_dated(entries: Iterable[Entry], now: float, policy: Policy) -> list[Entry]:
    """The entries with a time later than `now` plus the policy's clock skew: written by a
    process whose clock ran ahead (or by a replica whose clock still does)."""
    limit = now + policy.clock_skew
    return [entry for entry in entries if _latest(entry) > limit]


def _latest(entry: Entry) -> int:
    return max(t for t in (entry.created, entry.activated, entry.retired) if t is not None)


def due_steps(entries: Iterable[Entry], now: float, policy: Policy) -> list[Step]:
    """The lifecycle steps the policy calls for at `now`."""
    return [step for step, at in scheduled_steps(entries, policy) if now >= at]


def upkeep_steps(entries: Iterable[Entry], now: float, policy: Policy) -> list[Step]:
    """What a rotation step does at `now`: re-date the keys dated in the future (REDATE),
    then the due lifecycle steps.

    A key dated in the future would hold its own schedule back until the clock caught up with
    it, years perhaps; it is dated `now` instead. That never makes a key sign sooner: a
    pending key re-dated now signs `publish_ahead` from now, later in real time than its own
    schedule from when it really was published.
    """
    entries = list(entries)
    redate = [Step(Action.REDATE, entry.kid) for entry in future_dated(entries, now, policy)]
    return redate + due_steps(entries, now, policy)


def next_step_at(entries: Iterable[Entry], policy: Policy) -> float | None:
    """When the policy next calls for a lifecycle step (Unix seconds); None for never."""
    return min((at for _, at in scheduled_steps(entries, policy)), default=None)


def next_events(entries: Iterable[Entry], policy: Policy) -> dict[str, tuple[str, int]]:
    """What the policy does next to each key it will change, and when (Unix seconds), by kid:
    `signs` (a pending key is promoted), `retires` (its successor is promoted), `successor`
    (a successor is pre-published), `deleted` (a retired key goes)."""
    entries = list(entries)
    active = {e.alg: e.kid for e in entries if e.state is State.ACTIVE}
    events: dict[str, tuple[str, int]] = {}
    for step, at in scheduled_steps(entries, policy):
        if step.action is Action.PROMOTE:
            events[step.subject] = ("signs", int(at))
            alg = next(e.alg for e in entries if e.kid == step.subject)
            if alg in active:
                events[active[alg]] = ("retires", int(at))
        elif step.action is Action.CREATE:
            events[active[step.subject]] = ("successor", int(at))
        else:
            events[step.subject] = ("deleted", int(at))
    return events


class KeyRing:
    """Signing keys in a store, their lifecycle under a policy, and the published snapshot."""

    def __init__(
        self,
        store: KeyStore,
        policy: Policy,
        *,
        clock: Callable[[], float] = time.time,
        rsa_bits: int = 2048,
        rotating: bool = False,
    ) -> None:
        """`rotating`: this process takes lifecycle steps (`serve --rotation auto`), so the
        store's recorded rotation policy must be `policy`: it is recorded by the first such
        process, and a conflict stops the steps (`rotation_error`)."""
        self.store = store
        self.policy = policy
        self.rotating = rotating
        self._policy_conflict: str | None = None
        self._clock = clock
        self._rsa_bits = rsa_bits
        self._key_set: KeySet | None = None
        self._snapshot: Snapshot | None = None
        self._fingerprint: object = None
        self._error: str | None = None
        self._loaded_at: float | None = None
        self._refresh_lock = threading.Lock()  # one reload at a time; never on the request path
        self._reachable = True
        self.reload_failures = 0
        self._rotation_error: str | None = None
        self._reported_future: frozenset[str] = frozenset()

    # -- the published set ---------------------------------------------------------------

    def load(self) -> Snapshot:
        """Read and render the store; raise if it holds no publishable set (no last good one)."""
        with self._refresh_lock:
            fingerprint = self.store.fingerprint()
            key_set = self.store.read()
            self._install(key_set, fingerprint)
        assert self._snapshot is not None
        return self._snapshot

    def refresh(self) -> bool:
        """Reload if the store changed. On failure keep the last good set and record why.

        Returns True when a new snapshot was installed.
        """
        with self._refresh_lock:
            fingerprint = self.store.fingerprint()
            if fingerprint == self._fingerprint and self._snapshot is not None:
                return False
            try:
                key_set = self.store.read()
                return self._install(key_set, fingerprint)
            except (KeyStoreError, KeySetError) as err:
                self._fingerprint = fingerprint  # retried when the store changes again
                self._reachable = not isinstance(err, KeyStoreUnavailableError)
                self.reload_failures += 1
                if str(err) != self._error:
                    served = "still serving the last good set" if self._snapshot else "no set yet"
                    log.error(
                        "key set reload failed, %s: %s",
                        served,
                        err,
                        extra={
                            "event": "key_set_reload_failed",
                            # where it failed: the file if known, else the whole store
                            "path": getattr(err, "path", None) or self.store.description,
                            "reason": getattr(err, "reason", str(err)),
                        },
                    )
                self._error = str(err)
                return False

    def _install(self, key_set: KeySet, fingerprint: object) -> bool:
        previous = self._snapshot
        version = previous.version + 1 if previous else 1
        snapshot = render((stored.key for stored in key_set.keys), version)
        for note in key_set.notes:
            log.warning("%s", note, extra={"event": "key_store_note"})
        if previous is not None and self._key_set is not None:
            for change in diff(self._key_set, key_set):
                extra = {"event": "key_state_changed", **change.fields()}
                log.info("key set changed: %s", change, extra=extra)
        if self._error is not None:
            log.info(
                "key set reloaded: the key store answers again",
                extra={"event": "key_set_reload_recovered"},
            )
        self._key_set, self._fingerprint = key_set, fingerprint
        self._error, self._loaded_at, self._reachable = None, self._clock(), True
        if self.rotating:
            self._note_policy(key_set)
        if previous is not None and previous.json == snapshot.json:
            return False  # same public set: keep the snapshot (and its ETag) as it was
        self._snapshot = snapshot
        return True

    def snapshot(self) -> Snapshot:
        """The snapshot to serve now (a reference read: safe from any thread)."""
        snapshot = self._snapshot
        if snapshot is None:
            raise NotLoadedError("no key set has been loaded yet")
        return snapshot

    def status(self) -> RingStatus:
        """Whether the last reload succeeded, with its error if not."""
        version = self._snapshot.version if self._snapshot else 0
        healthy = self._snapshot is not None and self._error is None
        unlisted = len(self._key_set.unlisted) if self._key_set is not None else 0
        return RingStatus(
            healthy,
            self._error,
            version,
            self._loaded_at,
            unlisted,
            reachable=self._reachable,
            rotation_error=self._rotation_error,
            future_dated=tuple(sorted(entry.kid for entry in self._future_dated())),
        )

    def _future_dated(self) -> list[Entry]:
        key_set = self._key_set
        if key_set is None:
            return []
        return future_dated(key_set.entries, self._clock(), self.policy)

    def check_clock(self) -> tuple[str, ...]:
        """Log each key newly found dated in the future, and once when none is left; return
        their kids. The server calls this every reload interval: a clock set back makes keys
        that were fine dated in the future without any change to the store."""
        ahead = self._future_dated()
        now = self._clock()
        for entry in ahead:
            if entry.kid not in self._reported_future:
                log.warning(
                    "key %s (%s) is dated %s ahead of this clock (a clock went back?): "
                    "keyring health is NOT_SERVING until the next rotation step dates it now",
                    entry.kid,
                    entry.alg,
                    format_duration(_latest(entry) - now),
                    extra={
                        "event": "key_dated_in_future",
                        "kid": entry.kid,
                        "alg": entry.alg,
                        "seconds_ahead": int(_latest(entry) - now),
                    },
                )
        kids = frozenset(entry.kid for entry in ahead)
        if self._reported_future and not kids:
            log.info("no key is dated in the future any more", extra={"event": "key_dates_ok"})
        self._reported_future = kids
        return tuple(sorted(kids))

    def check_policy(self) -> None:
        """Raise PolicyConflictError if the loaded set's recorded rotation policy is not this
        ring's (`serve --rotation auto` checks so before binding a port)."""
        conflict = self._key_set and policy_conflict(
            self._key_set.policy, self.policy, self.store.description
        )
        if conflict:
            raise conflict

    def _note_policy(self, key_set: KeySet) -> None:
        """A rotating ring whose store now records another policy stops its steps (logged once,
        keyring health NOT_SERVING); once they agree again, steps resume."""
        conflict = policy_conflict(key_set.policy, self.policy, self.store.description)
        if conflict is not None:
            self._policy_conflict = str(conflict)
            self._rotation_failed(str(conflict))
        elif self._policy_conflict is not None:
            self._policy_conflict = None
            if self._rotation_error is not None:
                self._rotation_succeeded()

    def _claim_policy(self, tx: Transaction) -> bool:
        """(Rotating, in a transaction) Refuse a conflicting recorded policy; record this
        ring's when none is. True when it records."""
        conflict = policy_conflict(tx.current.policy, self.policy, self.store.description)
        if conflict is not None:
            raise conflict
        if tx.current.policy is None:
            tx.record_policy(RecordedPolicy.of(self.policy))
            return True
        return False

    @property
    def key_set(self) -> KeySet:
        """The key set behind the current snapshot (private halves included)."""
        if self._key_set is None:
            raise KeySetError("the key ring has not been loaded")
        return self._key_set

    # -- lifecycle -----------------------------------------------------------------------

    def due(self) -> bool:
        """Whether the loaded set calls for a lifecycle step now. Cheap (no store access), so
        the server asks this every interval and only opens a transaction, which re-reads the
        store under its lock, when it says yes. Unlisted key files are left to the next
        transaction: they are ignored meanwhile, and an operator restoring a store file by file
        must not see them deleted under their hands."""
        key_set = self._key_set
        if key_set is None or self._policy_conflict is not None:
            return False
        return bool(upkeep_steps(key_set.entries, int(self._clock()), self.policy))

    def step(self) -> list[Change]:
        """Apply every lifecycle step that is due now. Safe to call from many processes; a
        transaction with nothing due writes nothing.

        A failure (the store cannot be locked or written: read-only, disk full) is kept for
        `status()` until a step succeeds, and logged once when it starts and once when it ends.
        """
        redated: list[tuple[Entry, int]] = []
        try:
            with self.store.transaction() as tx:
                if self.rotating:
                    self._claim_policy(tx)
                now = int(self._clock())
                for step in upkeep_steps(tx.current.entries, now, self.policy):
                    if step.action is Action.CREATE:
                        self._create(tx, step.subject, State.PENDING, now)
                    elif step.action is Action.PROMOTE:
                        self._promote(tx, step.subject, now)
                    elif step.action is Action.REDATE:
                        redated.append(self._redate(tx, step.subject, now))
                    else:
                        tx.delete(step.subject)
                changes = self._changes(tx)
        except (KeyStoreError, OSError) as err:
            self._rotation_failed(str(err))
            raise
        self._rotation_succeeded()
        for entry, now in redated:
            log.warning(
                "key %s (%s) was dated %s in the future: dated now, and its lifecycle runs "
                "from now",
                entry.kid,
                entry.alg,
                format_duration(_latest(entry) - now),
                extra={"event": "key_redated", "kid": entry.kid, "alg": entry.alg,
                       "seconds_ahead": _latest(entry) - now},
            )  # fmt: skip
        return changes

    def check_writable(self) -> bool:
        """Whether the store lets this process take a lifecycle step now: open a transaction
        (the directory store's exclusive lock, which a read-only mount refuses) and abandon it
        before anything is written. Recorded like a step's outcome. A server with
        `--rotation auto` checks at start, so a store that can never rotate is reported before a
        step is due; a store that fails only its writes (a full disk) shows at the first step.
        A rotating ring also claims the store's rotation policy here (`_claim_policy`): it
        records its own if none is, and fails if another is."""
        try:
            with self.store.transaction() as tx:
                if not (self.rotating and self._claim_policy(tx)):
                    raise _Abandon  # else commit the policy it records
        except _Abandon:
            pass
        except (KeyStoreError, OSError) as err:
            self._rotation_failed(str(err))
            return False
        self._rotation_succeeded()
        return True

    def _rotation_failed(self, reason: str) -> None:
        if self._rotation_error is None:
            log.error(
                "rotation step failed: %s; keyring health is NOT_SERVING until a step succeeds",
                reason,
                extra={"event": "rotation_step_failed", "reason": reason},
            )
        self._rotation_error = reason

    def _rotation_succeeded(self) -> None:
        if self._rotation_error is not None:
            log.info(
                "rotation steps can be taken again",
                extra={"event": "rotation_step_recovered"},
            )
        self._rotation_error = None

    def init(self, algs: Iterable[str] = (DEFAULT_ALGORITHM,)) -> list[Change]:
        """Create an active key for each algorithm that has none (a new store signs at once)."""
        with self.store.transaction() as tx:
            now = int(self._clock())
            for alg in dict.fromkeys(algs):
                if tx.current.active(alg) is None:
                    self._create(tx, alg, State.ACTIVE, now)
            return self._changes(tx)

    def rotate(self, algs: Iterable[str] | None = None) -> list[Change]:
        """Pre-publish a successor for each algorithm (default: every one with an active key).

        The successor signs once it has been published for `publish_ahead`; an algorithm that
        already has a pending successor is left as it is, so concurrent rotations add one key.
        """
        with self.store.transaction() as tx:
            now = int(self._clock())
            current = tx.current
            wanted = (
                list(algs)
                if algs is not None
                else sorted({k.entry.alg for k in current.keys if k.entry.state is State.ACTIVE})
            )
            if not wanted:
                raise KeyStoreError(self.store.description, "no active key to rotate")
            for alg in wanted:
                pending = any(
                    k.entry.alg == alg and k.entry.state is State.PENDING for k in current.keys
                )
                if not pending:
                    self._create(tx, alg, State.PENDING, now)
            return self._changes(tx)

    def prune(self) -> list[Change]:
        """Delete the retired keys whose retention has ended, and date now the keys dated in
        the future (the upkeep of a store no server rotates)."""
        with self.store.transaction() as tx:
            now = int(self._clock())
            for step in upkeep_steps(tx.current.entries, now, self.policy):
                if step.action is Action.DELETE:
                    tx.delete(step.subject)
                elif step.action is Action.REDATE:
                    self._redate(tx, step.subject, now)
            return self._changes(tx)

    def remove(self, kid: str, *, force: bool = False) -> list[Change]:
        """Stop publishing `kid` now (an imported key, or a compromised one).

        The active key of an algorithm is only removed with `force`: until `init` makes a new
        one, tokens of that algorithm cannot be signed, and every token it signed stops
        verifying as soon as verifiers refetch the set.
        """
        with self.store.transaction() as tx:
            entry = next((e for e in tx.current.entries if e.kid == kid), None)
            if entry is None:
                raise KeyStoreError(self.store.description, f"no key {kid}")
            if entry.state is State.ACTIVE and not force:
                raise KeyStoreError(
                    self.store.description,
                    f"key {kid} is the active {entry.alg} key; rotate first, or use --force",
                )
            tx.delete(kid)
            return self._changes(tx)

    def import_key(self, key: jwk.JWK) -> list[Change]:
        """Publish another issuer's public key; it never signs. Private halves are dropped."""
        public = public_copy(key)
        if not public.get("alg"):
            inferred = default_alg(public)
            if inferred:
                public.update(alg=inferred)
        if not public.get("use"):
            public.update(use="sig")
        if not public.get("kid"):
            public.update(kid=public.thumbprint())
        validate(public)
        with self.store.transaction() as tx:
            existing = {k.kid for k in tx.current.keys}
            if public["kid"] in existing:
                raise InvalidKeyError(f"key {public['kid']} is already in the store")
            now = int(self._clock())
            entry = Entry(
                public["kid"], public["alg"], State.PUBLISHED, now, origin=Origin.IMPORTED
            )
            tx.add(public, entry)
            return self._changes(tx)

    def _create(self, tx: Transaction, alg: str, state: State, now: int) -> None:
        key = generate_key(alg, rsa_bits=self._rsa_bits)
        activated = now if state is State.ACTIVE else None
        tx.add(key, Entry(key["kid"], alg, state, now, activated=activated))

    def _promote(self, tx: Transaction, kid: str, now: int) -> None:
        entry = next(e for e in tx.current.entries if e.kid == kid)
        current = tx.current.active(entry.alg)
        if current is not None:  # as this transaction left it (it may have been re-dated)
            retiring = tx.updated.get(current.kid, current.entry)
            tx.update(replace(retiring, state=State.RETIRED, retired=now))
        tx.update(replace(entry, state=State.ACTIVE, activated=now))

    def _redate(self, tx: Transaction, kid: str, now: int) -> tuple[Entry, int]:
        """Date `now` every time of `kid` that is later; return the entry as it was."""
        entry = next(e for e in tx.current.entries if e.kid == kid)

        def clamp(at: int | None) -> int | None:
            return None if at is None else min(at, now)

        tx.update(
            replace(
                entry,
                created=min(entry.created, now),
                activated=clamp(entry.activated),
                retired=clamp(entry.retired),
            )
        )
        return entry, now

    def _changes(self, tx: Transaction) -> list[Change]:
        """What a transaction changes; the store applies it when the block exits."""
        return diff(tx.current, tx.result())

    # -- signing -------------------------------------------------------------------------

    def signer(self, alg: str | None = None) -> jwk.JWK:
        """The active private key for `alg` (default: the only active algorithm, or ES256)."""
        key_set = self.key_set
        active = {k.entry.alg: k for k in key_set.keys if k.entry.state is State.ACTIVE}
        if alg is None:
            if len(active) == 1:
                alg = next(iter(active))
            elif DEFAULT_ALGORITHM in active:
                alg = DEFAULT_ALGORITHM
            else:
                choices = ", ".join(sorted(active)) or "none"
                raise SigningError(f"choose an algorithm with --alg (active: {choices})")
        stored = active.get(alg)
        if stored is None:
            raise SigningError(f"no active {alg} key in {self.store.description}")
        return stored.key

    def sign(
        self, claims: Mapping[str, Any], *, alg: str | None = None, ttl: float | None = None
    ) -> str:
        """A compact JWS of `claims` with `iat` and `exp`, signed by the active key."""
        lifetime = self.policy.max_token_ttl if ttl is None else ttl
        if not 0 < lifetime <= self.policy.max_token_ttl:
            raise SigningError(
                f"--ttl must be more than 0 and at most --max-token-ttl "
                f"({format_duration(self.policy.max_token_ttl)})"
            )
        if "exp" in claims:
            raise SigningError("exp is set from --ttl; leave it out of the claims")
        key = self.signer(alg)
        now = int(self._clock())
        payload = {"iat": now, **claims, "exp": now + int(lifetime)}
        token = jwt.JWT(header={"alg": key["alg"], "kid": key["kid"], "typ": "JWT"}, claims=payload)
        token.make_signed_token(key)
        return str(token.serialize())


def diff(before: KeySet, after: KeySet) -> list[Change]:
    """The state changes between two key sets, by kid."""
    old = {e.kid: e for e in before.entries}
    new = {e.kid: e for e in after.entries}
    changes = []
    for kid in sorted(old.keys() | new.keys()):
        was, now = old.get(kid), new.get(kid)
        if was is None or now is None or was.state is not now.state:
            alg = (now or was).alg  # type: ignore[union-attr] # one of them exists
            changes.append(Change(kid, alg, was.state if was else None, now.state if now else None))
    return changes
