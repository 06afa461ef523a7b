"""`agentrouter-auth keys …`: create, rotate, list, import, prune, remove and copy keys."""

from __future__ import annotations

import argparse
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentrouter_auth.cli.command import Command
from agentrouter_auth.config import ConfigError, KeyConfig
from agentrouter_auth.keys.material import DEFAULT_ALGORITHM, SIGNING_ALGORITHMS, InvalidKeyError
from agentrouter_auth.keys.registry import open_store
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.schedule import next_events
from agentrouter_auth.keys.store import RecordedPolicy
from agentrouter_auth.keys.transfer import copy_keys
from agentrouter_auth.keys.transitions import Change

HELP = "manage the key store"
ALGORITHMS = sorted(SIGNING_ALGORITHMS)
log = logging.getLogger("agentrouter-auth")


def _report(changes: list[Change], nothing: str) -> int:
    for change in changes:
        log.info("%s", change, extra={"event": "key_state_changed", **change.fields()})
    if not changes:
        log.info("%s", nothing)
    return 0


def init(ring: KeyRing, _config: KeyConfig, args: argparse.Namespace) -> int:
    """Create the first signing key(s)."""
    return _report(ring.init(args.alg or [DEFAULT_ALGORITHM]), "every algorithm has an active key")


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alg",
        action="append",
        choices=ALGORITHMS,
        help=f"repeatable (default {DEFAULT_ALGORITHM})",
    )


def rotate(ring: KeyRing, _config: KeyConfig, args: argparse.Namespace) -> int:
    """Pre-publish successors."""
    changes = ring.rotate([args.alg] if args.alg else None)
    return _report(changes, "a successor is already pending; nothing to do")


def _rotate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--alg", choices=ALGORITHMS, help="only this algorithm (default: all active)"
    )


def remove(ring: KeyRing, _config: KeyConfig, args: argparse.Namespace) -> int:
    """Stop publishing a key."""
    return _report(ring.remove(args.kid, force=args.force), "")


def _remove_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kid", help="the key's id (write `-- KID`: a kid may begin with '-')")
    parser.add_argument(
        "--force", action="store_true", help="also remove an active key (a compromised one)"
    )


def prune(ring: KeyRing, _config: KeyConfig, _args: argparse.Namespace) -> int:
    """Delete expired retired keys."""
    return _report(ring.prune(), "no retired key has reached the end of its retention")


def import_key(ring: KeyRing, _config: KeyConfig, args: argparse.Namespace) -> int:
    """Publish another issuer's public key."""
    try:
        key = jwk.JWK.from_json(args.file.read_text())
    except OSError as err:
        raise ConfigError(f"{args.file}: unreadable: {err.strerror or err}") from err
    except (ValueError, KeyError, TypeError, JWException) as err:
        raise ConfigError(f"{args.file}: not a valid JWK: {err}") from err
    try:
        changes = ring.import_key(key)
    except InvalidKeyError as err:
        raise ConfigError(f"{args.file}: {err}") from err
    return _report(changes, "")


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="a JWK file (private members are dropped)")


def list_keys(ring: KeyRing, _config: KeyConfig, args: argparse.Namespace) -> int:
    """Show every key, its state and its next lifecycle step."""
    rows = []
    key_set = ring.store.read()
    upcoming_by_kid = next_events(key_set.entries, ring.policy)
    for stored in key_set.keys:
        record = stored.entry.to_json()
        upcoming = upcoming_by_kid.get(stored.kid)
        record["next"] = {"event": upcoming[0], "at": upcoming[1]} if upcoming else None
        rows.append(record)
    if args.json:
        print(json.dumps({"keys": rows}, indent=2))
        return 0
    header = ("KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED", "NEXT")
    table = [header] + [
        (
            r["kid"],
            r["alg"],
            r["state"],
            _time(r["created"]),
            _time(r.get("activated")),
            _time(r.get("retired")),
            f"{r['next']['event']} {_time(r['next']['at'])}" if r["next"] else "-",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON document")


def copy(ring: KeyRing, config: KeyConfig, args: argparse.Namespace) -> int:
    """Copy every key, with its state and times, into another store."""
    source = ring.store if args.source is None else open_store(args.source, keks=config.keks)
    try:
        target = open_store(args.to, keks=config.keks)
        try:
            changes = copy_keys(source, target, replace=args.replace)
        finally:
            target.close()
    finally:
        if source is not ring.store:
            source.close()
    log.info(
        "copied the keys of %s to %s",
        source.description,
        target.description,
        extra={"event": "keys_copied", "from": source.description, "to": target.description},
    )
    return _report(changes, "")


def _copy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="source", metavar="LOCATION",
        help="the store to copy from (default: --key-store)",
    )  # fmt: skip
    parser.add_argument(
        "--to", required=True, metavar="LOCATION",
        help="the store to copy into (a directory or a URL, as --key-store); it must be empty",
    )  # fmt: skip
    parser.add_argument(
        "--replace", action="store_true",
        help="copy into a store that holds keys: it then holds exactly the copied ones",
    )  # fmt: skip


def policy(ring: KeyRing, _config: KeyConfig, args: argparse.Namespace) -> int:
    """Show the rotation policy the store records for its ring; with --set, record this
    command's policy options (`--rotation-period`, `--publish-ahead`, `--retain-after`)."""
    if not args.set:
        recorded = ring.store.read().policy
        print(recorded or "none recorded: the first server with --rotation auto records its own")
        return 0
    wanted = RecordedPolicy.of(ring.policy)
    with ring.store.transaction() as tx:
        before = tx.current.policy
        tx.record_policy(wanted)
    log.info(
        "the key store records the rotation policy %s (it was %s); servers with another stop "
        "rotating until restarted with it",
        wanted,
        before or "none",
        extra={"event": "rotation_policy_recorded", "policy": wanted.to_json()},
    )
    return 0


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", action="store_true",
        help="record this command's --rotation-period, --publish-ahead and --retain-after",
    )  # fmt: skip


def _time(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


COMMANDS = (
    Command("keys init", "create an active key per algorithm that has none", init, _init_arguments),
    Command("keys rotate", "pre-publish a successor for active keys", rotate, _rotate_arguments),
    Command("keys list", "show keys, states and what happens next", list_keys, _list_arguments),
    Command("keys import", "publish another issuer's public key", import_key, _import_arguments),
    Command("keys remove", "stop publishing a key now", remove, _remove_arguments),
    Command("keys prune", "delete retired keys past their retention", prune),
    Command(
        "keys policy",
        "show the ring's recorded rotation policy; --set records this command's",
        policy,
        _policy_arguments,
    ),
    Command(
        "keys copy",
        "copy every key, state and time into another store (directory, PostgreSQL)",
        copy,
        _copy_arguments,
    ),
)
