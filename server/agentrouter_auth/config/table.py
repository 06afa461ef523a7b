"""The option table: every option of every command, once, with its help, in --help order.

A new option is one row here, and a field where its value goes (`config.model`). The rotation
policy's rows and the gRPC limits' rows are generated from their fields, so a new field of
either is a new option; a limit's help is stored with its field (`config.limits`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

from agentrouter_auth.config.limits import INT_MAX, GrpcLimits, HttpLimits, help_of
from agentrouter_auth.config.option import SERVE, Option
from agentrouter_auth.config.values import (
    ADDRESS,
    DURATION,
    INTEGER,
    KEK_FILES,
    KEK_SEPARATOR,
    LOCATION,
    ON_OFF,
    PATH,
    URL,
    must,
    switch,
)
from agentrouter_auth.keys.material import RSA_SIZES
from agentrouter_auth.keys.policy import POLICY_FIELDS, Policy
from agentrouter_auth.logs import FORMATS

MAX_WORKERS = 64
EVERY_COMMAND = None
POLICY_GROUP = "rotation policy (durations: 90s, 15m, 1h30m, 30d)"
HTTP_GROUP = "limits of the HTTP listener (per worker)"
GRPC_GROUP = "limits of the gRPC listener (per worker)"
DISCOVERY_GROUP = "OpenID Connect discovery"
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


def _policy_rows() -> Iterator[Option]:
    """`--<field>` for every policy field, a duration taken by every command."""
    defaults = Policy()
    for name in POLICY_FIELDS:
        default = DURATION.show(getattr(defaults, name))
        yield Option(
            name, default, _POLICY_HELP[name], kind=DURATION, field=f"policy.{name}",
            commands=EVERY_COMMAND, group=POLICY_GROUP,
        )  # fmt: skip


def _grpc_rows() -> Iterator[Option]:
    """`--grpc-<field>` for every field of GrpcLimits, with the field's help: durations for
    times, numbers for the rest, each above 0 and within a C int (grpcio's channel
    arguments)."""
    defaults = GrpcLimits()
    check = must(lambda value: 0 < value <= INT_MAX, f"be above 0 and at most {INT_MAX}")
    percent = must(lambda value: 0 < value <= 100, "be a percentage above 0 and at most 100")
    for field in fields(GrpcLimits):
        default = getattr(defaults, field.name)
        kind = DURATION if isinstance(default, float) else INTEGER
        yield Option(
            f"grpc_{field.name}", kind.show(default), help_of(GrpcLimits, field.name), kind=kind,
            check=percent if field.name.endswith("_share") else check,
            field=f"grpc_limits.{field.name}", group=GRPC_GROUP,
        )  # fmt: skip


def _http_timeout(name: str, default: str) -> Option:
    field = name.removeprefix("http_")
    return Option(
        name, default, help_of(HttpLimits, field), kind=DURATION,
        check=must(lambda seconds: 0.1 <= seconds <= 3600, "be from 100ms to 1h"),
        field=f"http_limits.{field}", group=HTTP_GROUP,
    )  # fmt: skip


OPTIONS: tuple[Option, ...] = (
    Option(
        "key_store", "var/keys",
        "where the keys live: a directory path, a file: URL (file:///abs/path, file:rel/path), "
        "or a PostgreSQL URL (postgresql://user@host/db?sslmode=verify-full; needs --kek-file)",
        kind=LOCATION, commands=EVERY_COMMAND, aliases=("keys_dir",),
    ),
    Option(
        "kek_file", "",
        "key-encryption key of a postgresql: store's private keys: a file of 32 random bytes in "
        "base64 (openssl rand -base64 32), mode 0600 or 0400; repeat the flag (in the variable: "
        f"separate paths with '{KEK_SEPARATOR}') to give several: the first encrypts, all "
        "decrypt. A directory store ignores it",
        kind=KEK_FILES, field="keks", commands=EVERY_COMMAND,
    ),
    Option(
        "log_format", "json", "log lines as json or text", choices=FORMATS,
        commands=EVERY_COMMAND, other_default="text",
    ),
    *_policy_rows(),
    Option(
        "rsa_bits", "2048", f"size of new RSA keys ({', '.join(map(str, RSA_SIZES))})",
        kind=INTEGER, choices=tuple(map(str, RSA_SIZES)), commands=EVERY_COMMAND,
        group=POLICY_GROUP,
    ),
    Option("http_addr", "127.0.0.1:8080", "HTTP listen address (REST, Connect, gRPC-Web)",
           kind=ADDRESS),
    Option("grpc_addr", "127.0.0.1:9090", "gRPC listen address, HOST:PORT", kind=ADDRESS),
    Option("grace_period", "10s", "time in-flight requests get to finish on SIGTERM",
           kind=DURATION, field="grace_seconds"),
    Option("reload_interval", "2s", "how often the key store is checked for changes",
           kind=DURATION, check=must(lambda seconds: seconds > 0, "be longer than zero")),
    Option("rotation", "auto", "rotate keys automatically per the policy", kind=switch("auto"),
           choices=("auto", "off"), field="auto_rotate"),
    Option("workers", "1", "server processes, each serving both listeners", kind=INTEGER,
           check=must(lambda n: 1 <= n <= MAX_WORKERS, f"be from 1 to {MAX_WORKERS}")),
    Option("access_log", "off", "one log line per request", kind=switch("on"), choices=ON_OFF),
    Option("tls_cert", "", "PEM certificate (chain) for both listeners; enables TLS", kind=PATH,
           field="tls.cert"),
    Option("tls_key", "", "PEM private key of --tls-cert", kind=PATH, field="tls.key"),
    Option("tls_client_ca", "", "PEM CA bundle: require client certificates (mTLS)", kind=PATH,
           field="tls.client_ca"),
    _http_timeout("http_idle_timeout", "15s"),
    _http_timeout("http_body_timeout", "10s"),
    Option(
        "max_connections", "0", help_of(HttpLimits, "max_connections"), kind=INTEGER,
        check=must(lambda n: n >= 0, "not be negative"), field="http_limits.max_connections",
        group=HTTP_GROUP,
    ),
    Option(
        "http2", "off", help_of(HttpLimits, "http2"), kind=switch("on"), choices=ON_OFF,
        field="http_limits.http2", group=HTTP_GROUP,
    ),
    *_grpc_rows(),
    Option(
        "issuer", "",
        "OpenID issuer URL: serves /.well-known/openid-configuration, and token sign sets iss "
        "(https; http only on loopback)",
        kind=URL, commands=frozenset({SERVE, "token sign"}), group=DISCOVERY_GROUP,
    ),
    Option(
        "jwks_uri", "",
        "the key set's URL in the discovery document (default: the issuer + "
        "/.well-known/jwks.json)",
        kind=URL, group=DISCOVERY_GROUP,
    ),
)  # fmt: skip
"""Every option of every command, in --help order."""
