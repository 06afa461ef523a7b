"""The key ring's health, as the health endpoints and metrics report it."""

from __future__ import annotations

from dataclasses import dataclass


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
    policy_conflict: bool = False
    """Whether `rotation_error` is another rotation policy recorded in the store (the steps
    stop until they agree), not a store that cannot be written."""
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
