"""The `agentrouter-auth` command: parse the command line, build the configuration, call.

Every option comes from the table in `agentrouter_auth.config` and shows its AGENTROUTER_AUTH_*
variable and default in `--help`; the commands live by group in `serve`, `keys` and `token`.
Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from agentrouter_auth import __version__, config, logs
from agentrouter_auth.cli import keys, serve, store, token
from agentrouter_auth.cli.command import Command, Handler
from agentrouter_auth.config import Option
from agentrouter_auth.errors import AgentRouterAuthError
from agentrouter_auth.keys.location import redacted
from agentrouter_auth.keys.registry import open_store
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.snapshot import EmptyKeySetError

PROG = "agentrouter-auth"
GROUPS = {"keys": keys.HELP, "token": token.HELP, "store": store.HELP}
COMMANDS: tuple[Command, ...] = (
    *serve.COMMANDS,
    *keys.COMMANDS,
    *token.COMMANDS,
    *store.COMMANDS,
)
HANDLERS: dict[str, Handler] = {command.name: command.run for command in COMMANDS}
"""Command name (`serve`, `keys init`, …) → what runs it."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one line, not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _help(option: Option, command: str) -> str:
    default = option.default_for(command) or "unset"
    return f"{option.help} (env {option.env}; default {default})".replace("%", "%%")


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """Add the table's options that `command` takes, each under its --help section.

    Flags default to None: `config.command_config` falls back to the environment, then to the
    option's default, and refuses an option and its alias given different values."""
    sections: dict[str, argparse._ArgumentGroup] = {}
    for option in config.options_for(command):
        where: argparse._ActionsContainer = parser
        if option.group:
            if option.group not in sections:
                sections[option.group] = parser.add_argument_group(option.group)
            where = sections[option.group]
        metavar = None if option.choices else option.kind.metavar
        choices = option.choices or None
        action = "append" if option.kind.separator else "store"  # a repeatable flag
        where.add_argument(
            option.flag,
            dest=option.name,
            action=action,
            metavar=metavar,
            choices=choices,
            help=_help(option, command),
        )
        for alias in option.aliases:
            where.add_argument(
                config.flag_of(alias),
                dest=alias,
                metavar=metavar,
                choices=choices,
                help=f"the same as {option.flag} (env {config.env_of(alias)})",
            )


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface: every command with the table's options and its own."""
    parser = _Parser(prog=PROG, description="AgentRouter AuthService: publishes the JWKS.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    top = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction[_Parser]] = {}
    for command in COMMANDS:
        group, _, name = command.name.partition(" ")
        if not name:
            sub = top.add_parser(group, help=command.help)
        else:
            if group not in groups:
                groups[group] = top.add_parser(group, help=GROUPS[group]).add_subparsers(
                    dest=f"{group}_command", required=True, parser_class=_Parser
                )
            sub = groups[group].add_parser(name, help=command.help)
        add_options(sub, command.name)
        command.arguments(sub)
        sub.set_defaults(command_name=command.name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; return the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        settings = config.command_config(args.command_name, vars(args), os.environ)
        logs.configure(settings.log_format)
        key_store = open_store(settings.key_store, keks=settings.keks)
        ring = KeyRing(key_store, settings.policy, rsa_bits=settings.rsa_bits)
        try:
            return HANDLERS[args.command_name](ring, settings, args)
        except EmptyKeySetError:
            where = redacted(settings.key_store)
            return _fail(
                f"no keys in {where}: create one with `{PROG} keys init --key-store {where}`"
            )
        finally:
            key_store.close()
    except AgentRouterAuthError as err:  # every error the project raises on purpose
        return _fail(str(err))
    except OSError as err:  # a file or socket the store does not name itself
        where = f"{err.filename}: " if err.filename else ""
        return _fail(f"{where}{err.strerror or err}")
    except Exception as err:  # the last resort: one line, never a traceback
        return _fail(f"unexpected {type(err).__name__} (please report it): {err}")


def _fail(message: str) -> int:
    """Report an error as one line on stderr (a message may quote text with line breaks)."""
    line = " ".join(message.split()) or "failed"
    print(f"{PROG}: error: {line}", file=sys.stderr)
    return 1
