"""What a command module declares: its commands, each with its own arguments and a handler.

The options of the table (`agentrouter_auth.config`) are added to every command by the
package; a command adds only the arguments that are its own (`--alg`, a file, a kid).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from agentrouter_auth.config import KeyConfig
from agentrouter_auth.keys.ring import KeyRing

Handler = Callable[[KeyRing, KeyConfig, argparse.Namespace], int]
"""Runs a command with its key ring, its validated configuration and its own arguments;
returns the exit status."""


def no_arguments(_parser: argparse.ArgumentParser) -> None:
    """For a command that takes only the table's options."""


@dataclass(frozen=True, slots=True)
class Command:
    """One command: `serve`, or a group and a subcommand (`keys init`)."""

    name: str
    help: str
    run: Handler
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
