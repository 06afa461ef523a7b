"""Configuration from one table of options.

Every option is a row of `OPTIONS`: its name (which gives the flag `--name-in-kebab-case` and
the variable AGENTROUTER_AUTH_NAME_IN_UPPER_SNAKE_CASE), its default, its help text, how its
text becomes a value (validation included), where that value goes in the configuration, and
which commands take it. The command line with its `--help` (`agentrouter_auth.cli`), the
environment a worker process reads (`from_environment`, no argparse), the environment `serve`
hands its workers (`to_environment`) and `ServeConfig` all come from the table: a new option is
one row, and a field where its value goes.

Validation happens here, before anything binds a port, so a bad value stops the process with a
one-line reason that names the option.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import resource
import ssl
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from agentrouter_auth.keys.kek import Kek, KekError, read_kek
from agentrouter_auth.keys.material import RSA_SIZES
from agentrouter_auth.keys.policy import (
    POLICY_FIELDS,
    Policy,
    PolicyError,
    format_duration,
    parse_duration,
)
from agentrouter_auth.keys.store import KeyStoreError
from agentrouter_auth.keys.stores import check_location
from agentrouter_auth.logs import FORMATS

ENV_PREFIX = "AGENTROUTER_AUTH_"
SUPERVISOR_ENV = ENV_PREFIX + "SUPERVISOR_PID"
"""Set by `serve` for its workers (not an option): the pid of the process supervising them."""
SERVE = "serve"
MAX_WORKERS = 64


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
# File descriptors a worker keeps for everything but HTTP connections: the default cap of gRPC
# connections (GrpcLimits.max_connections), plus key files, logs and the event loop.
FD_RESERVE = 1024 + 512
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
    answered RESOURCE_EXHAUSTED at once. Bounds the memory that unfinished calls can hold.
    Health Watch streams are counted apart (`max_watches`), and health Check calls have a
    budget of their own of the same size, so neither can starve the other calls."""
    max_watches: int = 1024
    """Health Watch streams one worker process serves at once, over all its connections;
    one above it is answered RESOURCE_EXHAUSTED at once. A Watch lives until its client
    ends it or its connection reaches `max_connection_age`."""
    max_connection_watches: int = 4
    """Health Watch streams one connection may hold at once (client-side health checking
    needs one per watched service name); one above it is answered RESOURCE_EXHAUSTED."""
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
    max_connections: int = 1024
    """Open gRPC connections per worker process; a connection above it is closed at once.
    Keeps gRPC connections within the file descriptors a worker sets aside for them
    (FD_RESERVE). Idle connections are closed after `idle_timeout`, silent ones after
    `handshake_timeout`, so a client holding the cap must keep re-opening them."""

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


def resolve_max_connections(requested: int, option: str = "--max-connections") -> int:
    """The per-worker connection cap: `requested`, checked against the file-descriptor limit
    (raised as far as the hard limit allows), or for 0 the largest safe value up to
    MAX_CONNECTIONS_CEILING. Raises ConfigError when the limit cannot hold `requested`."""
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


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyConfig:
    """What every command takes: where the keys are, how to log, and the rotation policy."""

    key_store: str
    """Where the keys live: a directory path or a URL (see `keys.stores`)."""
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
    http_limits: HttpLimits = HttpLimits()
    grpc_limits: GrpcLimits = GrpcLimits()
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


# -- The table -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kind:
    """How an option's text becomes a value, and the value text again (for workers)."""

    parse: Callable[[str, str], Any]
    """(flag, text) → value; raises ConfigError (or PolicyError) naming the flag."""
    show: Callable[[Any], str]
    """value → text that `parse` reads back as the same value."""
    metavar: str
    separator: str = ""
    """For an option of several values: the flag may be repeated, and the values are joined
    by this in the text `parse` reads (and in the variable)."""


def _duration(flag: str, text: str) -> float:
    try:
        seconds = parse_duration(flag, text)
    except PolicyError as err:  # the same words, as an option's error
        raise ConfigError(str(err)) from None
    if not math.isfinite(seconds):
        raise ConfigError(f"{flag}: {text!r} is not a finite duration")
    return seconds


def _show_duration(seconds: float) -> str:
    """Whole seconds as `1h30m`, others as plain seconds: both read back exactly."""
    if seconds == int(seconds) and seconds < 2**53:
        return format_duration(seconds)
    return repr(seconds)


def _integer(flag: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(f"{flag}: expected a whole number, got {text!r}") from None


def _text(_flag: str, text: str) -> str:
    return text


def _show_text(value: object) -> str:
    return "" if value is None else str(value)


def _key_store(flag: str, text: str) -> str:
    try:
        check_location(text)
    except KeyStoreError as err:
        raise ConfigError(f"{flag}: {err}") from err
    return text


KEK_SEPARATOR = ":"


def _kek_files(flag: str, text: str) -> tuple[Kek, ...]:
    """The KEKs of the files named in `text` (separated by KEK_SEPARATOR), each checked now:
    private, one line of base64, 32 bytes."""
    paths = text.split(KEK_SEPARATOR) if text else []
    if any(not path.strip() for path in paths):
        raise ConfigError(f"{flag}: {text!r} names an empty path")
    try:
        return tuple(read_kek(path) for path in paths)
    except KekError as err:
        raise ConfigError(f"{flag}: {err}") from None


def _show_kek_files(keks: tuple[Kek, ...]) -> str:
    return KEK_SEPARATOR.join(kek.path for kek in keks)


_URL_CHARACTERS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]*")
"""RFC 3986's unreserved and reserved characters and `%`, less the quote `'`."""


def _public_url(flag: str, text: str) -> str:
    """An absolute https URL with no user part, query or fragment (http only on a loopback
    host), as OpenID Connect Discovery 1.0 §3 and RFC 8414 §2 require of an issuer, written in
    URL characters only; "" for unset. A refusal shows the text escaped (`ascii`): no control
    or bidirectional character reaches a terminal or a log."""
    if not text:
        return text
    shown = ascii(text)
    if not _URL_CHARACTERS.fullmatch(text):
        raise ConfigError(
            f"{flag}: {shown} may hold only URL characters (RFC 3986, no quotes): "
            "percent-encode the others, and write a host name in punycode (xn--)"
        )
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise ConfigError(f"{flag}: {shown}: a '%' must start a %XX escape")
    try:
        url = urllib.parse.urlsplit(text)
        host = url.hostname or ""
        url.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as err:
        raise ConfigError(f"{flag}: {shown} is not a URL: {err}") from None
    if url.scheme not in ("https", "http") or not host:
        raise ConfigError(f"{flag}: {shown} must be an absolute https URL")
    if "@" in url.netloc:  # not echoed: it may be a password
        raise ConfigError(f"{flag}: must have no user name or password (user:password@)")
    if url.query or url.fragment or text.endswith(("?", "#")):
        raise ConfigError(f"{flag}: {shown} must have no query or fragment")
    if url.scheme == "http" and not _loopback(host):
        raise ConfigError(f"{flag}: {shown} must use https (http only on a loopback host)")
    return text


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _switch(on: str) -> Kind:
    """`on` or `off` as a bool."""
    return Kind(lambda _flag, text: text == on, lambda value: on if value else "off", "")


DURATION = Kind(_duration, _show_duration, "DURATION")
INTEGER = Kind(_integer, str, "N")
TEXT = Kind(_text, _show_text, "TEXT")
PATH = Kind(_text, _show_text, "PATH")
ADDRESS = Kind(parse_address, str, "HOST:PORT")
LOCATION = Kind(_key_store, str, "LOCATION")
URL = Kind(_public_url, _show_text, "URL")
KEK_FILES = Kind(_kek_files, _show_kek_files, "PATH", separator=KEK_SEPARATOR)
ON_OFF = ("on", "off")

Check = Callable[[str, Any], Any]
"""(flag, value) → the value to use; raises ConfigError naming the flag."""


def _must(holds: Callable[[Any], bool], must: str) -> Check:
    """A check: `holds(value)`, or the error "<flag> must <must>"."""

    def check(flag: str, value: Any) -> Any:  # noqa: ANN401 - any option's value
        if not holds(value):
            raise ConfigError(f"{flag} must {must}")
        return value

    return check


def _connections(flag: str, value: int) -> int:
    """The HTTP connection cap, resolved against the open-files limit (0: the largest)."""
    requested = _must(lambda n: n >= 0, "not be negative")(flag, value)
    return resolve_max_connections(requested, flag)


def _kebab(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class Option:
    """One row of the table: a flag, its variable, its default, help, parsing and checks."""

    name: str
    """Snake case; the flag is `--` + kebab case, the variable ENV_PREFIX + upper case."""
    default: str
    """As written on the command line; "" for unset."""
    help: str
    kind: Kind = TEXT
    choices: tuple[str, ...] = ()
    check: Check | None = None
    field: str = ""
    """Where the value goes in the configuration, dotted (`http_limits.idle_timeout`);
    empty: the field of the option's name."""
    commands: frozenset[str] | None = frozenset({SERVE})
    """The commands that take the option; None: every command."""
    group: str = ""
    """The section of --help."""
    aliases: tuple[str, ...] = ()
    """Other names: each gives a flag and a variable that mean the same."""
    other_default: str | None = None
    """The default for commands other than `serve`, when it differs."""

    @property
    def flag(self) -> str:
        """`--name-in-kebab-case`."""
        return "--" + _kebab(self.name)

    @property
    def env(self) -> str:
        """AGENTROUTER_AUTH_NAME."""
        return ENV_PREFIX + self.name.upper()

    @property
    def names(self) -> tuple[str, ...]:
        """The name, then the aliases."""
        return (self.name, *self.aliases)

    @property
    def target(self) -> str:
        """The dotted configuration field the value goes to."""
        return self.field or self.name

    def takes(self, command: str) -> bool:
        """Whether `command` (`serve`, `keys init`, …) takes this option."""
        return self.commands is None or command in self.commands

    def default_for(self, command: str) -> str:
        """The default text for `command`."""
        if command != SERVE and self.other_default is not None:
            return self.other_default
        return self.default

    def parse(self, text: str, source: str = "") -> Any:  # noqa: ANN401 - any option's value
        """The validated value of `text`; an error (ConfigError, PolicyError) names `source`:
        the flag (the default), or the variable the text came from."""
        source = source or self.flag
        if self.choices and text not in self.choices:
            raise ConfigError(
                f"{source}: invalid choice: {text!r} (choose from {', '.join(self.choices)})"
            )
        value = self.kind.parse(source, text)
        return self.check(source, value) if self.check else value


def flag_of(name: str) -> str:
    """The flag of an option or alias name."""
    return "--" + _kebab(name)


def env_of(name: str) -> str:
    """The environment variable of an option or alias name."""
    return ENV_PREFIX + name.upper()


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
_GRPC_HELP = {
    "max_streams": "concurrent streams per connection (advertised; more are refused)",
    "max_calls": "calls a worker runs at once over all connections (more: RESOURCE_EXHAUSTED)",
    "max_watches": "health Watch streams a worker serves at once (more: RESOURCE_EXHAUSTED)",
    "max_connection_watches": "health Watch streams one connection may hold at once",
    "request_timeout": "time a call gets to send its request message (then DEADLINE_EXCEEDED)",
    "max_resets": "calls a connection may cancel before their request in 10s (then closed)",
    "idle_timeout": "a connection without a call for this long is closed",
    "max_connection_age": "a connection this old is sent GOAWAY (clients reconnect)",
    "max_connection_age_grace": "time the calls of such a connection get before it is closed",
    "handshake_timeout": "time a new connection gets for TLS and the HTTP/2 preface",
    "max_message_size": "largest request message in bytes",
    "max_connections": "open gRPC connections per worker (more are closed at once)",
}


def _policy_rows() -> Iterator[Option]:
    """`--<field>` for every policy field, a duration taken by every command."""
    defaults = Policy()
    for name in POLICY_FIELDS:
        default = _show_duration(getattr(defaults, name))
        yield Option(
            name, default, _POLICY_HELP[name], kind=DURATION, field=f"policy.{name}",
            commands=EVERY_COMMAND, group=POLICY_GROUP,
        )  # fmt: skip


def _grpc_rows() -> Iterator[Option]:
    """`--grpc-<field>` for every field of GrpcLimits: durations for times, numbers for the
    rest, each above 0 and within a C int (grpcio's channel arguments)."""
    defaults = GrpcLimits()
    check = _must(lambda value: 0 < value <= INT_MAX, f"be above 0 and at most {INT_MAX}")
    for field in fields(GrpcLimits):
        default = getattr(defaults, field.name)
        kind = DURATION if isinstance(default, float) else INTEGER
        yield Option(
            f"grpc_{field.name}", kind.show(default), _GRPC_HELP[field.name], kind=kind,
            check=check, field=f"grpc_limits.{field.name}", group=GRPC_GROUP,
        )  # fmt: skip


def _http_timeout(name: str, default: str, text: str) -> Option:
    return Option(
        name, default, text, kind=DURATION,
        check=_must(lambda seconds: 0.1 <= seconds <= 3600, "be from 100ms to 1h"),
        field=f"http_limits.{name.removeprefix('http_')}", group=HTTP_GROUP,
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
           kind=DURATION, check=_must(lambda seconds: seconds > 0, "be longer than zero")),
    Option("rotation", "auto", "rotate keys automatically per the policy", kind=_switch("auto"),
           choices=("auto", "off"), field="auto_rotate"),
    Option("workers", "1", "server processes, each serving both listeners", kind=INTEGER,
           check=_must(lambda n: 1 <= n <= MAX_WORKERS, f"be from 1 to {MAX_WORKERS}")),
    Option("access_log", "off", "one log line per request", kind=_switch("on"), choices=ON_OFF),
    Option("tls_cert", "", "PEM certificate (chain) for both listeners; enables TLS", kind=PATH,
           field="tls.cert"),
    Option("tls_key", "", "PEM private key of --tls-cert", kind=PATH, field="tls.key"),
    Option("tls_client_ca", "", "PEM CA bundle: require client certificates (mTLS)", kind=PATH,
           field="tls.client_ca"),
    _http_timeout(
        "http_idle_timeout", "15s",
        "time a connection gets to send a request head, from connecting or its last response",
    ),
    _http_timeout("http_body_timeout", "10s", "time a request gets to send its whole body"),
    Option(
        "max_connections", "0",
        "open HTTP connections per worker (0: as many as the open-files limit allows, at most "
        "8192)",
        kind=INTEGER, check=_connections, field="http_limits.max_connections", group=HTTP_GROUP,
    ),
    Option(
        "http2", "off",
        "also serve HTTP/2: h2c and h2 by ALPN (idle connections are then only bounded by "
        "--max-connections until they send their first byte)",
        kind=_switch("on"), choices=ON_OFF, field="http_limits.http2", group=HTTP_GROUP,
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

_SECTIONS: dict[str, Callable[..., Any]] = {
    "policy": Policy,
    "http_limits": HttpLimits,
    "grpc_limits": GrpcLimits,
    "tls": TLSConfig.parse,
}
"""How the values of a dotted field's section become one object."""


def options_for(command: str) -> tuple[Option, ...]:
    """The options `command` takes, in table order."""
    return tuple(option for option in OPTIONS if option.takes(command))


def _chosen_text(
    option: Option, command: str, given: Mapping[str, object], env: Mapping[str, str]
) -> tuple[str, str]:
    """The option's text and what gave it (for messages): a flag, else a variable, else the
    default. An option and its alias given different values (`--key-store` and `--keys-dir`)
    are an error."""
    for found, label in (
        ({name: given.get(name) for name in option.names}, flag_of),
        ({name: env.get(env_of(name)) for name in option.names}, env_of),
    ):
        values = {
            label(name): _joined(option, value)
            for name, value in found.items()
            if value is not None
        }
        if len(set(values.values())) > 1:
            raise ConfigError(f"{' and '.join(values)} are given different values: give one")
        if values:
            source, text = next(iter(values.items()))
            return text, source
    return option.default_for(command), option.flag


def _joined(option: Option, value: object) -> str:
    """The text of a value given on the command line: a repeated flag's values joined."""
    if isinstance(value, list | tuple):
        return option.kind.separator.join(map(str, value))
    return str(value)


def command_config(command: str, given: Mapping[str, object], env: Mapping[str, str]) -> KeyConfig:
    """The validated configuration of `command` (a ServeConfig for `serve`) from its flags
    (`given`, by option name) and the environment."""
    values: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for option in options_for(command):
        text, source = _chosen_text(option, command, given, env)
        section, _, field = option.target.rpartition(".")
        value = option.parse(text, source)
        (sections.setdefault(section, {}) if section else values)[field] = value
    for section, members in sections.items():
        values[section] = _SECTIONS[section](**members)
    return (ServeConfig if command == SERVE else KeyConfig)(**values)


def serve_config(given: Mapping[str, object], env: Mapping[str, str]) -> ServeConfig:
    """The validated `serve` configuration from its flags and the environment."""
    config = command_config(SERVE, given, env)
    assert isinstance(config, ServeConfig)
    return config


def from_environment(env: Mapping[str, str]) -> ServeConfig:
    """The `serve` configuration from AGENTROUTER_AUTH_* variables alone: what a worker
    process (or another ASGI server running `agentrouter_auth.asgi`) starts from."""
    return serve_config({}, env)


def _value_at(config: object, target: str) -> object:
    value = config
    for part in target.split("."):
        value = getattr(value, part) if value is not None else None
    return value


def to_environment(config: ServeConfig) -> dict[str, str]:
    """AGENTROUTER_AUTH_* variables (aliases included) for every `serve` option, from which
    `from_environment` rebuilds `config`, resolved values (ports, connection cap) and all."""
    env: dict[str, str] = {}
    for option in options_for(SERVE):
        text = option.kind.show(_value_at(config, option.target))
        env.update((env_of(name), text) for name in option.names)
    return env
