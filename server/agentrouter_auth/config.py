"""Server configuration: every option has a flag and an AGENTROUTER_AUTH_* variable.

Validation happens here, before anything binds a port, so a bad value stops the process with a
one-line reason.
"""

from __future__ import annotations

import ipaddress
import resource
import ssl
from dataclasses import dataclass, fields
from pathlib import Path

from agentrouter_auth.keys.policy import Policy

ENV_PREFIX = "AGENTROUTER_AUTH_"


class ConfigError(ValueError):
    """An option's value is invalid; the message names the option."""


@dataclass(frozen=True, slots=True)
class Address:
    """A host (name, IPv4 or IPv6 literal) and a TCP port; port 0 lets the OS choose."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(option: str, value: str) -> Address:
    """Parse `host:port` or `[v6]:port`; raise ConfigError naming `option` otherwise."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{option}: expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"{option}: {host!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ConfigError(f"{option}: write an IPv6 host in brackets, as [::1]:9090")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{option}: port must be a number from 0 to 65535, got {port_text!r}")
    return Address(host, int(port_text))


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Server certificate and key (PEM) for both listeners, and the CA that client
    certificates must chain to when mutual TLS is on."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def parse(cls, cert: str, key: str, client_ca: str) -> TLSConfig | None:
        """Validate the files now, so a bad one stops the process before it binds."""
        if not cert and not key:
            if client_ca:
                raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
            return None
        if not cert or not key:
            raise ConfigError("--tls-cert and --tls-key go together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"--tls-cert/--tls-key: cannot load {cert} and {key}: {err}") from err
        if client_ca:
            try:
                context.load_verify_locations(client_ca)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(f"--tls-client-ca: cannot load {client_ca}: {err}") from err
        return cls(Path(cert), Path(key), Path(client_ca) if client_ca else None)


INT_MAX = 2**31 - 1  # grpcio's integer channel arguments are C ints
# File descriptors a worker keeps for everything but HTTP connections: gRPC connections, key
# files, logs, the event loop.
FD_RESERVE = 512
MAX_CONNECTIONS_CEILING = 8192


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one client may hold on the HTTP listener, so that many idle or slow clients cannot
    starve the verifiers: every connection costs a slot, so each slot has a deadline."""

    idle_timeout: float = 15.0
    """Time a connection gets to send a complete request head, counted from when it connects
    or its previous response ends: closes idle keep-alive connections, connections that never
    send a byte, and slow headers (HTTP/1.1)."""
    body_timeout: float = 10.0
    """Time a request gets to send its whole body, counted from its head."""
    max_connections: int = 0
    """Open connections per worker; above it new connections wait in the listen backlog.
    0: derived from the file-descriptor limit (see `resolve_max_connections`)."""
    http2: bool = False
    """Also serve HTTP/2 (h2c by prior knowledge; h2 by ALPN with TLS)."""
    http2_max_streams: int = 100
    """Concurrent streams per HTTP/2 connection."""
    http2_keepalive: float = 20.0
    """Interval of HTTP/2 pings; a peer that does not answer within it is disconnected."""


@dataclass(frozen=True, slots=True)
class GrpcLimits:
    """What one client may hold on the gRPC listener. Times are in seconds, sizes in bytes.

    Every field becomes the flag `--grpc-` + its name in kebab case."""

    max_streams: int = 100
    """Concurrent HTTP/2 streams (calls) per connection, advertised to clients as
    MAX_CONCURRENT_STREAMS; a stream above it is refused (RST_STREAM REFUSED_STREAM), and a
    stream its client reset counts until the server has released it."""
    max_calls: int = 1000
    """Calls one worker process runs at once, over all its connections; a call above it is
    answered RESOURCE_EXHAUSTED at once. Bounds the memory that unfinished calls can hold."""
    request_timeout: float = 10.0
    """Time a call gets to deliver each request message (a unary call: its only one), from
    when the server starts reading it; a call still waiting is answered DEADLINE_EXCEEDED. A
    call that ends without a complete request message is answered INTERNAL at once."""
    max_resets: int = 200
    """Calls one connection may cancel before sending their request message within 10
    seconds; the connection that cancels one more is closed (HTTP/2 rapid reset)."""
    idle_timeout: float = 60.0
    """A connection without a call for this long is sent GOAWAY and closed."""
    max_connection_age: float = 1800.0
    """A connection this old (give or take 10%) is sent GOAWAY: its calls may finish, new
    calls go to a new connection."""
    max_connection_age_grace: float = 30.0
    """Time the calls of a connection sent GOAWAY for its age get to finish before it is
    closed; long-lived calls, such as a health Watch, end here."""
    handshake_timeout: float = 20.0
    """Time a new connection gets to finish its TLS handshake and send the HTTP/2 preface
    and SETTINGS; a connection that has not by then is closed."""
    max_message_size: int = 64 * 1024
    """Largest request message accepted; a call announcing a larger one is answered
    RESOURCE_EXHAUSTED."""
    max_connections: int = 256
    """Open gRPC connections per worker process; a connection above it is closed at once.
    Keeps gRPC connections within the file descriptors a worker sets aside for them."""

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not 0 < value <= INT_MAX:
                raise ValueError(f"GrpcLimits.{field.name} must be above 0 and at most {INT_MAX}")


def raise_open_files_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `needed` (up to the hard limit);
    return the soft limit now in force. Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def resolve_max_connections(requested: int) -> int:
    """The per-worker connection cap: `requested`, checked against the file-descriptor limit
    (raised as far as the hard limit allows), or for 0 the largest safe value up to
    MAX_CONNECTIONS_CEILING. Raises ConfigError when the limit cannot hold `requested`."""
    wanted = requested or MAX_CONNECTIONS_CEILING
    available = raise_open_files_limit(wanted + FD_RESERVE) - FD_RESERVE
    if requested:
        if requested > available:
            raise ConfigError(
                f"--max-connections {requested} needs {requested + FD_RESERVE} open files but "
                f"the limit is {available + FD_RESERVE}; lower it or raise `ulimit -n`"
            )
        return requested
    if available < 64:
        raise ConfigError(
            f"the open-files limit ({available + FD_RESERVE}) leaves no room for connections; "
            "raise `ulimit -n`"
        )
    return min(wanted, available)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What `agentrouter-auth serve` needs, validated."""

    keys_dir: Path
    http_addr: Address
    grpc_addr: Address
    grace_seconds: float
    reload_interval: float
    auto_rotate: bool
    policy: Policy
    workers: int = 1
    log_format: str = "json"
    access_log: bool = False
    tls: TLSConfig | None = None
    http_limits: HttpLimits = HttpLimits()
    grpc_limits: GrpcLimits = GrpcLimits()
