"""The option table: validation names the option, the environment and flags build the same
configuration, workers rebuild exactly what `serve` resolved, and the README lists every option
as the table has it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentrouter_auth import config
from agentrouter_auth.config import (
    OPTIONS,
    Address,
    ConfigError,
    GrpcLimits,
    HttpLimits,
    KeyConfig,
    ServeConfig,
    command_config,
    from_environment,
    options_for,
    parse_address,
    serve_config,
    to_environment,
)
from agentrouter_auth.keys.policy import POLICY_FIELDS, Policy, PolicyError

README = Path(__file__).resolve().parents[2] / "README.md"
STORE = {"AGENTROUTER_AUTH_KEY_STORE": "/srv/keys"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9090", Address("127.0.0.1", 9090)),
        ("localhost:0", Address("localhost", 0)),
        ("[::1]:8080", Address("::1", 8080)),
        ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
    ],
)
def test_valid_addresses(text: str, expected: Address) -> None:
    assert parse_address("--grpc-addr", text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9090", "expected HOST:PORT"),
        (":9090", "expected HOST:PORT"),
        ("localhost:http", "port must be a number"),
        ("localhost:65536", "port must be a number"),
        ("localhost:-1", "port must be a number"),
        ("::1:9090", "in brackets"),
        ("[nope]:9090", "not an IPv6 address"),
    ],
)
def test_invalid_addresses_name_the_option(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--grpc-addr: .*{re.escape(reason)}"):
        parse_address("--grpc-addr", text)


def test_every_name_gives_its_flag_and_variable() -> None:
    names = [name for option in OPTIONS for name in option.names]
    assert len(names) == len(set(names))
    for option in OPTIONS:
        assert option.flag == "--" + option.name.replace("_", "-")
        assert option.env == "AGENTROUTER_AUTH_" + option.name.upper()
        assert re.fullmatch(r"[a-z][a-z0-9_]*", option.name)


def test_the_policy_and_the_grpc_limits_are_rows_generated_from_their_fields() -> None:
    by_target = {option.target: option for option in OPTIONS}
    for name in POLICY_FIELDS:
        row = by_target[f"policy.{name}"]
        assert (row.flag, row.commands) == ("--" + name.replace("_", "-"), None)
    for field in dataclasses.fields(GrpcLimits):
        row = by_target[f"grpc_limits.{field.name}"]
        assert row.flag == "--grpc-" + field.name.replace("_", "-")
        assert row.takes("serve")
        assert not row.takes("keys list")


def test_the_defaults_of_the_table_are_those_of_the_configuration() -> None:
    """The dataclasses' own defaults (used by code that builds a config directly) agree with
    the table's."""
    built = from_environment(STORE | {"AGENTROUTER_AUTH_MAX_CONNECTIONS": "64"})
    assert built.policy == Policy()
    assert built.grpc_limits == GrpcLimits()
    assert built.http_limits == HttpLimits(max_connections=64)
    direct = ServeConfig(
        key_store="/srv/keys",
        http_addr=built.http_addr,
        grpc_addr=built.grpc_addr,
        grace_seconds=built.grace_seconds,
        reload_interval=built.reload_interval,
        auto_rotate=built.auto_rotate,
        http_limits=built.http_limits,
    )
    assert built == direct
    assert command_config("keys list", {}, STORE) == KeyConfig(
        key_store="/srv/keys", log_format="text"
    )


def test_workers_rebuild_exactly_what_serve_resolved() -> None:
    """`serve` exports the resolved configuration; `from_environment` (what each worker runs)
    reads it back unchanged, sub-second durations and resolved values included."""
    given = {
        "key_store": "file:///srv/keys", "log_format": "text", "publish_ahead": "2d",
        "cache_max_age": "90s", "rsa_bits": "3072", "http_addr": "[::1]:0",
        "grpc_addr": "127.0.0.1:7001", "grace_period": "1.25", "reload_interval": "200ms",
        "rotation": "off", "workers": "3", "access_log": "on", "http_idle_timeout": "1m30s",
        "max_connections": "100", "http2": "on", "grpc_max_streams": "7",
        "grpc_request_timeout": "1500ms",
    }  # fmt: skip
    resolved = dataclasses.replace(serve_config(given, {}), http_addr=Address("::1", 41234))
    exported = to_environment(resolved)
    assert from_environment(exported) == resolved
    assert exported["AGENTROUTER_AUTH_HTTP_ADDR"] == "[::1]:41234"
    assert exported["AGENTROUTER_AUTH_KEYS_DIR"] == exported["AGENTROUTER_AUTH_KEY_STORE"]
    assert set(exported) == {
        env for o in options_for("serve") for env in map(config.env_of, o.names)
    }
    assert resolved.reload_interval == 0.2
    assert (resolved.policy.publish_ahead, resolved.rsa_bits, resolved.workers) == (172800, 3072, 3)


def test_a_flag_wins_over_its_variable_and_a_variable_over_the_default() -> None:
    env = STORE | {"AGENTROUTER_AUTH_GRPC_ADDR": "127.0.0.1:7000", "AGENTROUTER_AUTH_WORKERS": "2"}
    built = serve_config({"grpc_addr": "127.0.0.1:7001"}, env)
    assert (built.grpc_addr.port, built.workers, built.http_addr.port) == (7001, 2, 8080)


@pytest.mark.parametrize(
    ("given", "env", "expected"),
    [
        ({"keys_dir": "/a"}, {}, "/a"),
        ({"key_store": "/a", "keys_dir": "/a"}, {}, "/a"),
        ({"keys_dir": "/a"}, {"AGENTROUTER_AUTH_KEY_STORE": "/b"}, "/a"),
        ({}, {"AGENTROUTER_AUTH_KEYS_DIR": "/b"}, "/b"),
        ({}, {}, "var/keys"),
    ],
)
def test_keys_dir_is_another_name_of_key_store(
    given: dict[str, str], env: dict[str, str], expected: str
) -> None:
    assert command_config("keys list", given, env).key_store == expected


@pytest.mark.parametrize(
    ("given", "env", "message"),
    [
        ({"key_store": "/a", "keys_dir": "/b"}, {},
         "--key-store and --keys-dir are given different values: give one"),
        ({}, {"AGENTROUTER_AUTH_KEY_STORE": "/a", "AGENTROUTER_AUTH_KEYS_DIR": "/b"},
         "AGENTROUTER_AUTH_KEY_STORE and AGENTROUTER_AUTH_KEYS_DIR are given different values"),
    ],
)  # fmt: skip
def test_two_names_of_one_option_with_different_values_are_refused(
    given: dict[str, str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        command_config("keys list", given, env)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("grpc_addr", "127.0.0.1", "--grpc-addr: expected HOST:PORT"),
        ("grace_period", "soon", "--grace-period: 'soon' is not a duration"),
        ("grace_period", "inf", "--grace-period: 'inf' is not a finite duration"),
        ("reload_interval", "0", "--reload-interval must be longer than zero"),
        ("workers", "0", "--workers must be from 1 to 64"),
        ("workers", "two", "--workers: expected a whole number, got 'two'"),
        ("http_idle_timeout", "0s", "--http-idle-timeout must be from 100ms to 1h"),
        ("http_body_timeout", "2h", "--http-body-timeout must be from 100ms to 1h"),
        ("max_connections", "-1", "--max-connections must not be negative"),
        ("max_connections", "100000000", "--max-connections 100000000 needs"),
        ("http2", "maybe", "--http2: invalid choice: 'maybe' (choose from on, off)"),
        ("log_format", "xml", "--log-format: invalid choice: 'xml'"),
        ("rsa_bits", "1024", "--rsa-bits: invalid choice: '1024'"),
        ("grpc_max_streams", "0", "--grpc-max-streams must be above 0 and at most 2147483647"),
        ("grpc_max_calls", "many", "--grpc-max-calls: expected a whole number, got 'many'"),
        ("grpc_request_timeout", "soon", "--grpc-request-timeout: 'soon' is not a duration"),
        ("grpc_idle_timeout", "0s", "--grpc-idle-timeout must be above 0"),
        ("key_store", "mysql://db/keys", "--key-store: mysql://db/keys: unknown key "
         "store scheme 'mysql': use a directory path or one of file:, postgres:, postgresql:"),
    ],
)  # fmt: skip
def test_a_bad_value_is_refused_naming_its_flag_or_variable(
    name: str, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        serve_config({name: text}, {})
    env = config.env_of(name)
    from_env = message.replace(config.flag_of(name), env, 1)
    assert from_env != message
    with pytest.raises(ConfigError, match=f"^{re.escape(from_env)}"):
        from_environment({env: text})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"tls_cert": "/nonexistent.pem"}, "--tls-cert and --tls-key go together"),
        ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"},
         "--tls-cert/--tls-key: cannot load /nonexistent.pem"),
        ({"tls_client_ca": "/ca.pem"}, "--tls-client-ca needs --tls-cert and --tls-key"),
        ({"http_addr": "127.0.0.1:9090"}, "--http-addr and --grpc-addr must differ"),
    ],
)  # fmt: skip
def test_options_that_go_together_are_checked_together(given: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        serve_config(given, {})


def test_an_unsafe_policy_is_refused_by_every_command() -> None:
    for command in ("serve", "keys init", "token sign"):
        with pytest.raises(PolicyError, match="at most half of --publish-ahead"):
            command_config(command, {"publish_ahead": "10m"}, {})


def test_the_worker_side_never_imports_the_command_line() -> None:
    """The ASGI factory builds its configuration from the environment alone."""
    probe = (
        "import sys, agentrouter_auth.asgi; "
        "print(sorted(m for m in sys.modules if m.startswith('agentrouter_auth.cli')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def _tables(section: str) -> list[list[dict[str, str]]]:
    """The markdown tables of `section`, as rows of header → cell."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if not header:
            header = cells
            tables.append([])
        elif not set(line) <= set("|- "):
            tables[-1].append(dict(zip(header, cells, strict=True)))
    return tables


def _quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _documented_default(cell: str) -> set[str]:
    return set(_quoted(cell)) or {cell}


def test_the_readme_lists_every_option_as_the_table_has_it() -> None:
    text = README.read_text()
    section = text[
        text.index("## Configuration\n") : text.index("\n## ", text.index("## Configuration\n") + 1)
    ]
    (rows,) = [t for t in _tables(section) if t and "environment" in t[0]]
    flags = [_quoted(row["flag"]) for row in rows]
    for option in OPTIONS:
        (row,) = [r for r, f in zip(rows, flags, strict=True) if option.flag in f]
        assert set(_quoted(row["flag"])) == set(map(config.flag_of, option.names)), row
        assert set(_quoted(row["environment"])) == set(map(config.env_of, option.names)), row
        shown = {option.default or "unset"} | {option.other_default or option.default or "unset"}
        assert _documented_default(row["default"]) >= shown, row
    listed = {flag for row in flags for flag in row}
    assert listed == {config.flag_of(name) for option in OPTIONS for name in option.names}


def test_every_readme_table_of_flags_shows_the_tables_defaults() -> None:
    """The Keys and Limits sections' tables of flags (policy, gRPC limits) agree too."""
    by_flag = {config.flag_of(name): option for option in OPTIONS for name in option.names}
    checked = 0
    for table in _tables(README.read_text()):
        for row in table:
            if "flag" not in row or "default" not in row:
                continue
            for flag in _quoted(row["flag"]):
                assert flag in by_flag, f"README documents {flag}, which no command takes"
                assert (by_flag[flag].default or "unset") in _documented_default(row["default"]), (
                    row
                )
                checked += 1
    assert checked > len(OPTIONS)  # the configuration table and the others


# -- the issuer (OpenID Connect Discovery 1.0 §3, RFC 8414 §2) --------------------------------


@pytest.mark.parametrize(
    "issuer",
    [
        "https://auth.example.test",
        "https://auth.example.test/",
        "https://auth.example.test:8443/tenants/a%20b",
        "https://xn--bcher-kva.example.test/realms/main",
        "http://127.0.0.1:8080",
        "http://localhost:8080/x",
        "http://[::1]:8080",
    ],
)
def test_an_issuer_url_is_accepted_as_written(issuer: str) -> None:
    for given, env in (({"issuer": issuer}, {}), ({}, {"AGENTROUTER_AUTH_ISSUER": issuer})):
        assert command_config("token sign", given, env).issuer == issuer
    assert serve_config({"issuer": issuer}, {}).published_jwks_uri.startswith(issuer.rstrip("/"))


@pytest.mark.parametrize(
    ("issuer", "reason"),
    [
        ("https://user:secret@auth.example.test", "must have no user name or password"),
        ("https://user@auth.example.test", "must have no user name or password"),
        ("https://@auth.example.test", "must have no user name or password"),
        ("https://auth.example.test/a b", "may hold only URL characters"),
        ("https://auth.example.test/\n", "may hold only URL characters"),
        ("https://auth.example.test\r\nX-Injected: 1", "may hold only URL characters"),
        ("https://auth.exa\tmple.test", "may hold only URL characters"),
        ('https://auth.example.test/"quoted"', "may hold only URL characters"),
        ("https://auth.example.test/a\\b", "may hold only URL characters"),
        ("https://auth.example.test/\u202egnp.exe", "may hold only URL characters"),
        ("https://auth.example.test/\x1b[31mred", "may hold only URL characters"),
        ("https://auth.example.test/<script>", "may hold only URL characters"),
        ("https://bücher.example.test", "may hold only URL characters"),
        ("https://auth.example.test/%zz", "a '%' must start a %XX escape"),
        ("https://auth.example.test:99999", "is not a URL"),
        ("https://auth.example.test/?tenant=1", "must have no query or fragment"),
        ("https://auth.example.test/#x", "must have no query or fragment"),
        ("http://auth.example.test", "must use https"),
        ("http://localhost.evil.test", "must use https"),
        ("ftp://auth.example.test", "must be an absolute https URL"),
        ("https:///path-only", "must be an absolute https URL"),
    ],
)  # fmt: skip
def test_an_issuer_that_is_not_a_plain_https_url_is_refused_in_one_printable_line(
    issuer: str, reason: str
) -> None:
    for given, env, source in (
        ({"issuer": issuer}, {}, "--issuer"),
        ({}, {"AGENTROUTER_AUTH_ISSUER": issuer}, "AGENTROUTER_AUTH_ISSUER"),
    ):
        with pytest.raises(ConfigError) as failure:
            command_config("serve", given, env)
        message = str(failure.value)
        assert message.startswith(f"{source}: "), message
        assert reason in message
        assert message.isascii(), message
        assert message.isprintable(), message


def test_the_jwks_uri_follows_the_same_rules() -> None:
    with pytest.raises(ConfigError, match="^--jwks-uri: .*must have no user name or password"):
        serve_config(
            {"issuer": "https://auth.example.test", "jwks_uri": "https://u:p@cdn.example.test/k"},
            {},
        )
