"""Server configuration: every option has a flag and an AGENTROUTER_AUTH_* variable.

Validation happens here, before anything binds a port, so a bad value stops the process with a
one-line reason.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
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
