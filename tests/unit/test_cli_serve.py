"""`serve` checks its listen addresses before any worker starts: port 0 becomes a free port
(which workers are then given), a busy or unknown address is a one-line error."""

from __future__ import annotations

import socket

import pytest

from agentrouter_auth.cli.serve import concrete
from agentrouter_auth.config import Address, ConfigError


def test_port_zero_becomes_a_free_port_that_can_be_bound() -> None:
    chosen = concrete(Address("127.0.0.1", 0), "--http-addr")
    assert chosen.host == "127.0.0.1"
    assert chosen.port > 0
    with socket.socket() as again:
        again.bind(("127.0.0.1", chosen.port))


def test_a_busy_port_is_refused_naming_the_option() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as failure:
            concrete(Address("127.0.0.1", port), "--grpc-addr")
    assert str(failure.value) == f"--grpc-addr 127.0.0.1:{port}: Address already in use"


def test_an_address_of_another_machine_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--http-addr 192\.0\.2\.1:8080: .*(assign|avail)"):
        concrete(Address("192.0.2.1", 8080), "--http-addr")  # TEST-NET-1: never local
