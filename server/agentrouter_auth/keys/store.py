"""The `KeyStore` contract and its model: what the key ring needs from any store.

A store holds keys with their entries (`Entry`: state and times, `State`), as one `KeySet`, and
the ring's recorded rotation policy (`RecordedPolicy`). It changes them in one `Transaction` at
a time, exclusively, so a rotation step runs once however many processes (the CLI, every worker,
every replica) try at the same moment; it tells of changes by `fingerprint()` (polled) and,
when it can, a `ChangeFeed`. Every key a store hands out has passed the shared check of a
stored key (`keys.check`); a store that cannot be read says so with a `KeyStoreError`.

The ring only depends on this protocol, so another backend slots in without touching the ring,
the snapshot or a transport: `keys.directory` (the embedded default), `keys.postgres` (a
database shared by replicas on many machines), and whatever the backend registry
(`keys.registry`) is given, chosen by the scheme of the `--key-store` location. Optional
capabilities a backend may add (schema migrations, re-encryption, ...) are in
`keys.capabilities`.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from jwcrypto import jwk

from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.keys.policy import Policy, format_duration

RING_MEMORY_ENV = "AGENTROUTER_AUTH_RING_MEMORY_DIR"
"""Set by `serve` for its workers (not an option): a directory where a store may keep what every
worker of the server must remember across a worker's restart (`keys.postgres.memory`)."""

# A kid is an RFC 7638 thumbprint (base64url), so it is safe in a file name.
KID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class KeyStoreError(AgentRouterAuthError, ValueError):
    """The store cannot be read or written as asked; the message names where and why.

    `location` is whatever the store can point at: a file or a directory of the directory
    store, or a store's location as given (a URL).
    """

    def __init__(self, location: Path | str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = str(location)
        self.reason = reason

    @property
    def path(self) -> str:
        """`location`, by the name the `key_set_reload_failed` log field has always had."""
        return self.location


class KeyStoreUnavailableError(KeyStoreError):
    """The store cannot be reached now (a database that is down or unreachable), as opposed
    to a store that answers but is wrong. It may recover by itself: a server that meets it at
    start keeps retrying rather than refusing to start."""


class ChangeFeed(Protocol):
    """Tells a process soon after another one changed the store (PostgreSQL's LISTEN)."""

    async def wait(self, timeout: float) -> bool:
        """Return True when the store announced a change, or may have changed unannounced (the
        feed reconnected); False when `timeout` seconds passed without one."""
        ...

    async def close(self) -> None:
        """Stop listening."""
        ...


class State(StrEnum):
    """Where a key is in its life. Keys in every state are published; only ACTIVE signs."""

    PENDING = "pending"
    """Published so verifiers cache it, not signing yet."""
    ACTIVE = "active"
    """Signs new tokens; exactly one per algorithm."""
    RETIRED = "retired"
    """Published until the tokens it signed have expired, not signing."""
    PUBLISHED = "published"
    """Imported public key: published, never signs, never removed automatically."""


SIGNING_STATES = frozenset({State.PENDING, State.ACTIVE})
"""States whose key signs, or will once promoted: such a key must hold its private half."""


class Origin(StrEnum):
    """How a key entered the store."""

    GENERATED = "generated"
    IMPORTED = "imported"

    @classmethod
    def parse(cls, value: object) -> Origin:
        """The origin a manifest records. Earlier versions wrote "unlisted" for a key file
        they found without an entry; such an entry is a hand-placed key, i.e. an import."""
        return cls.IMPORTED if value == "unlisted" else cls(str(value))


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's manifest record. Times are Unix seconds."""

    kid: str
    alg: str
    state: State
    created: int
    activated: int | None = None
    retired: int | None = None
    origin: Origin = Origin.GENERATED

    def to_json(self) -> dict[str, Any]:
        """The manifest form of this entry."""
        record: dict[str, Any] = {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state.value,
            "origin": self.origin.value,
            "created": self.created,
        }
        if self.activated is not None:
            record["activated"] = self.activated
        if self.retired is not None:
            record["retired"] = self.retired
        return record

    @classmethod
    def from_json(cls, record: object) -> Entry:
        """Parse one manifest record; raise ValueError on anything malformed."""
        if not isinstance(record, dict):
            raise ValueError("an entry is not an object")
        kid, alg = record.get("kid"), record.get("alg")
        if not isinstance(kid, str) or not kid or not isinstance(alg, str):
            raise ValueError(f"entry {record!r} needs string kid and alg")
        if not KID.fullmatch(kid):
            raise ValueError(f"entry kid {kid!r} is not a base64url thumbprint")
        times = {name: record.get(name) for name in ("created", "activated", "retired")}
        for name, value in times.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"entry {kid}: {name} must be Unix seconds")
        if times["created"] is None:
            raise ValueError(f"entry {kid}: created is missing")
        return cls(
            kid=kid,
            alg=alg,
            state=State(str(record.get("state"))),
            created=times["created"],
            activated=times["activated"],
            retired=times["retired"],
            origin=Origin.parse(record.get("origin", Origin.GENERATED)),
        )


@dataclass(frozen=True, slots=True)
class RecordedPolicy:
    """The part of a rotation policy that decides when lifecycle steps fall due, as a store
    records it for its ring: every server that takes steps on one ring must agree on it, or the
    one with the shortest times takes each step first (a key signs after the shorter
    publish-ahead, against what the others' cache lifetimes were checked for). The token TTL and
    clock skew are bounded per server by `retain_after`, the cache lifetimes by `publish_ahead`.
    """

    rotation_period: float
    publish_ahead: float
    retain_after: float

    @classmethod
    def of(cls, policy: Policy) -> RecordedPolicy:
        """The recorded part of `policy`."""
        return cls(policy.rotation_period, policy.publish_ahead, policy.retain_after)

    def to_json(self) -> dict[str, float]:
        """The stored form: seconds by field name."""
        return {name: getattr(self, name) for name in RECORDED_POLICY_FIELDS}

    @classmethod
    def from_json(cls, record: object) -> RecordedPolicy:
        """Parse the stored form; ValueError on anything malformed."""
        if not isinstance(record, dict) or set(record) != set(RECORDED_POLICY_FIELDS):
            raise ValueError(f"a rotation policy has exactly {', '.join(RECORDED_POLICY_FIELDS)}")
        values = [record[name] for name in RECORDED_POLICY_FIELDS]
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError("a rotation policy's durations are positive seconds")
        return cls(*(float(value) for value in values))

    def __str__(self) -> str:
        return ", ".join(
            f"--{name.replace('_', '-')} {format_duration(getattr(self, name))}"
            for name in RECORDED_POLICY_FIELDS
        )


RECORDED_POLICY_FIELDS = ("rotation_period", "publish_ahead", "retain_after")


class PolicyConflictError(KeyStoreError):
    """The store records another rotation policy than this process's: a server taking
    lifecycle steps on it would race the others with other times."""


def policy_conflict(
    recorded: RecordedPolicy | None, policy: Policy, where: Path | str
) -> PolicyConflictError | None:
    """The error to raise (or report) when `recorded` is not `policy`'s; None when they agree
    or nothing is recorded yet (a store written by an earlier version: adopted)."""
    ours = RecordedPolicy.of(policy)
    if recorded is None or recorded == ours:
        return None
    return PolicyConflictError(
        where,
        f"the key store records the rotation policy {recorded}, this server's is {ours}: "
        "servers that rotate one key ring must share its policy; give this server the recorded "
        "one, or change the recorded one on purpose with `agentrouter-auth keys policy --set` "
        "and the new options",
    )


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key and its manifest entry. `key` is private for generated keys."""

    entry: Entry
    key: jwk.JWK = field(compare=False)

    @property
    def kid(self) -> str:
        """The key's id."""
        return self.entry.kid


@dataclass(frozen=True, slots=True)
class KeySet:
    """Everything a store holds at one moment, sorted by kid, plus notes worth logging.

    `unlisted` names the key files found beside the manifest but not listed in it (left by an
    interrupted transaction, or put there by hand): ignored, never published, never signing,
    and removed by the store's next transaction. `policy` is the rotation policy recorded for
    the ring (None: none recorded yet, as in a store written by an earlier version).
    """

    keys: tuple[StoredKey, ...]
    notes: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()
    policy: RecordedPolicy | None = None

    def active(self, alg: str) -> StoredKey | None:
        """The key that signs `alg` tokens, if any."""
        return next(
            (k for k in self.keys if k.entry.alg == alg and k.entry.state is State.ACTIVE), None
        )

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The manifest entries."""
        return tuple(k.entry for k in self.keys)


class Transaction:
    """Changes to a store made under its exclusive lock, applied together at the end."""

    def __init__(self, current: KeySet) -> None:
        self.current = current
        self.added: dict[str, StoredKey] = {}
        self.updated: dict[str, Entry] = {}
        self.deleted: set[str] = set()
        self.policy = current.policy

    def record_policy(self, policy: RecordedPolicy) -> None:
        """Record `policy` as the ring's rotation policy."""
        self.policy = policy

    def add(self, key: jwk.JWK, entry: Entry) -> None:
        """Store a new key with its entry."""
        self.added[entry.kid] = StoredKey(entry, key)

    def update(self, entry: Entry) -> None:
        """Replace the entry of a key already stored."""
        self.updated[entry.kid] = entry

    def delete(self, kid: str) -> None:
        """Remove a key and its file."""
        self.deleted.add(kid)

    @property
    def changed(self) -> bool:
        """Whether applying this transaction changes what the store holds."""
        return (
            bool(self.added)
            or self.policy != self.current.policy
            or self.result().entries != self.current.entries
        )

    def result(self) -> KeySet:
        """What the store holds once this transaction is applied."""
        keys = {k.kid: k for k in self.current.keys}
        keys.update(self.added)
        for kid, entry in self.updated.items():
            keys[kid] = replace(keys[kid], entry=entry)
        for kid in self.deleted:
            keys.pop(kid, None)
        return KeySet(tuple(keys[kid] for kid in sorted(keys)), policy=self.policy)


class KeyStore(Protocol):
    """What the key ring needs from a store."""

    @property
    def description(self) -> str:
        """Where the keys live, for messages."""
        ...

    def fingerprint(self) -> object:
        """A cheap value that changes whenever the stored keys may have changed."""
        ...

    def read(self) -> KeySet:
        """Every key with its entry, validated; raise KeyStoreError naming what is wrong."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """Exclusive access: read the current set, change it, apply on clean exit."""
        ...

    def close(self) -> None:
        """Release what the store holds open (database sessions); it reopens them if used
        again. A process closes its stores before it forks workers."""
        ...

    def change_feed(self) -> ChangeFeed | None:
        """A feed of the store's change announcements, or None when it has none (then the
        ring's polling of `fingerprint()` alone sees changes)."""
        ...


def check_one_active_per_alg(key_set: KeySet, where: Path | str) -> None:
    """Raise unless each algorithm has at most one active key."""
    seen: dict[str, str] = {}
    for stored in key_set.keys:
        if stored.entry.state is State.ACTIVE:
            other = seen.setdefault(stored.entry.alg, stored.kid)
            if other != stored.kid:
                raise KeyStoreError(
                    where, f"two active {stored.entry.alg} keys ({other}, {stored.kid})"
                )
