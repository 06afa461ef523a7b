"""The rotation policy: when keys are published, sign, retire and go, and how long caches hold.

Every verifier caches the key set (Envoy refreshes every 10 minutes by default, Istio every
20, PyJWT's PyJWKClient every 5) and none refetches on an unknown `kid`. So a new key is
published `publish_ahead` before it signs, the HTTP cache lifetime is at most half of that, and
a retired key stays published for `retain_after`, past the life of every token it signed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentrouter_auth.errors import AgentRouterAuthError

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_UNITS = {"ms": 0.001, "s": 1.0, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


class PolicyError(AgentRouterAuthError, ValueError):
    """The policy is unsafe or malformed; the message names the setting."""


def parse_duration(name: str, text: str) -> float:
    """Seconds in `text`: `90s`, `15m`, `1h30m`, `30d`, `2w` or a bare number of seconds."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION.findall(value)
        if not value or "".join(n + u for n, u in parts) != value:
            raise PolicyError(
                f"{name}: {text!r} is not a duration (use forms like 90s, 15m, 1h30m, 30d)"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds >= 0:
        raise PolicyError(f"{name}: must not be negative, got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A short human form of a duration: 30d, 1h30m, 45s."""
    remaining, out = int(seconds), []
    for unit, size in (("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", 1.0)):
        count, remaining = divmod(remaining, int(size))
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"


@dataclass(frozen=True, slots=True)
class Policy:
    """Lifecycle times in seconds. Build with `Policy(...)`; invalid combinations raise."""

    rotation_period: float = 30 * DAY
    """How long a key signs before its successor takes over."""
    publish_ahead: float = 1 * DAY
    """How long a new key is published before it signs."""
    retain_after: float = 1 * DAY
    """How long a retired key stays published after it stopped signing."""
    max_token_ttl: float = 1 * HOUR
    """The longest lifetime of a token signed by the ring."""
    clock_skew: float = 5 * MINUTE
    """Clock difference tolerated between issuer and verifiers."""
    cache_max_age: float = 5 * MINUTE
    """HTTP `max-age` of the published set."""
    stale_while_revalidate: float = 1 * MINUTE
    """HTTP `stale-while-revalidate`: a cache may serve the old set this long while refetching."""
    stale_if_error: float = 1 * DAY
    """HTTP `stale-if-error`: a cache may serve the old set this long if we cannot answer."""

    def __post_init__(self) -> None:
        for name in ("rotation_period", "publish_ahead", "max_token_ttl", "retain_after"):
            if not getattr(self, name) > 0:
                raise PolicyError(f"{_flag(name)} must be longer than zero")
        if self.rotation_period <= self.publish_ahead:
            raise PolicyError(
                f"--rotation-period ({format_duration(self.rotation_period)}) must be longer than "
                f"--publish-ahead ({format_duration(self.publish_ahead)}): a key would be replaced "
                "before its successor was published"
            )
        stale_window = self.cache_max_age + self.stale_while_revalidate
        if stale_window > self.publish_ahead / 2:
            raise PolicyError(
                f"--cache-max-age + --stale-while-revalidate ({format_duration(stale_window)}) "
                f"must be at most half of --publish-ahead ({format_duration(self.publish_ahead)})"
                ": caches would still hold a set without the next key when it starts signing"
            )
        needed = self.max_token_ttl + self.clock_skew
        if self.retain_after < needed:
            raise PolicyError(
                f"--retain-after ({format_duration(self.retain_after)}) must be at least "
                f"--max-token-ttl + --clock-skew ({format_duration(needed)}): tokens signed by a "
                "retired key would outlive it"
            )


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


POLICY_FIELDS = (
    "rotation_period",
    "publish_ahead",
    "retain_after",
    "max_token_ttl",
    "clock_skew",
    "cache_max_age",
    "stale_while_revalidate",
    "stale_if_error",
)
