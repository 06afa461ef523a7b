"""What a store may do beyond the `KeyStore` contract: optional capabilities its own commands
(`agentrouter-auth store …`) ask for, so the CLI names no backend.

A backend that keeps a schema, seals private keys under key-encryption keys or seals its ring
state implements the matching protocol; the command checks for the capability, and refuses a
store without it in one line. The PostgreSQL store has all three; the directory store none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agentrouter_auth.keys.kek import Kek


class AppliedMigration(Protocol):
    """One schema migration."""

    @property
    def version(self) -> int:
        """Its number."""
        ...

    @property
    def name(self) -> str:
        """Its name."""
        ...


@runtime_checkable
class Migrating(Protocol):
    """A store with a versioned schema (`store migrate`)."""

    @property
    def description(self) -> str:
        """Where the keys live, for messages."""
        ...

    def migrate(self) -> Sequence[AppliedMigration]:
        """Apply the migrations the store lacks; return those applied here."""
        ...

    def schema_version(self) -> int:
        """The version of the store's schema now."""
        ...


@runtime_checkable
class Rekeying(Protocol):
    """A store that keeps private keys sealed under key-encryption keys (`store rekey`)."""

    @property
    def sealing_kek(self) -> Kek:
        """The KEK new seals are made under (the first --kek-file)."""
        ...

    def rekey(self) -> tuple[int, int]:
        """Seal every private key again under `sealing_kek`: (keys sealed, of which were under
        another KEK)."""
        ...


class SealedKey(Protocol):
    """A key as a sealed ring state lists it."""

    @property
    def kid(self) -> str:
        """Its id."""
        ...

    @property
    def state(self) -> str:
        """Its state."""
        ...


class SealedState(Protocol):
    """A sealed ring state: a generation and the keys it lists."""

    @property
    def generation(self) -> int:
        """Its generation."""
        ...

    @property
    def keys(self) -> Sequence[SealedKey]:
        """The keys it lists."""
        ...


@runtime_checkable
class Sealing(Protocol):
    """A store whose keys must agree with a sealed ring state (`store seal`)."""

    def seal(self) -> tuple[SealedState | None, SealedState]:
        """Accept the keys as they are now as the state's next generation: (the state replaced,
        None if missing or forged; the new one)."""
        ...
