"""Server configuration: every option has a flag and an AGENTROUTER_AUTH_* variable.

Validation happens here, before anything binds a port, so a bad value stops the process with a
one-line reason.
"""

from __future__ import annotations

import ipaddress
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
class ServeConfig:
    """What `agentrouter-auth serve` needs, validated."""

    keys_dir: Path
    http_addr: Address
    grpc_addr: Address
    grace_seconds: float
    reload_interval: float
    auto_rotate: bool
    rsa_bits: int
    policy: Policy
