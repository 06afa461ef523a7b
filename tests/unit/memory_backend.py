"""A third key store backend, written the way the README says one is added: this module (a
`KeyStore` behind the `KeyStore` contract) and one registry entry, the entry point
`memory = tests.unit.memory_backend:backend` in the group `agentrouter_auth.key_stores`. Nothing
in the project names it.

`memory://NAME` is a store in this process's memory, shared by every store object opened on the
same name (as several store objects of one process share a directory or a database). It keeps
each key as JWK text with its entry and reads it back through the same shared check of a stored
key as the directory and PostgreSQL stores (`keys.check`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from jwcrypto import jwk

from agentrouter_auth.keys.check import check_stored_key, parse_key
from agentrouter_auth.keys.kek import Kek
from agentrouter_auth.keys.material import InvalidKeyError
from agentrouter_auth.keys.registry import Opener
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStore,
    KeyStoreError,
    RecordedPolicy,
    StoredKey,
    Transaction,
    check_one_active_per_alg,
)

SCHEME = "memory"


@dataclass
class Memory:
    """What one named store holds."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    generation: int = 0
    records: dict[str, tuple[Entry, str]] = field(default_factory=dict)
    """kid → (entry, JWK text: private for generated keys)."""
    policy: RecordedPolicy | None = None


MEMORIES: dict[str, Memory] = {}


class MemoryStore:
    """A `KeyStore` in this process's memory."""

    def __init__(self, location: str) -> None:
        self.location = location
        self.memory = MEMORIES.setdefault(location, Memory())

    @property
    def description(self) -> str:
        """The location."""
        return self.location

    def fingerprint(self) -> object:
        """The generation: bumped by every transaction that changes something."""
        return self.memory.generation

    def read(self) -> KeySet:
        """Every key, each through the shared check."""
        with self.memory.lock:
            return self._read()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the store's lock, yield the current set, apply the changes on clean exit."""
        with self.memory.lock:
            tx = Transaction(self._read())
            yield tx
            if not tx.changed:
                return
            result = tx.result()
            check_one_active_per_alg(result, self.location)
            records = {}
            for stored in result.keys:  # a state every read would refuse is never written
                text = stored.key.export(private_key=stored.key.has_private)
                self._check(stored.entry, text)
                records[stored.kid] = (stored.entry, text)
            self.memory.records = records
            self.memory.policy = result.policy
            self.memory.generation += 1

    def close(self) -> None:
        """Nothing is held open."""

    def change_feed(self) -> None:
        """None: the ring polls `fingerprint()`."""

    def _read(self) -> KeySet:
        keys = [
            StoredKey(entry, self._check(entry, text))
            for _, (entry, text) in sorted(self.memory.records.items())
        ]
        key_set = KeySet(tuple(keys), policy=self.memory.policy)
        check_one_active_per_alg(key_set, self.location)
        return key_set

    def _check(self, entry: Entry, text: str) -> jwk.JWK:
        try:
            key = parse_key(text.encode("utf-8", "surrogateescape"))
            check_stored_key(entry, key, record="its entry")
        except InvalidKeyError as err:
            raise KeyStoreError(self.location, f"key {entry.kid}: {err}") from err
        return key


def backend(location: str) -> Opener:
    """The registry entry: check `location` (opens nothing), and say how to open it."""
    if not location.startswith(f"{SCHEME}://") or len(location) == len(f"{SCHEME}://"):
        raise KeyStoreError(location, "a memory store is memory://NAME")

    def open_memory(_keks: Sequence[Kek]) -> KeyStore:
        return MemoryStore(location)

    return open_memory
