"""`agentrouter-auth token sign`: a compact JWS signed by the active key."""

from __future__ import annotations

import argparse
import json

from agentrouter_auth.cli.command import Command
from agentrouter_auth.config import ConfigError, KeyConfig
from agentrouter_auth.keys.material import SIGNING_ALGORITHMS
from agentrouter_auth.keys.policy import parse_duration
from agentrouter_auth.keys.ring import KeyRing

HELP = "tokens signed by the active key"
ALGORITHMS = sorted(SIGNING_ALGORITHMS)


def sign(ring: KeyRing, config: KeyConfig, args: argparse.Namespace) -> int:
    """Print a compact JWS signed by the active key."""
    try:
        claims = json.loads(args.claims)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--claims: not JSON: {err}") from err
    if not isinstance(claims, dict):
        raise ConfigError("--claims: must be a JSON object")
    if config.issuer and claims.setdefault("iss", config.issuer) != config.issuer:
        raise ConfigError("--claims: iss differs from --issuer; leave it out")
    ttl = parse_duration("--ttl", args.ttl) if args.ttl else None
    ring.load()
    print(ring.sign(claims, alg=args.alg, ttl=ttl))
    return 0


def _sign_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--claims", required=True, help='a JSON object, e.g. \'{"sub":"svc"}\'')
    parser.add_argument("--ttl", help="token lifetime (default: --max-token-ttl)")
    parser.add_argument(
        "--alg", choices=ALGORITHMS, help="algorithm (default: the only active one)"
    )


COMMANDS = (
    Command("token sign", "print a compact JWS of the given claims", sign, _sign_arguments),
)
