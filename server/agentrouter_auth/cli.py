"""The `agentrouter-auth` command: `serve`, key management and token signing.

Every option has an AGENTROUTER_AUTH_* environment variable shown in `--help`; errors are one
line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentrouter_auth import __version__
from agentrouter_auth.config import ENV_PREFIX, ConfigError, ServeConfig, parse_address
from agentrouter_auth.grpc_server import BindError, GrpcServer, start_grpc_server
from agentrouter_auth.keys.material import (
    DEFAULT_ALGORITHM,
    RSA_SIZES,
    SIGNING_ALGORITHMS,
    InvalidKeyError,
)
from agentrouter_auth.keys.policy import POLICY_FIELDS, Policy, PolicyError, parse_duration
from agentrouter_auth.keys.ring import Change, KeyRing, SigningError, next_event
from agentrouter_auth.keys.store import DirectoryStore, KeyStoreError
from agentrouter_auth.service import AuthService
from agentrouter_auth.snapshot import EmptyKeySetError, KeySetError

PROG = "agentrouter-auth"
log = logging.getLogger(PROG)
ERRORS = (
    ConfigError,
    PolicyError,
    KeyStoreError,
    KeySetError,
    InvalidKeyError,
    SigningError,
    BindError,
)
_POLICY_DEFAULTS = {
    name: value
    for name, value in zip(
        POLICY_FIELDS, ("30d", "1d", "1d", "1h", "5m", "5m", "1m", "1d"), strict=True
    )
}
_POLICY_HELP = {
    "rotation_period": "how long a key signs before its successor takes over",
    "publish_ahead": "how long a new key is published before it signs",
    "retain_after": "how long a retired key stays published (>= max token ttl + clock skew)",
    "max_token_ttl": "longest lifetime of a token the ring signs",
    "clock_skew": "clock difference tolerated between issuer and verifiers",
    "cache_max_age": "HTTP max-age of the set (max-age + stale-while-revalidate <= publish "
    "ahead / 2)",
    "stale_while_revalidate": "HTTP stale-while-revalidate of the set",
    "stale_if_error": "HTTP stale-if-error of the set",
}


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _option(
    parser: argparse._ActionsContainer,
    flag: str,
    default: str,
    text: str,
    **kw: Any,  # noqa: ANN401 - passed through to add_argument
) -> None:
    """Add `flag` whose default comes from AGENTROUTER_AUTH_<FLAG>, documented in --help."""
    env = ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()
    parser.add_argument(
        flag,
        default=os.environ.get(env, default),
        help=f"{text} (env {env}; default {default})",
        **kw,
    )


def _common(parser: argparse.ArgumentParser, *, policy: bool) -> None:
    _option(parser, "--keys-dir", "var/keys", "key store directory", type=Path)
    if policy:
        group = parser.add_argument_group("rotation policy (durations: 90s, 15m, 1h30m, 30d)")
        for name in POLICY_FIELDS:
            _option(
                group, "--" + name.replace("_", "-"), _POLICY_DEFAULTS[name], _POLICY_HELP[name]
            )
        _option(
            group,
            "--rsa-bits",
            "2048",
            f"size of new RSA keys ({', '.join(map(str, RSA_SIZES))})",
            type=int,
            choices=RSA_SIZES,
        )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(prog=PROG, description="AgentRouter AuthService: publishes the JWKS.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve GetJWKS")
    _common(serve, policy=True)
    _option(serve, "--grpc-addr", "127.0.0.1:9090", "gRPC listen address, HOST:PORT")
    _option(serve, "--grace-period", "10s", "time in-flight requests get to finish on SIGTERM")
    _option(serve, "--reload-interval", "2s", "how often the key store is checked for changes")
    _option(
        serve,
        "--rotation",
        "auto",
        "rotate keys automatically per the policy",
        choices=("auto", "off"),
    )

    keys = commands.add_parser("keys", help="manage the key store")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    algs = sorted(SIGNING_ALGORITHMS)
    init = key_commands.add_parser("init", help="create an active key per algorithm that has none")
    _common(init, policy=True)
    init.add_argument(
        "--alg", action="append", choices=algs, help=f"repeatable (default {DEFAULT_ALGORITHM})"
    )
    rotate = key_commands.add_parser("rotate", help="pre-publish a successor for active keys")
    _common(rotate, policy=True)
    rotate.add_argument("--alg", choices=algs, help="only this algorithm (default: all active)")
    listing = key_commands.add_parser("list", help="show keys, states and what happens next")
    _common(listing, policy=True)
    listing.add_argument("--json", action="store_true", help="one JSON document")
    imported = key_commands.add_parser("import", help="publish another issuer's public key")
    _common(imported, policy=True)
    imported.add_argument("file", type=Path, help="a JWK file (private members are dropped)")
    prune = key_commands.add_parser("prune", help="delete retired keys past their retention")
    _common(prune, policy=True)

    token = commands.add_parser("token", help="tokens signed by the active key")
    token_commands = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    sign = token_commands.add_parser("sign", help="print a compact JWS of the given claims")
    _common(sign, policy=True)
    sign.add_argument("--claims", required=True, help='a JSON object, e.g. \'{"sub":"svc"}\'')
    sign.add_argument("--ttl", help="token lifetime (default: --max-token-ttl)")
    sign.add_argument("--alg", choices=algs, help="algorithm (default: the only active one)")
    return parser


def policy_from(args: argparse.Namespace) -> Policy:
    """The validated policy from the command line and environment."""
    values = {
        name: parse_duration("--" + name.replace("_", "-"), getattr(args, name))
        for name in POLICY_FIELDS
    }
    return Policy(**values)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        ring = KeyRing(DirectoryStore(args.keys_dir), policy_from(args), rsa_bits=args.rsa_bits)
        handler = _HANDLERS[(args.command, _subcommand(args))]
        return handler(ring, args)
    except EmptyKeySetError:
        return _fail(
            f"no keys in {args.keys_dir}: create one with `{PROG} keys init --keys-dir "
            f"{args.keys_dir}`"
        )
    except ERRORS as err:
        return _fail(str(err))


def _subcommand(args: argparse.Namespace) -> str | None:
    return getattr(args, "keys_command", None) or getattr(args, "token_command", None)


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def _report(changes: list[Change], nothing: str) -> int:
    for change in changes:
        log.info("%s", change)
    if not changes:
        log.info("%s", nothing)
    return 0


def cmd_serve(ring: KeyRing, args: argparse.Namespace) -> int:
    """Validate everything, load the keys, and only then bind and serve."""
    config = ServeConfig(
        keys_dir=args.keys_dir,
        grpc_addr=parse_address("--grpc-addr", args.grpc_addr),
        grace_seconds=parse_duration("--grace-period", args.grace_period),
        reload_interval=parse_duration("--reload-interval", args.reload_interval),
        auto_rotate=args.rotation == "auto",
        rsa_bits=args.rsa_bits,
        policy=ring.policy,
    )
    if config.reload_interval <= 0:
        raise ConfigError("--reload-interval must be longer than zero")
    ring.load()
    asyncio.run(serve(config, ring))
    return 0


def cmd_init(ring: KeyRing, args: argparse.Namespace) -> int:
    """Create the first signing key(s)."""
    return _report(ring.init(args.alg or [DEFAULT_ALGORITHM]), "every algorithm has an active key")


def cmd_rotate(ring: KeyRing, args: argparse.Namespace) -> int:
    """Pre-publish successors."""
    changes = ring.rotate([args.alg] if args.alg else None)
    return _report(changes, "a successor is already pending; nothing to do")


def cmd_prune(ring: KeyRing, _args: argparse.Namespace) -> int:
    """Delete expired retired keys."""
    return _report(ring.prune(), "no retired key has reached the end of its retention")


def cmd_import(ring: KeyRing, args: argparse.Namespace) -> int:
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


def cmd_list(ring: KeyRing, args: argparse.Namespace) -> int:
    """Show every key, its state and its next lifecycle step."""
    rows = []
    for stored in ring.store.read().keys:
        record = stored.entry.to_json()
        upcoming = next_event(stored.entry, ring.policy)
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


def _time(value: int | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_sign(ring: KeyRing, args: argparse.Namespace) -> int:
    """Print a compact JWS signed by the active key."""
    try:
        claims = json.loads(args.claims)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--claims: not JSON: {err}") from err
    if not isinstance(claims, dict):
        raise ConfigError("--claims: must be a JSON object")
    ttl = parse_duration("--ttl", args.ttl) if args.ttl else None
    ring.load()
    print(ring.sign(claims, alg=args.alg, ttl=ttl))
    return 0


_HANDLERS: dict[tuple[str, str | None], Callable[[KeyRing, argparse.Namespace], int]] = {
    ("serve", None): cmd_serve,
    ("keys", "init"): cmd_init,
    ("keys", "rotate"): cmd_rotate,
    ("keys", "list"): cmd_list,
    ("keys", "import"): cmd_import,
    ("keys", "prune"): cmd_prune,
    ("token", "sign"): cmd_sign,
}


async def serve(config: ServeConfig, ring: KeyRing) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls within the grace period."""
    server = await start_grpc_server(
        AuthService(ring), config.grpc_addr.host, config.grpc_addr.port
    )
    bound = type(config.grpc_addr)(config.grpc_addr.host, server.port)
    log.info("gRPC listening on %s (keys: %s)", bound, ", ".join(ring.snapshot().kids))
    maintenance = asyncio.create_task(maintain(ring, server, config))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: draining for up to %ss", config.grace_seconds)
    maintenance.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await maintenance
    await server.stop(config.grace_seconds)
    log.info("stopped")


async def maintain(ring: KeyRing, server: GrpcServer, config: ServeConfig) -> None:
    """Every reload interval: take due rotation steps, then pick up any change to the store."""
    last_error = ""
    while True:
        await asyncio.sleep(config.reload_interval)
        if config.auto_rotate:
            try:
                for change in await asyncio.to_thread(ring.step):
                    log.info("rotation step applied: %s", change)
                last_error = ""
            except (KeyStoreError, OSError) as err:
                if str(err) != last_error:
                    log.error("rotation step failed: %s", err)
                last_error = str(err)
        await asyncio.to_thread(ring.refresh)
        await server.set_keyring_health(ring.status().healthy)
