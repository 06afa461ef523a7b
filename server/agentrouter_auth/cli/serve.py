"""`agentrouter-auth serve`: raise the open-files limit for the connection cap, check the listen
addresses, then run granian's workers.

Each worker builds its app from the environment (`agentrouter_auth.asgi`), so the resolved
configuration (free ports chosen for port 0 included) is exported before they start.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import tempfile
from dataclasses import replace

from agentrouter_auth import logs
from agentrouter_auth.cli.command import Command
from agentrouter_auth.config import (
    SERVE,
    SUPERVISOR_ENV,
    Address,
    ConfigError,
    KeyConfig,
    ServeConfig,
    env_of,
    resolve_max_connections,
    source_of,
    to_environment,
)
from agentrouter_auth.keys.location import warn_of_secret_on_command_line
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import RING_MEMORY_ENV, KeyStoreUnavailableError

MAX_HEADER_BYTES = 64 * 1024
log = logging.getLogger("agentrouter-auth")


def run(ring: KeyRing, config: KeyConfig, args: argparse.Namespace) -> int:
    """Hold the connection cap, load the keys and check the addresses, then bind and serve
    until SIGTERM/SIGINT."""
    assert isinstance(config, ServeConfig)
    config = with_connection_cap(
        config, source_of("max_connections", SERVE, vars(args), os.environ)
    )
    try:
        ring.load()
    except KeyStoreUnavailableError as err:
        # A bad store stops us here, before any port is bound; one that cannot be reached now
        # (a database still starting) may come back: listen, answer not-ready, and retry.
        log.warning(
            "the key store cannot be reached; serving once it answers: %s",
            err,
            extra={"event": "key_store_unreachable_at_start", "reason": err.reason},
        )
    if config.auto_rotate:
        ring.check_policy()  # another rotation policy recorded: refused before binding a port
    # The workers open the store themselves; sessions of this process must not be inherited.
    ring.store.close()
    warn_of_secret_on_command_line(args.key_store or args.keys_dir, variable=env_of("key_store"))
    config = replace(
        config,
        http_addr=concrete(config.http_addr, "--http-addr"),
        grpc_addr=concrete(config.grpc_addr, "--grpc-addr"),
    )
    os.environ.update(to_environment(config))
    os.environ[SUPERVISOR_ENV] = str(os.getpid())  # see Runtime.start
    with (
        tempfile.TemporaryDirectory(prefix="agentrouter-auth-metrics-") as metrics_dir,
        tempfile.TemporaryDirectory(prefix="agentrouter-auth-ring-") as ring_dir,
    ):
        # Workers write their counters here; any worker's /metrics reports the sum.
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
        # The newest ring state any worker accepted: a worker restarted (SIGHUP) or respawned
        # refuses an older one as its predecessor did (keys.postgres.memory).
        os.environ[RING_MEMORY_ENV] = ring_dir
        run_http_server(config)
    return 0


def with_connection_cap(config: ServeConfig, source: str) -> ServeConfig:
    """`config` with its HTTP connection cap resolved (0: the most the open-files limit allows),
    the soft open-files limit raised to hold it (workers inherit it); a cap the limit cannot
    hold is a ConfigError naming `source`. Done here, first, not while options are parsed."""
    limits = config.http_limits
    cap = resolve_max_connections(limits.max_connections, source)
    return replace(config, http_limits=replace(limits, max_connections=cap))


def concrete(address: Address, option: str) -> Address:
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

    from agentrouter_auth.supervisor import Supervisor  # noqa: PLC0415 - imports granian

    limits = config.http_limits
    Supervisor(
        "agentrouter_auth.asgi:create_app",
        address=config.http_addr.host,
        port=config.http_addr.port,
        interface=Interfaces.ASGI,
        # HTTP/1.1 alone unless asked: hyper-util's HTTP version detection (auto mode) reads
        # the first bytes with no timeout, so idle connections would never be closed.
        http=HTTPModes.auto if limits.http2 else HTTPModes.http1,
        workers=config.workers,
        # A worker that dies (killed, out of memory) is replaced, later each time while it
        # keeps dying (Supervisor); the others keep serving. The interval paces SIGHUP reloads.
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


COMMANDS = (Command("serve", "serve GetJWKS", run),)
