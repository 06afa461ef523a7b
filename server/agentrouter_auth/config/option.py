"""One row of the option table: an option's names (its flag and its variable follow from its
name), its default, its help, the kind of its value, the checks on it, where it goes in the
configuration and which commands take it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentrouter_auth.config.values import TEXT, Check, ConfigError, Kind

ENV_PREFIX = "AGENTROUTER_AUTH_"
SUPERVISOR_ENV = ENV_PREFIX + "SUPERVISOR_PID"
"""Set by `serve` for its workers (not an option): the pid of the process supervising them."""
SERVE = "serve"


def flag_of(name: str) -> str:
    """The flag of an option or alias name: `--name-in-kebab-case`."""
    return "--" + name.replace("_", "-")


def env_of(name: str) -> str:
    """The environment variable of an option or alias name: AGENTROUTER_AUTH_NAME."""
    return ENV_PREFIX + name.upper()


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
        return flag_of(self.name)

    @property
    def env(self) -> str:
        """AGENTROUTER_AUTH_NAME."""
        return env_of(self.name)

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
