"""`tare`: AgentRouter from the command line.

    tare api auth jwks get     print the JSON Web Key Set

Reads AGENTROUTER_BASE_URL and AGENTROUTER_API_KEY; --base-url and --api-key override them,
given anywhere on the line (before or after the subcommand).
Errors are one line on stderr and a non-zero exit status, with no control character from what
the server said.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from google.protobuf import json_format

from agentrouter_sdk import AgentRouterError, Client
from agentrouter_sdk._client import DEFAULT_TIMEOUT_SECONDS
from agentrouter_sdk._text import printable

PROG = "tare"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _global_flags() -> _Parser:
    """The flags every level of the command line accepts (`tare --base-url U api …` and
    `tare api auth jwks get --base-url U` alike). They default to SUPPRESS, so a level that
    does not see one leaves the value another level set; `main` fills in the defaults."""
    flags = _Parser(add_help=False)
    group = flags.add_argument_group("global options (accepted anywhere on the line)")
    group.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help="AgentRouter URL (env AGENTROUTER_BASE_URL)",
    )
    group.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        help="API key sent as a bearer token (env AGENTROUTER_API_KEY)",
    )
    group.add_argument(
        "--timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help=f"seconds per call (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    return flags


def build_parser() -> argparse.ArgumentParser:
    """tare's command line."""
    flags = _global_flags()
    parser = _Parser(prog=PROG, description="AgentRouter from the command line.", parents=[flags])

    def level(parent: argparse.ArgumentParser, dest: str, name: str, text: str) -> _Parser:
        commands = parent.add_subparsers(dest=dest, required=True, parser_class=_Parser)
        child: _Parser = commands.add_parser(name, help=text, parents=[flags])
        return child

    api = level(parser, "group", "api", "call an API")
    auth = level(api, "service", "auth", "AuthService")
    jwks = level(auth, "resource", "jwks", "the JSON Web Key Set")
    level(jwks, "verb", "get", "print the JSON Web Key Set")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run tare; return the exit status."""
    args = build_parser().parse_args(argv)
    base_url = getattr(args, "base_url", None) or os.environ.get("AGENTROUTER_BASE_URL")
    api_key = getattr(args, "api_key", None) or os.environ.get("AGENTROUTER_API_KEY")
    timeout = getattr(args, "timeout", DEFAULT_TIMEOUT_SECONDS)
    if not base_url:
        return _fail("no base URL: set AGENTROUTER_BASE_URL or pass --base-url", status=2)
    try:
        with Client(base_url, api_key, timeout=timeout) as client:
            response = client.auth.get_jwks()
    except (AgentRouterError, ValueError) as err:
        return _fail(str(err))
    print(json.dumps(json_format.MessageToDict(response), indent=2))
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text!r}")
    return value


def _fail(message: str, *, status: int = 1) -> int:
    print(f"{PROG}: error: {printable(message)}", file=sys.stderr)
    return status
