"""The `agentrouter-auth` command: `serve` and key management."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from agentrouter_auth import __version__
from agentrouter_auth.config import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_GRPC_ADDR,
    DEFAULT_KEYS_DIR,
    ENV_PREFIX,
    ConfigError,
    ServeConfig,
    parse_address,
    parse_seconds,
)
from agentrouter_auth.grpc_server import BindError, start_grpc_server
from agentrouter_auth.keys.material import ALGORITHMS, DEFAULT_ALGORITHM, generate_key
from agentrouter_auth.keys.store import KeyDirectory, KeyFileError
from agentrouter_auth.service import AuthService
from agentrouter_auth.snapshot import KeySetError, Snapshot, StaticKeySet, render

PROG = "agentrouter-auth"
log = logging.getLogger(PROG)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _env(name: str, default: str) -> str:
    return os.environ.get(ENV_PREFIX + name, default)


def _keys_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keys-dir",
        type=Path,
        default=Path(_env("KEYS_DIR", DEFAULT_KEYS_DIR)),
        help=f"key store directory (env {ENV_PREFIX}KEYS_DIR; default %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface, every option with its environment variable."""
    parser = _Parser(prog=PROG, description="AgentRouter AuthService: publishes the JWKS.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve GetJWKS")
    _keys_dir_option(serve)
    serve.add_argument(
        "--grpc-addr",
        default=_env("GRPC_ADDR", DEFAULT_GRPC_ADDR),
        help=f"gRPC listen address, HOST:PORT (env {ENV_PREFIX}GRPC_ADDR; default %(default)s)",
    )
    serve.add_argument(
        "--grace-period",
        default=_env("GRACE_PERIOD", str(DEFAULT_GRACE_SECONDS)),
        help="seconds in-flight requests get to finish on SIGTERM/SIGINT "
        f"(env {ENV_PREFIX}GRACE_PERIOD; default %(default)s)",
    )

    keys = commands.add_parser("keys", help="manage the key store")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    init = key_commands.add_parser("init", help="create a signing key if the store has none")
    _keys_dir_option(init)
    init.add_argument(
        "--alg",
        choices=sorted(ALGORITHMS),
        default=DEFAULT_ALGORITHM,
        help="algorithm of the first key (default %(default)s)",
    )
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the process exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"{PROG}: %(message)s", stream=sys.stderr)
    try:
        if args.command == "serve":
            config = ServeConfig(
                keys_dir=args.keys_dir,
                grpc_addr=parse_address("--grpc-addr", args.grpc_addr),
                grace_seconds=parse_seconds("--grace-period", args.grace_period),
            )
            keys = KeyDirectory(config.keys_dir).load()
            if not keys:
                raise ConfigError(
                    f"no keys in {config.keys_dir}: create one with "
                    f"`{PROG} keys init --keys-dir {config.keys_dir}`"
                )
            snapshot = render(keys)
            asyncio.run(serve(config, snapshot))
        elif args.command == "keys" and args.keys_command == "init":
            return keys_init(KeyDirectory(args.keys_dir), args.alg)
    except (ConfigError, KeyFileError, KeySetError, BindError) as err:
        return _fail(str(err))
    return 0


def keys_init(store: KeyDirectory, alg: str) -> int:
    """Create the first signing key unless the store already holds keys."""
    existing = store.load()
    if existing:
        log.info("%s already holds %d key(s); nothing to do", store.path, len(existing))
        return 0
    path = store.add(generate_key(alg))
    log.info("created %s key %s", alg, path)
    return 0


async def serve(config: ServeConfig, snapshot: Snapshot) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls within the grace period."""
    server = await start_grpc_server(
        AuthService(StaticKeySet(snapshot)), config.grpc_addr.host, config.grpc_addr.port
    )
    bound = type(config.grpc_addr)(config.grpc_addr.host, server.port)
    log.info("gRPC listening on %s (keys: %s)", bound, ", ".join(snapshot.kids))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.info("stopping: draining for up to %ss", config.grace_seconds)
    await server.stop(config.grace_seconds)
    log.info("stopped")
