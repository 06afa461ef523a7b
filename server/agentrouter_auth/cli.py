"""The `agentrouter-auth` command: `serve`, key management and token signing.

Every option has an AGENTROUTER_AUTH_* environment variable shown in `--help`; errors are one
line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentrouter_auth import __version__, logs
from agentrouter_auth.config import (
    ENV_PREFIX,
    Address,
    ConfigError,
    GrpcLimits,
    HttpLimits,
    ServeConfig,
    TLSConfig,
    parse_address,
    resolve_max_connections,
)
from agentrouter_auth.grpc_server import BindError
from agentrouter_auth.keys.material import (
    DEFAULT_ALGORITHM,
    RSA_SIZES,
    SIGNING_ALGORITHMS,
    InvalidKeyError,
)
from agentrouter_auth.keys.policy import (
    POLICY_FIELDS,
    Policy,
    PolicyError,
    format_duration,
    parse_duration,
)
from agentrouter_auth.keys.ring import Change, KeyRing, SigningError, next_events
from agentrouter_auth.keys.store import DirectoryStore, KeyStoreError
from agentrouter_auth.logs import FORMATS
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
MAX_HEADER_BYTES = 64 * 1024
MAX_WORKERS = 64
# `serve` options handed to worker processes through the environment.
SERVE_OPTIONS: tuple[str, ...] = (
    "keys_dir", "http_addr", "grpc_addr", "grace_period", "reload_interval", "rotation",
    "rsa_bits", "workers", "log_format", "access_log", "tls_cert", "tls_key", "tls_client_ca",
    "http_idle_timeout", "http_body_timeout", "max_connections", "http2", *POLICY_FIELDS,
)  # fmt: skip
# `--grpc-<field>` for every field of GrpcLimits: durations for times, numbers for the rest.
GRPC_LIMITS = {field.name: getattr(GrpcLimits(), field.name) for field in fields(GrpcLimits)}
SERVE_OPTIONS += tuple(f"grpc_{name}" for name in GRPC_LIMITS)
_GRPC_HELP = {
    "max_streams": "concurrent streams per connection (advertised; more are refused)",
    "max_calls": "calls a worker runs at once over all connections (more: RESOURCE_EXHAUSTED)",
    "request_timeout": "time a call gets to send its request message (then DEADLINE_EXCEEDED)",
    "max_resets": "calls a connection may cancel before their request in 10s (then closed)",
    "idle_timeout": "a connection without a call for this long is closed",
    "max_connection_age": "a connection this old is sent GOAWAY (clients reconnect)",
    "max_connection_age_grace": "time the calls of such a connection get before it is closed",
    "handshake_timeout": "time a new connection gets for TLS and the HTTP/2 preface",
    "max_message_size": "largest request message in bytes",
    "max_connections": "open gRPC connections per worker (more are closed at once)",
}
_POLICY_DEFAULTS = {name: format_duration(getattr(Policy(), name)) for name in POLICY_FIELDS}
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


def _common(parser: argparse.ArgumentParser, *, log_format: str = "text") -> None:
    """Options every command takes: the store, the log format and the rotation policy."""
    _option(parser, "--keys-dir", "var/keys", "key store directory", type=Path)
    _option(parser, "--log-format", log_format, "log lines as json or text", choices=FORMATS)
    group = parser.add_argument_group("rotation policy (durations: 90s, 15m, 1h30m, 30d)")
    for name in POLICY_FIELDS:
        _option(group, "--" + name.replace("_", "-"), _POLICY_DEFAULTS[name], _POLICY_HELP[name])
    _option(
        group,
        "--rsa-bits",
        "2048",
        f"size of new RSA keys ({', '.join(map(str, RSA_SIZES))})",
        type=int,
        choices=RSA_SIZES,
    )


def _limit_options(serve: argparse.ArgumentParser) -> None:
    """`serve`'s limits: what one client may hold on each listener."""
    limits = serve.add_argument_group("limits of the HTTP listener (per worker)")
    _option(
        limits,
        "--http-idle-timeout",
        "15s",
        "time a connection gets to send a request head, from connecting or its last response",
    )
    _option(limits, "--http-body-timeout", "10s", "time a request gets to send its whole body")
    _option(
        limits,
        "--max-connections",
        "0",
        "open HTTP connections per worker (0: as many as the open-files limit allows, "
        "at most 8192)",
        type=int,
    )
    _option(
        limits,
        "--http2",
        "off",
        "also serve HTTP/2: h2c and h2 by ALPN (idle connections are then only bounded by "
        "--max-connections until they send their first byte)",
        choices=("on", "off"),
    )
    grpc_limits = serve.add_argument_group("limits of the gRPC listener (per worker)")
    for name, default in GRPC_LIMITS.items():
        shown = format_duration(default) if isinstance(default, float) else str(default)
        _option(grpc_limits, "--grpc-" + name.replace("_", "-"), shown, _GRPC_HELP[name])


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = _Parser(prog=PROG, description="AgentRouter AuthService: publishes the JWKS.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = commands.add_parser("serve", help="serve GetJWKS")
    _common(serve, log_format="json")
    _option(serve, "--http-addr", "127.0.0.1:8080", "HTTP listen address (REST, Connect, gRPC-Web)")
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
    _option(serve, "--workers", "1", "server processes, each serving both listeners", type=int)
    _option(serve, "--access-log", "off", "one log line per request", choices=("on", "off"))
    _option(serve, "--tls-cert", "", "PEM certificate (chain) for both listeners; enables TLS")
    _option(serve, "--tls-key", "", "PEM private key of --tls-cert")
    _option(serve, "--tls-client-ca", "", "PEM CA bundle: require client certificates (mTLS)")
    _limit_options(serve)

    keys = commands.add_parser("keys", help="manage the key store")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    algs = sorted(SIGNING_ALGORITHMS)
    init = key_commands.add_parser("init", help="create an active key per algorithm that has none")
    _common(init)
    init.add_argument(
        "--alg", action="append", choices=algs, help=f"repeatable (default {DEFAULT_ALGORITHM})"
    )
    rotate = key_commands.add_parser("rotate", help="pre-publish a successor for active keys")
    _common(rotate)
    rotate.add_argument("--alg", choices=algs, help="only this algorithm (default: all active)")
    listing = key_commands.add_parser("list", help="show keys, states and what happens next")
    _common(listing)
    listing.add_argument("--json", action="store_true", help="one JSON document")
    imported = key_commands.add_parser("import", help="publish another issuer's public key")
    _common(imported)
    imported.add_argument("file", type=Path, help="a JWK file (private members are dropped)")
    remove = key_commands.add_parser("remove", help="stop publishing a key now")
    _common(remove)
    remove.add_argument("kid", help="the key's id (write `-- KID`: a kid may begin with '-')")
    remove.add_argument(
        "--force", action="store_true", help="also remove an active key (a compromised one)"
    )
    prune = key_commands.add_parser("prune", help="delete retired keys past their retention")
    _common(prune)

    token = commands.add_parser("token", help="tokens signed by the active key")
    token_commands = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    sign = token_commands.add_parser("sign", help="print a compact JWS of the given claims")
    _common(sign)
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
    logs.configure(args.log_format)
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
    except OSError as err:  # a file or socket the store does not name itself
        where = f"{err.filename}: " if err.filename else ""
        return _fail(f"{where}{err.strerror or err}")
    except Exception as err:  # the last resort: one line, never a traceback
        return _fail(f"unexpected {type(err).__name__} (please report it): {err}")


def _subcommand(args: argparse.Namespace) -> str | None:
    return getattr(args, "keys_command", None) or getattr(args, "token_command", None)


def _fail(message: str) -> int:
    """Report an error as one line on stderr (a message may quote text with line breaks)."""
    line = " ".join(message.split()) or "failed"
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return 1


def _report(changes: list[Change], nothing: str) -> int:
    for change in changes:
        log.info("%s", change, extra={"event": "key_state_changed", **change.fields()})
    if not changes:
        log.info("%s", nothing)
    return 0


def serve_config(args: argparse.Namespace, policy: Policy) -> ServeConfig:
    """The validated `serve` configuration."""
    config = ServeConfig(
        keys_dir=args.keys_dir,
        http_addr=parse_address("--http-addr", args.http_addr),
        grpc_addr=parse_address("--grpc-addr", args.grpc_addr),
        grace_seconds=parse_duration("--grace-period", args.grace_period),
        reload_interval=parse_duration("--reload-interval", args.reload_interval),
        auto_rotate=args.rotation == "auto",
        policy=policy,
        workers=args.workers,
        log_format=args.log_format,
        access_log=args.access_log == "on",
        tls=TLSConfig.parse(args.tls_cert, args.tls_key, args.tls_client_ca),
        http_limits=http_limits(args),
        grpc_limits=grpc_limits(args),
    )
    if not 1 <= config.workers <= MAX_WORKERS:
        raise ConfigError(f"--workers must be from 1 to {MAX_WORKERS}")
    if config.reload_interval <= 0:
        raise ConfigError("--reload-interval must be longer than zero")
    if config.http_addr == config.grpc_addr and config.http_addr.port:
        raise ConfigError("--http-addr and --grpc-addr must differ")
    return config


def http_limits(args: argparse.Namespace) -> HttpLimits:
    """The validated limits of the HTTP listener."""
    idle = parse_duration("--http-idle-timeout", args.http_idle_timeout)
    body = parse_duration("--http-body-timeout", args.http_body_timeout)
    for option, value in (("--http-idle-timeout", idle), ("--http-body-timeout", body)):
        if not 0.1 <= value <= 3600:
            raise ConfigError(f"{option} must be from 100ms to 1h")
    if args.max_connections < 0:
        raise ConfigError("--max-connections must not be negative")
    return HttpLimits(
        idle_timeout=idle,
        body_timeout=body,
        max_connections=resolve_max_connections(args.max_connections),
        http2=args.http2 == "on",
    )


def grpc_limits(args: argparse.Namespace) -> GrpcLimits:
    """The validated limits of the gRPC listener."""
    values: dict[str, float] = {}
    for name, default in GRPC_LIMITS.items():
        option, text = "--grpc-" + name.replace("_", "-"), getattr(args, f"grpc_{name}")
        if isinstance(default, float):
            values[name] = parse_duration(option, text)
        elif text.strip().isdigit():
            values[name] = int(text)
        else:
            raise ConfigError(f"{option}: expected a whole number, got {text!r}")
    try:
        return GrpcLimits(**values)  # type: ignore[arg-type] # ints where ints are due
    except ValueError as err:
        name = str(err).partition(".")[2].partition(" ")[0]
        raise ConfigError(
            f"--grpc-{name.replace('_', '-')} must be above 0 and at most 2147483647"
        ) from err


def serve_setup_from_environment() -> tuple[ServeConfig, KeyRing]:
    """Configuration and a loaded key ring from AGENTROUTER_AUTH_* variables (worker side)."""
    args = build_parser().parse_args(["serve"])
    ring = KeyRing(DirectoryStore(args.keys_dir), policy_from(args), rsa_bits=args.rsa_bits)
    config = serve_config(args, ring.policy)
    ring.load()
    return config, ring


def cmd_serve(ring: KeyRing, args: argparse.Namespace) -> int:
    """Validate everything and load the keys, then bind and serve until SIGTERM/SIGINT.

    Worker processes rebuild the same configuration from the environment, so the resolved
    options (free ports chosen for port 0 included) are exported before they start.
    """
    config = serve_config(args, ring.policy)
    ring.load()
    config = replace(
        config,
        http_addr=_concrete(config.http_addr, "--http-addr"),
        grpc_addr=_concrete(config.grpc_addr, "--grpc-addr"),
    )
    exported = vars(args) | {
        "http_addr": str(config.http_addr),
        "grpc_addr": str(config.grpc_addr),
        "max_connections": config.http_limits.max_connections,
    }
    for dest in SERVE_OPTIONS:
        os.environ[ENV_PREFIX + dest.upper()] = str(exported[dest])
    with tempfile.TemporaryDirectory(prefix="agentrouter-auth-metrics-") as metrics_dir:
        # Workers write their counters here; any worker's /metrics reports the sum.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        run_http_server(config)
    return 0


def _concrete(address: Address, option: str) -> Address:
    """Check that `address` can be bound; pick a free port for port 0."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM)
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
            port = probe.getsockname()[1]
    except OSError as err:
        raise ConfigError(f"{option} {address}: {err.strerror or err}") from err
    return Address(address.host, port)


def run_http_server(config: ServeConfig) -> None:
    """Serve the ASGI app with granian (HTTP/1.1, and HTTP/2 by prior knowledge or ALPN)
    in `config.workers` processes until SIGTERM/SIGINT."""
    from granian.constants import (  # noqa: PLC0415 - only `serve` needs granian
        HTTPModes,
        Interfaces,
        SSLProtocols,
    )
    from granian.http import HTTP1Settings, HTTP2Settings  # noqa: PLC0415
    from granian.server import Server  # noqa: PLC0415

    limits = config.http_limits
    Server(
        "agentrouter_auth.asgi:create_app",
        address=config.http_addr.host,
        port=config.http_addr.port,
        interface=Interfaces.ASGI,
        # HTTP/1.1 alone unless asked: hyper-util's HTTP version detection (auto mode) reads
        # the first bytes with no timeout, so idle connections would never be closed.
        http=HTTPModes.auto if limits.http2 else HTTPModes.http1,
        workers=config.workers,
        # A worker that dies (killed, out of memory) is replaced; the others keep serving.
        respawn_failed_workers=True,
        respawn_interval=1.0,
        backpressure=limits.max_connections,
        factory=True,
        websockets=False,
        log_enabled=True,
        log_dictconfig=logs.granian_config(config.log_format),
        ssl_cert=config.tls.cert if config.tls else None,
        ssl_key=config.tls.key if config.tls else None,
        ssl_ca=config.tls.client_ca if config.tls else None,
        ssl_client_verify=bool(config.tls and config.tls.client_ca),
        ssl_protocol_min=SSLProtocols.tls12,
        workers_kill_timeout=int(config.grace_seconds) + 5,
        # Request heads over 64 KiB are refused (431) rather than buffered. hyper's header read
        # timer starts whenever a connection waits for a request head: on connect and after
        # each response, so it is the idle timeout too.
        http1_settings=HTTP1Settings(
            max_buffer_size=MAX_HEADER_BYTES,
            header_read_timeout=int(limits.idle_timeout * 1000),
        ),
        http2_settings=HTTP2Settings(
            max_headers_size=MAX_HEADER_BYTES,
            max_concurrent_streams=limits.http2_max_streams,
            keep_alive_interval=int(limits.http2_keepalive * 1000),
            keep_alive_timeout=max(1, int(limits.http2_keepalive)),
        ),
    ).serve()


def cmd_init(ring: KeyRing, args: argparse.Namespace) -> int:
    """Create the first signing key(s)."""
    return _report(ring.init(args.alg or [DEFAULT_ALGORITHM]), "every algorithm has an active key")


def cmd_rotate(ring: KeyRing, args: argparse.Namespace) -> int:
    """Pre-publish successors."""
    changes = ring.rotate([args.alg] if args.alg else None)
    return _report(changes, "a successor is already pending; nothing to do")


def cmd_remove(ring: KeyRing, args: argparse.Namespace) -> int:
    """Stop publishing a key."""
    return _report(ring.remove(args.kid, force=args.force), "")


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
    ("keys", "remove"): cmd_remove,
    ("token", "sign"): cmd_sign,
}
