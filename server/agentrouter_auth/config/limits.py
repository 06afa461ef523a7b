"""What one client may hold on each listener, and the file descriptors a worker needs for it.

A field that is an option carries its help in its metadata (`help_of`): the option table builds
the row from the field, so the words shown by `--help` are written once, here, beside the value
they describe (the README's Limits section says more).

`resolve_max_connections` is the one system call of the configuration (it raises the soft
open-files limit); `serve` makes it when it starts, never while options are parsed, so that
parsing (in `serve`, in a worker, in another ASGI server) has no effect on the process.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field, fields
from typing import Any

from agentrouter_auth.config.values import ConfigError

INT_MAX = 2**31 - 1  # grpcio's integer channel arguments are C ints
# File descriptors a worker keeps for everything but HTTP connections: the default cap of gRPC
# connections (GrpcLimits.max_connections), plus key files, logs and the event loop.
FD_RESERVE = 1024 + 512
MAX_CONNECTIONS_CEILING = 8192


def _help(text: str) -> dict[str, str]:
    """The metadata of a field that is an option: its help."""
    return {"help": text}


def help_of(limits: type[Any], name: str) -> str:
    """The help of field `name` of the dataclass `limits`."""
    (found,) = [f for f in fields(limits) if f.name == name]
    return str(found.metadata["help"])


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may hold on the HTTP listener, so that many idle or slow clients cannot
    starve the verifiers: every connection costs a slot, so each slot has a deadline."""

    idle_timeout: float = field(
        default=15.0,
        metadata=_help(
            "time a connection gets to send a complete request head, from connecting or its "
            "last response: closes idle keep-alive connections, connections that never send a "
            "byte, and slow headers (HTTP/1.1)"
        ),
    )
    body_timeout: float = field(
        default=10.0, metadata=_help("time a request gets to send its whole body, from its head")
    )
    max_connections: int = field(
        default=0,
        metadata=_help(
            "open HTTP connections per worker; above it new connections wait in the listen "
            "backlog (0: as many as the open-files limit allows, at most "
            f"{MAX_CONNECTIONS_CEILING})"
        ),
    )
    http2: bool = field(
        default=False,
        metadata=_help(
            "also serve HTTP/2: h2c and h2 by ALPN (idle connections are then only bounded by "
            "--max-connections until they send their first byte)"
        ),
    )
    http2_max_streams: int = 100
    """Concurrent streams per HTTP/2 connection."""
    http2_keepalive: float = 20.0
    """Interval of HTTP/2 pings; a peer that does not answer within it is disconnected."""


@dataclass(frozen=True, slots=True)
class GrpcLimits:
    """What one client may hold on the gRPC listener. Times are in seconds, sizes in bytes.

    Every field becomes the option `--grpc-` + its name in kebab case, with its help."""

    max_streams: int = field(
        default=100,
        metadata=_help(
            "concurrent streams (calls) per connection, advertised as MAX_CONCURRENT_STREAMS; "
            "more are refused (REFUSED_STREAM), and a stream its client reset counts until the "
            "server has released it"
        ),
    )
    max_calls: int = field(
        default=1000,
        metadata=_help(
            "calls a worker runs at once over all connections (more: RESOURCE_EXHAUSTED at "
            "once), bounding the memory unfinished calls hold; health Watch and Check calls "
            "and reflection streams have budgets of their own"
        ),
    )
    max_watches: int = field(
        default=1024,
        metadata=_help(
            "health Watch streams a worker serves at once over all connections (more: "
            "RESOURCE_EXHAUSTED); a Watch lives until its client ends it or its connection "
            "ages out"
        ),
    )
    max_connection_watches: int = field(
        default=4,
        metadata=_help(
            "health Watch streams one connection may hold at once (client-side health checking "
            "needs one per watched service; more: RESOURCE_EXHAUSTED)"
        ),
    )
    max_connection_checks: int = field(
        default=16,
        metadata=_help(
            "health Check calls one connection may have running at once (the Check pool of a "
            "worker has --grpc-max-calls slots; more: RESOURCE_EXHAUSTED)"
        ),
    )
    max_reflections: int = field(
        default=64,
        metadata=_help(
            "reflection streams (ServerReflectionInfo, what grpcurl uses) a worker serves at "
            "once over all connections (more: RESOURCE_EXHAUSTED)"
        ),
    )
    max_connection_reflections: int = field(
        default=4,
        metadata=_help(
            "reflection streams one connection may hold at once (more: RESOURCE_EXHAUSTED)"
        ),
    )
    max_address_share: int = field(
        default=50,
        metadata=_help(
            "percent of each of a worker's call pools (calls, health Check, health Watch, "
            "reflection) that one client address may hold, at least one call (more: "
            "RESOURCE_EXHAUSTED); 100 behind a proxy through which every client comes"
        ),
    )
    max_connection_pending: int = field(
        default=16,
        metadata=_help(
            "calls one connection may have waiting for their first request message at once "
            "(more: RESOURCE_EXHAUSTED), so that stalled calls take many connections to fill "
            "a pool"
        ),
    )
    request_timeout: float = field(
        default=10.0,
        metadata=_help(
            "time a call gets to send each request message, from when the server starts "
            "reading it (then DEADLINE_EXCEEDED; a call that ends without one: INTERNAL)"
        ),
    )
    max_resets: int = field(
        default=200,
        metadata=_help(
            "calls a connection may cancel before sending their request within 10s; the "
            "connection that cancels one more is closed (HTTP/2 rapid reset)"
        ),
    )
    idle_timeout: float = field(
        default=60.0, metadata=_help("a connection without a call for this long is closed")
    )
    max_connection_age: float = field(
        default=1800.0,
        metadata=_help(
            "a connection this old (give or take 10%) is sent GOAWAY: its calls may finish, "
            "new calls go to a new connection"
        ),
    )
    max_connection_age_grace: float = field(
        default=30.0,
        metadata=_help(
            "time the calls of such a connection get before it is closed (a health Watch ends here)"
        ),
    )
    handshake_timeout: float = field(
        default=20.0,
        metadata=_help(
            "time a new connection gets for TLS and the HTTP/2 preface and SETTINGS (then closed)"
        ),
    )
    max_message_size: int = field(
        default=64 * 1024,
        metadata=_help("largest request message in bytes (a larger one: RESOURCE_EXHAUSTED)"),
    )
    # Keeps gRPC connections within the file descriptors a worker sets aside (FD_RESERVE).
    max_connections: int = field(
        default=1024,
        metadata=_help(
            "open gRPC connections per worker (more are closed at once); idle ones close after "
            "--grpc-idle-timeout, silent ones after --grpc-handshake-timeout"
        ),
    )

    def __post_init__(self) -> None:
        for each in fields(self):
            value = getattr(self, each.name)
            if not 0 < value <= INT_MAX:
                raise ConfigError(f"GrpcLimits.{each.name} must be above 0 and at most {INT_MAX}")
        if self.max_address_share > 100:
            raise ConfigError("GrpcLimits.max_address_share is a percentage: at most 100")


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `needed` (up to the hard limit);
    return the soft limit now in force. Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def resolve_max_connections(requested: int, option: str = "--max-connections") -> int:
    """The per-worker connection cap: `requested`, checked against the file-descriptor limit
    (raised as far as the hard limit allows), or for 0 the largest safe value up to
    MAX_CONNECTIONS_CEILING. Raises ConfigError, naming `option` (the flag or the variable the
    value came from), when the limit cannot hold `requested`."""
    wanted = requested or MAX_CONNECTIONS_CEILING
    available = raise_open_files_limit(wanted + FD_RESERVE) - FD_RESERVE
    if requested:
        if requested > available:
            raise ConfigError(
                f"{option} {requested} needs {requested + FD_RESERVE} open files but "
                f"the limit is {available + FD_RESERVE}; lower it or raise `ulimit -n`"
            )
        return requested
    if available < 64:
        raise ConfigError(
            f"the open-files limit ({available + FD_RESERVE}) leaves no room for connections; "
            "raise `ulimit -n`"
        )
    return min(wanted, available)
