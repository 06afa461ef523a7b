"""`agentrouter-auth store …`: a store's own schema, encryption at rest and ring state.

Each command asks the store for a capability (`keys.capabilities`) rather than for a backend:
the PostgreSQL store has them all, the directory store none, and a new backend gets a command
by having its capability.
"""

from __future__ import annotations

import argparse
import logging

from agentrouter_auth.cli.command import Command
from agentrouter_auth.config import ConfigError, KeyConfig
from agentrouter_auth.keys.capabilities import Migrating, Rekeying, Sealing
from agentrouter_auth.keys.ring import KeyRing

HELP = "the PostgreSQL key store's schema, encryption and ring state (migrate, rekey, seal)"
log = logging.getLogger("agentrouter-auth")


def _incapable(ring: KeyRing, command: str, why: str) -> ConfigError:
    """The one-line refusal of a command the ring's store has no capability for."""
    return ConfigError(f"{command}: {ring.store.description} is a directory store: {why}")


def migrate(ring: KeyRing, _config: KeyConfig, _args: argparse.Namespace) -> int:
    """Apply the schema migrations the database lacks."""
    store = ring.store
    if not isinstance(store, Migrating):
        raise _incapable(ring, "store migrate", "it has no schema to migrate")
    applied = store.migrate()
    for migration in applied:
        log.info(
            "applied migration %04d %s",
            migration.version,
            migration.name,
            extra={"event": "migration_applied", "version": migration.version},
        )
    log.info(
        "the schema of %s is at version %d",
        store.description,
        store.schema_version(),
        extra={"event": "schema_version", "applied": len(applied)},
    )
    return 0


def rekey(ring: KeyRing, _config: KeyConfig, _args: argparse.Namespace) -> int:
    """Re-encrypt every private key under the first --kek-file."""
    store = ring.store
    if not isinstance(store, Rekeying):
        why = "its private keys are files of mode 0600, not encrypted"
        raise _incapable(ring, "store rekey", why)
    sealed, moved = store.rekey()
    kek = store.sealing_kek
    log.info(
        "re-encrypted %d private key(s) under the KEK %s (%s); %d were under another KEK",
        sealed,
        kek.id.hex(),
        kek.path,
        moved,
        extra={"event": "rekeyed", "keys": sealed, "moved": moved, "kek": kek.id.hex()},
    )
    return 0


def seal(ring: KeyRing, _config: KeyConfig, _args: argparse.Namespace) -> int:
    """Accept the key rows as they are now: seal them as the ring state's next generation."""
    store = ring.store
    if not isinstance(store, Sealing):
        raise _incapable(ring, "store seal", "its manifest is the list of keys")
    before, after = store.seal()
    for key in after.keys:
        log.info(
            "sealed key %s (%s)",
            key.kid,
            key.state,
            extra={"event": "key_sealed", "kid": key.kid, "state": key.state},
        )
    log.info(
        "sealed %d key row(s) as generation %d of the ring state (it was %s)",
        len(after.keys),
        after.generation,
        "missing or not verifiable" if before is None else f"at generation {before.generation}",
        extra={"event": "ring_sealed", "generation": after.generation, "keys": len(after.keys)},
    )
    return 0


COMMANDS = (
    Command("store migrate", "apply the PostgreSQL schema migrations the database lacks", migrate),
    Command(
        "store rekey",
        "re-encrypt every private key under the first --kek-file (one transaction)",
        rekey,
    ),
    Command(
        "store seal",
        "accept the key rows as they are now (after a restore or a repair by hand)",
        seal,
    ),
)
