"""The key ring: the lifecycle of signing keys and the snapshot of their public half.

`KeyRing` is the Python API behind the CLI and the server. The servicer asks it for the current
snapshot; a token issuer in the same process asks it to sign. Reloads and rotation steps run
off the request path and swap one reference; a reload that fails keeps the last good snapshot.
When a step falls due is `keys.schedule`; what it does to the store's transaction is
`keys.transitions`; how a token is signed is `keys.signing`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jwcrypto import jwk

from agentrouter_auth.keys import signing, transitions
from agentrouter_auth.keys.health import RingStatus
from agentrouter_auth.keys.material import DEFAULT_ALGORITHM
from agentrouter_auth.keys.policy import Policy, format_duration
from agentrouter_auth.keys.schedule import (
    Action,
    due_steps,
    future_dated,
    latest,
    next_events,
    next_step_at,
    upkeep_steps,
)
from agentrouter_auth.keys.signing import SigningError
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailableError,
    PolicyConflictError,
    RecordedPolicy,
    Transaction,
    policy_conflict,
)
from agentrouter_auth.keys.transitions import Change, diff
from agentrouter_auth.snapshot import KeySetError, NotLoadedError, Snapshot, render

log = logging.getLogger("agentrouter_auth.keys")
__all__ = [  # the ring, and the names its callers know it by (each defined in its own module)
    "Action",
    "Change",
    "KeyRing",
    "RingStatus",
    "SigningError",
    "diff",
    "due_steps",
    "next_events",
    "next_step_at",
]


class _Abandon(Exception):  # noqa: N818 - not an error: ends a probe transaction unwritten
    """Raised inside a transaction to leave it without writing anything."""


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
        self._rotation_conflict = False  # the rotation error is a policy conflict
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
            policy_conflict=self._rotation_error is not None and self._rotation_conflict,
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
                    format_duration(latest(entry) - now),
                    extra={
                        "event": "key_dated_in_future",
                        "kid": entry.kid,
                        "alg": entry.alg,
                        "seconds_ahead": int(latest(entry) - now),
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
            self._rotation_failed(str(conflict), conflict=True)
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
        try:
            with self.store.transaction() as tx:
                if self.rotating:
                    self._claim_policy(tx)
                now = int(self._clock())
                redated = transitions.upkeep(tx, now, self.policy, self._rsa_bits)
                changes = transitions.changes(tx)
        except (KeyStoreError, OSError) as err:
            self._rotation_failed(str(err), conflict=isinstance(err, PolicyConflictError))
            raise
        self._rotation_succeeded()
        for entry in redated:
            log.warning(
                "key %s (%s) was dated %s in the future: dated now, and its lifecycle runs "
                "from now",
                entry.kid,
                entry.alg,
                format_duration(latest(entry) - now),
                extra={"event": "key_redated", "kid": entry.kid, "alg": entry.alg,
                       "seconds_ahead": latest(entry) - now},
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
            self._rotation_failed(str(err), conflict=isinstance(err, PolicyConflictError))
            return False
        self._rotation_succeeded()
        return True

    def _rotation_failed(self, reason: str, *, conflict: bool = False) -> None:
        self._rotation_conflict = conflict
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

    # -- commands: each one transaction ---------------------------------------------------

    def init(self, algs: Iterable[str] = (DEFAULT_ALGORITHM,)) -> list[Change]:
        """Create an active key for each algorithm that has none (a new store signs at once)."""
        with self.store.transaction() as tx:
            transitions.init(tx, algs, int(self._clock()), self._rsa_bits)
            return transitions.changes(tx)

    def rotate(self, algs: Iterable[str] | None = None) -> list[Change]:
        """Pre-publish a successor for each algorithm (default: every one with an active key).

        The successor signs once it has been published for `publish_ahead`; an algorithm that
        already has a pending successor is left as it is, so concurrent rotations add one key.
        """
        with self.store.transaction() as tx:
            now = int(self._clock())
            transitions.rotate(tx, algs, now, self._rsa_bits, self.store.description)
            return transitions.changes(tx)

    def prune(self) -> list[Change]:
        """Delete the retired keys whose retention has ended, and date now the keys dated in
        the future (the upkeep of a store no server rotates)."""
        with self.store.transaction() as tx:
            transitions.prune(tx, int(self._clock()), self.policy)
            return transitions.changes(tx)

    def remove(self, kid: str, *, force: bool = False) -> list[Change]:
        """Stop publishing `kid` now (an imported key, or a compromised one).

        The active key of an algorithm is only removed with `force`: until `init` makes a new
        one, tokens of that algorithm cannot be signed, and every token it signed stops
        verifying as soon as verifiers refetch the set.
        """
        with self.store.transaction() as tx:
            transitions.remove(tx, kid, force=force, where=self.store.description)
            return transitions.changes(tx)

    def import_key(self, key: jwk.JWK) -> list[Change]:
        """Publish another issuer's public key; it never signs. Private halves are dropped."""
        public = transitions.importable(key)
        with self.store.transaction() as tx:
            transitions.add_imported(tx, public, int(self._clock()))
            return transitions.changes(tx)

    # -- signing -------------------------------------------------------------------------

    def signer(self, alg: str | None = None) -> jwk.JWK:
        """The active private key for `alg` (default: the only active algorithm, or ES256)."""
        return signing.signer(self.key_set, alg, self.store.description)

    def sign(
        self, claims: Mapping[str, Any], *, alg: str | None = None, ttl: float | None = None
    ) -> str:
        """A compact JWS of `claims` with `iat` and `exp`, signed by the active key."""
        seconds = signing.lifetime(self.policy, ttl, claims)
        return signing.signed_token(self.signer(alg), claims, int(self._clock()), seconds)
