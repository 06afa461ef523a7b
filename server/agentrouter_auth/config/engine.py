"""The option engine: from the table, a command's flags and the environment to its validated
configuration, and back to the environment that `serve` hands its workers.

A flag wins over its variable, a variable over the option's default; an option and its alias
given different values are refused. The command line with its `--help` (`agentrouter_auth.cli`)
and a worker's environment (`from_environment`, no argparse) read the same table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agentrouter_auth.config.limits import GrpcLimits, HttpLimits
from agentrouter_auth.config.model import KeyConfig, ServeConfig, TLSConfig
from agentrouter_auth.config.option import SERVE, Option, env_of, flag_of
from agentrouter_auth.config.table import OPTIONS
from agentrouter_auth.config.values import ConfigError
from agentrouter_auth.keys.policy import Policy

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


def source_of(name: str, command: str, given: Mapping[str, object], env: Mapping[str, str]) -> str:
    """What gave option `name` of `command` its value, to name in a message checked after
    parsing: the flag or the variable it came from (the flag for the default)."""
    (option,) = [option for option in options_for(command) if option.name == name]
    return _chosen_text(option, command, given, env)[1]


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
