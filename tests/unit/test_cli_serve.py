"""`serve` checks its listen addresses before any worker starts: port 0 becomes a free port
(which workers are then given), a busy or unknown address is a one-line error. Its supervisor
replaces a worker that keeps dying later each time (the delays, on a fake clock)."""

from __future__ import annotations

import socket

import pytest

from agentrouter_auth.cli.serve import concrete
from agentrouter_auth.config import Address, ConfigError
from agentrouter_auth.supervisor import Backoff, RespawnSchedule, Supervisor


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


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_slot_that_keeps_dying_waits_one_second_then_doubling_up_to_thirty() -> None:
    schedule = RespawnSchedule(Backoff(), FakeClock())
    delays = [schedule.died(2, lived=0.5) for _ in range(9)]
    assert delays == [0, 1, 2, 4, 8, 16, 30, 30, 30]


def test_a_worker_that_lived_a_while_is_replaced_at_once_and_the_count_starts_over() -> None:
    schedule = RespawnSchedule(Backoff(), FakeClock())
    for _ in range(5):
        schedule.died(1, lived=1.0)
    assert schedule.died(1, lived=30.0) == 0
    assert schedule.quick_deaths[1] == 1
    assert schedule.died(1, lived=1.0) == 1


def test_slots_back_off_independently() -> None:
    schedule = RespawnSchedule(Backoff(), FakeClock())
    for _ in range(4):
        schedule.died(1, lived=0.1)
    assert schedule.died(2, lived=0.1) == 0
    assert schedule.quick_deaths == {1: 4, 2: 1}


def test_a_successor_falls_due_after_its_delay_and_not_before() -> None:
    clock = FakeClock()
    schedule = RespawnSchedule(Backoff(), clock)
    schedule.died(3, lived=0.1)
    schedule.started(3)
    assert schedule.died(3, lived=0.1) == 1
    assert schedule.died(4, lived=0.1) == 0
    assert schedule.ready() == [4]
    schedule.started(4)
    assert schedule.wait() == 1
    assert schedule.ready() == []
    clock.now += 0.999
    assert schedule.ready() == []
    clock.now += 0.001
    assert schedule.ready() == [3]
    schedule.started(3)
    assert schedule.wait() is None
    assert schedule.ready() == []


def test_the_supervisor_refuses_granian_features_its_loop_does_not_run() -> None:
    server = Supervisor(
        "agentrouter_auth.asgi:create_app", workers_lifetime=3600, log_enabled=False
    )
    with pytest.raises(ValueError, match="workers_lifetime"):
        server._serve_loop(print, print)  # the check comes before the loop starts
