"""Server configuration: every option has a flag and an AGENTROUTER_AUTH_* variable.

Validation happens here, before anything binds a port, so a bad value stops the process with a
one-line reason.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

ENV_PREFIX = "AGENTROUTER_AUTH_"
DEFAULT_KEYS_DIR = "var/keys"
DEFAULT_GRPC_ADDR = "127.0.0.1:9090"
DEFAULT_GRACE_SECONDS = 10.0


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


def parse_seconds(option: str, value: str) -> float:
    """A non-negative number of seconds."""
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{option}: expected a number of seconds, got {value!r}") from None
    if not seconds >= 0:  # also refuses NaN
        raise ConfigError(f"{option}: must be zero or more seconds, got {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """What `agentrouter-auth serve` needs, validated."""

    keys_dir: Path
    grpc_addr: Address
    grace_seconds: float
