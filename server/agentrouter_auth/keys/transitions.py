"""What each lifecycle step does to a store's transaction: create, promote, redate, delete,
rotate, prune, remove, import; and the `Change`s a transaction makes, for logs and the CLI.

Functions of a `Transaction` and the time only: the ring opens the transaction (exclusive in
every process sharing the store) and decides which steps to take (`keys.schedule`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from jwcrypto import jwk

from agentrouter_auth.keys.material import (
    InvalidKeyError,
    default_alg,
    generate_key,
    public_copy,
    validate,
)
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.schedule import Action, upkeep_steps
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStoreError,
    Origin,
    State,
    Transaction,
)


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


def changes(tx: Transaction) -> list[Change]:
    """What a transaction changes; the store applies it when the block exits."""
    return diff(tx.current, tx.result())


def create(tx: Transaction, alg: str, state: State, now: int, rsa_bits: int) -> None:
    """Add a new key of `alg` in `state`."""
    key = generate_key(alg, rsa_bits=rsa_bits)
    activated = now if state is State.ACTIVE else None
    tx.add(key, Entry(key["kid"], alg, state, now, activated=activated))


def promote(tx: Transaction, kid: str, now: int) -> None:
    """`kid` starts signing; the active key of its algorithm retires."""
    entry = next(e for e in tx.current.entries if e.kid == kid)
    current = tx.current.active(entry.alg)
    if current is not None:  # as this transaction left it (it may have been re-dated)
        retiring = tx.updated.get(current.kid, current.entry)
        tx.update(replace(retiring, state=State.RETIRED, retired=now))
    tx.update(replace(entry, state=State.ACTIVE, activated=now))


def redate(tx: Transaction, kid: str, now: int) -> Entry:
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
    return entry


def upkeep(tx: Transaction, now: int, policy: Policy, rsa_bits: int) -> list[Entry]:
    """Take every step due now; return the entries it re-dated, as they were."""
    redated = []
    for step in upkeep_steps(tx.current.entries, now, policy):
        if step.action is Action.CREATE:
            create(tx, step.subject, State.PENDING, now, rsa_bits)
        elif step.action is Action.PROMOTE:
            promote(tx, step.subject, now)
        elif step.action is Action.REDATE:
            redated.append(redate(tx, step.subject, now))
        else:
            tx.delete(step.subject)
    return redated


def init(tx: Transaction, algs: Iterable[str], now: int, rsa_bits: int) -> None:
    """Create an active key for each algorithm that has none."""
    for alg in dict.fromkeys(algs):
        if tx.current.active(alg) is None:
            create(tx, alg, State.ACTIVE, now, rsa_bits)


def rotate(
    tx: Transaction, algs: Iterable[str] | None, now: int, rsa_bits: int, where: str
) -> None:
    """Pre-publish a successor for each algorithm (default: every one with an active key),
    unless it has a pending one already."""
    current = tx.current
    wanted = (
        list(algs)
        if algs is not None
        else sorted({k.entry.alg for k in current.keys if k.entry.state is State.ACTIVE})
    )
    if not wanted:
        raise KeyStoreError(where, "no active key to rotate")
    for alg in wanted:
        pending = any(k.entry.alg == alg and k.entry.state is State.PENDING for k in current.keys)
        if not pending:
            create(tx, alg, State.PENDING, now, rsa_bits)


def prune(tx: Transaction, now: int, policy: Policy) -> None:
    """Delete the retired keys whose retention has ended; date now the keys dated later."""
    for step in upkeep_steps(tx.current.entries, now, policy):
        if step.action is Action.DELETE:
            tx.delete(step.subject)
        elif step.action is Action.REDATE:
            redate(tx, step.subject, now)


def remove(tx: Transaction, kid: str, *, force: bool, where: str) -> None:
    """Delete `kid`; the active key of an algorithm only with `force`."""
    entry = next((e for e in tx.current.entries if e.kid == kid), None)
    if entry is None:
        raise KeyStoreError(where, f"no key {kid}")
    if entry.state is State.ACTIVE and not force:
        raise KeyStoreError(
            where, f"key {kid} is the active {entry.alg} key; rotate first, or use --force"
        )
    tx.delete(kid)


def importable(key: jwk.JWK) -> jwk.JWK:
    """The public half of another issuer's key, with `alg`, `use` and `kid` filled in where
    missing, validated."""
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
    return public


def add_imported(tx: Transaction, public: jwk.JWK, now: int) -> None:
    """Publish `public` (from `importable`); it never signs."""
    if public["kid"] in {k.kid for k in tx.current.keys}:
        raise InvalidKeyError(f"key {public['kid']} is already in the store")
    tx.add(
        public, Entry(public["kid"], public["alg"], State.PUBLISHED, now, origin=Origin.IMPORTED)
    )
