"""The configuration each command receives, validated: `KeyConfig` for every command,
`ServeConfig` for `serve`, and the TLS files both listeners share."""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass
from pathlib import Path

from agentrouter_auth.config.limits import GrpcLimits, HttpLimits
from agentrouter_auth.config.values import Address, ConfigError
from agentrouter_auth.keys.kek import Kek
from agentrouter_auth.keys.policy import Policy


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


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyConfig:
    """What every command takes: where the keys are, how to log, and the rotation policy."""

    key_store: str
    """Where the keys live: a directory path or a URL (see `keys.location`, `keys.registry`)."""
    log_format: str = "json"
    policy: Policy = dataclasses.field(default_factory=Policy)
    rsa_bits: int = 2048
    issuer: str = ""
    """The OpenID issuer whose tokens the keys sign (`iss`); "" for none."""
    keks: tuple[Kek, ...] = ()
    """Key-encryption keys (`--kek-file`): the first seals private keys, all open them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeConfig(KeyConfig):
    """What `agentrouter-auth serve` needs, validated."""

    http_addr: Address
    grpc_addr: Address
    grace_seconds: float
    reload_interval: float
    auto_rotate: bool
    workers: int = 1
    access_log: bool = False
    tls: TLSConfig | None = None
    http_limits: HttpLimits = dataclasses.field(default_factory=HttpLimits)
    """`max_connections` 0 until `serve` resolves it against the open-files limit at start."""
    grpc_limits: GrpcLimits = dataclasses.field(default_factory=GrpcLimits)
    jwks_uri: str = ""
    """Where the discovery document says the key set is; "" for the issuer's own."""

    def __post_init__(self) -> None:
        if self.http_addr == self.grpc_addr and self.http_addr.port:
            raise ConfigError("--http-addr and --grpc-addr must differ")
        if self.jwks_uri and not self.issuer:
            raise ConfigError("--jwks-uri needs --issuer")

    @property
    def published_jwks_uri(self) -> str:
        """The key set's URL in the discovery document: --jwks-uri, or the issuer's own."""
        return self.jwks_uri or self.issuer.rstrip("/") + "/.well-known/jwks.json"
