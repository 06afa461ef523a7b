"""Configuration from one table of options: a thin facade over the package's modules.

Every option is a row of the table (`config.table`): its name (which gives the flag
`--name-in-kebab-case` and the variable AGENTROUTER_AUTH_NAME_IN_UPPER_SNAKE_CASE), its default,
its help text, the kind of its value (validation included), where that value goes in the
configuration, and which commands take it. The command line with its `--help`
(`agentrouter_auth.cli`), the environment a worker process reads (`from_environment`, no
argparse), the environment `serve` hands its workers (`to_environment`) and `ServeConfig` all
come from the table: a new option is one row, and a field where its value goes.

Validation happens while parsing, before anything binds a port, so a bad value stops the
process with a one-line reason that names the option. Parsing makes no system call: the
open-files limit for the connection cap is raised where `serve` starts.

    values.py   value types: Address, durations, numbers, URLs, KEK files; ConfigError
    limits.py   HttpLimits, GrpcLimits (each option's help beside its field), the fd budget
    model.py    KeyConfig, ServeConfig, TLSConfig: what a command receives
    option.py   one row of the table: names, flag, variable, default, parsing
    table.py    the data: every option once, with its help
    engine.py   flags + environment → configuration (precedence, aliases), and back
"""

from __future__ import annotations

from agentrouter_auth.config.engine import (
    command_config,
    from_environment,
    options_for,
    serve_config,
    source_of,
    to_environment,
)
from agentrouter_auth.config.limits import (
    FD_RESERVE,
    INT_MAX,
    MAX_CONNECTIONS_CEILING,
    GrpcLimits,
    HttpLimits,
    raise_open_files_limit,
    resolve_max_connections,
)
from agentrouter_auth.config.model import KeyConfig, ServeConfig, TLSConfig
from agentrouter_auth.config.option import (
    ENV_PREFIX,
    SERVE,
    SUPERVISOR_ENV,
    Option,
    env_of,
    flag_of,
)
from agentrouter_auth.config.table import MAX_WORKERS, OPTIONS
from agentrouter_auth.config.values import KEK_SEPARATOR, Address, ConfigError, Kind, parse_address

__all__ = [
    "ENV_PREFIX",
    "FD_RESERVE",
    "INT_MAX",
    "KEK_SEPARATOR",
    "MAX_CONNECTIONS_CEILING",
    "MAX_WORKERS",
    "OPTIONS",
    "SERVE",
    "SUPERVISOR_ENV",
    "Address",
    "ConfigError",
    "GrpcLimits",
    "HttpLimits",
    "KeyConfig",
    "Kind",
    "Option",
    "ServeConfig",
    "TLSConfig",
    "command_config",
    "env_of",
    "flag_of",
    "from_environment",
    "options_for",
    "parse_address",
    "raise_open_files_limit",
    "resolve_max_connections",
    "serve_config",
    "source_of",
    "to_environment",
]
