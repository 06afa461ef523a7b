"""The option engine: validation names the option, the environment and flags build the same
configuration, a flag wins over its variable, and workers rebuild exactly what `serve`
resolved."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from agentrouter_auth import config
from agentrouter_auth.config import (
    Address,
    ConfigError,
    GrpcLimits,
    HttpLimits,
    KeyConfig,
    ServeConfig,
    command_config,
    from_environment,
    options_for,
    serve_config,
    to_environment,
)
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.keys.policy import Policy, PolicyError

STORE = {"AGENTROUTER_AUTH_KEY_STORE": "/srv/keys"}


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


def test_a_config_error_is_a_project_error_and_still_a_value_error() -> None:
    with pytest.raises(ConfigError) as failure:
        serve_config({"workers": "0"}, {})
    assert isinstance(failure.value, AgentRouterAuthError), type(failure.value).__mro__
    assert isinstance(failure.value, ValueError)
