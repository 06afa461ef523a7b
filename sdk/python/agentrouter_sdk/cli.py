"""`tare`: AgentRouter from the command line.

    tare api auth jwks get     print the JSON Web Key Set

Reads AGENTROUTER_BASE_URL and AGENTROUTER_API_KEY; --base-url and --api-key override them.
Errors are one line on stderr and a non-zero exit status.
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

PROG = "tare"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """tare's command line."""
    parser = _Parser(prog=PROG, description="AgentRouter from the command line.")
    parser.add_argument(
        "--base-url",
        default=os.environ.get("AGENTROUTER_BASE_URL"),
        help="AgentRouter URL (env AGENTROUTER_BASE_URL)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("AGENTROUTER_API_KEY"),
        help="API key sent as a bearer token (env AGENTROUTER_API_KEY)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")

    def level(parent: argparse.ArgumentParser, dest: str, name: str, text: str) -> _Parser:
        commands = parent.add_subparsers(dest=dest, required=True, parser_class=_Parser)
        child: _Parser = commands.add_parser(name, help=text)
        return child

    api = level(parser, "group", "api", "call an API")
    auth = level(api, "service", "auth", "AuthService")
    jwks = level(auth, "resource", "jwks", "the JSON Web Key Set")
    level(jwks, "verb", "get", "print the JSON Web Key Set")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run tare; return the exit status."""
    args = build_parser().parse_args(argv)
    if not args.base_url:
        return _fail("no base URL: set AGENTROUTER_BASE_URL or pass --base-url", status=2)
    try:
        with Client(args.base_url, args.api_key, timeout=args.timeout) as client:
            response = client.auth.get_jwks()
    except (AgentRouterError, ValueError) as err:
        return _fail(str(err))
    print(json.dumps(json_format.MessageToDict(response), indent=2))
    return 0


def _fail(message: str, *, status: int = 1) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status
