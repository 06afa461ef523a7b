"""The rotation policy refuses unsafe combinations with a reason that names the settings."""

from __future__ import annotations

import pytest

from agentrouter_auth.keys.policy import (
    DAY,
    HOUR,
    MINUTE,
    Policy,
    PolicyError,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h30m", 5400), ("30d", 30 * DAY), ("2w", 14 * DAY),
     ("1.5h", 5400), ("250ms", 0.25), ("0", 0)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("--x", text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 m", "1y", "-5m", "m5", "nan", "1h-5m"])
def test_bad_durations_name_the_option(text: str) -> None:
    with pytest.raises(PolicyError, match="^--publish-ahead: "):
        parse_duration("--publish-ahead", text)


def test_format_duration() -> None:
    assert format_duration(30 * DAY) == "30d"
    assert format_duration(HOUR + 30 * MINUTE) == "1h30m"
    assert format_duration(0) == "0s"


def test_defaults_are_safe_against_common_verifier_caches() -> None:
    policy = Policy()
    # Istio refreshes every 20 minutes, Envoy every 10, PyJWT every 5: a new key must be
    # published longer than the slowest of them plus the HTTP cache lifetime before it signs.
    slowest_verifier = 20 * MINUTE
    assert policy.publish_ahead >= slowest_verifier + policy.cache_max_age
    assert policy.cache_max_age <= policy.publish_ahead / 2
    assert policy.retain_after >= policy.max_token_ttl + policy.clock_skew


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"cache_max_age": 2 * HOUR, "publish_ahead": 3 * HOUR}, "at most half of --publish-ahead"),
        ({"cache_max_age": 20 * MINUTE, "stale_while_revalidate": 20 * MINUTE,
          "publish_ahead": HOUR}, "at most half of --publish-ahead"),
        ({"retain_after": HOUR, "max_token_ttl": HOUR}, "--retain-after (1h) must be at least"),
        ({"rotation_period": DAY, "publish_ahead": DAY}, "must be longer than --publish-ahead"),
        ({"publish_ahead": 0, "cache_max_age": 0, "stale_while_revalidate": 0},
         "--publish-ahead must be longer than zero"),
    ],
)  # fmt: skip
def test_unsafe_policies_are_refused(settings: dict[str, float], reason: str) -> None:
    with pytest.raises(PolicyError) as failure:
        Policy(**settings)
    assert reason in str(failure.value)
    assert "\n" not in str(failure.value)
