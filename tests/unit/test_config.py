"""Addresses and durations are validated with messages that name the option."""

from __future__ import annotations

import re

import pytest

from agentrouter_auth.config import Address, ConfigError, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9090", Address("127.0.0.1", 9090)),
        ("localhost:0", Address("localhost", 0)),
        ("[::1]:8080", Address("::1", 8080)),
        ("0.0.0.0:65535", Address("0.0.0.0", 65535)),
    ],
)
def test_valid_addresses(text: str, expected: Address) -> None:
    assert parse_address("--grpc-addr", text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("9090", "expected HOST:PORT"),
        (":9090", "expected HOST:PORT"),
        ("localhost:http", "port must be a number"),
        ("localhost:65536", "port must be a number"),
        ("localhost:-1", "port must be a number"),
        ("::1:9090", "in brackets"),
        ("[nope]:9090", "not an IPv6 address"),
    ],
)
def test_invalid_addresses_name_the_option(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=f"^--grpc-addr: .*{re.escape(reason)}"):
        parse_address("--grpc-addr", text)
