"""The limits of the listeners: parsing the options makes no system call, so the HTTP connection
cap is resolved against the open-files limit where `serve` starts (raising the soft limit as far
as the hard one allows), and a cap that limit cannot hold stops `serve` in one line before it
binds a port, naming the flag or the variable it came from."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrouter_auth import cli

LOW = 1600
"""A soft open-files limit that holds the reserve (1536) and 64 connections, well under the
8192 + 1536 that the default cap wants."""


def _in_a_process_limited_to_low(code: str) -> dict[str, int]:
    """Run `code` in a fresh interpreter whose soft open-files limit is LOW; `code` sets the
    dict `out`, returned with the soft limit after it ran."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8192 + 1536:
        pytest.skip(f"the hard open-files limit ({hard}) is too low to see it raised")
    program = (
        "import json, resource\n"
        "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LOW}, hard))\n"
        "out = {}\n"
        f"{code}\n"
        "out['soft'] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_parsing_the_options_leaves_the_open_files_limit_alone() -> None:
    out = _in_a_process_limited_to_low(
        "from agentrouter_auth.config import from_environment, serve_config\n"
        "out['default'] = serve_config({}, {}).http_limits.max_connections\n"
        "out['given'] = from_environment({'AGENTROUTER_AUTH_MAX_CONNECTIONS': '5000'})"
        ".http_limits.max_connections\n"
    )
    assert out["soft"] == LOW, f"parsing raised the soft open-files limit from {LOW} to {out}"
    assert (out["default"], out["given"]) == (0, 5000), "parsing resolved the cap"


def test_the_cap_resolved_at_start_raises_the_soft_limit_to_hold_it() -> None:
    out = _in_a_process_limited_to_low(
        "from agentrouter_auth.config import resolve_max_connections\n"
        "out['default'] = resolve_max_connections(0)\n"
        "out['given'] = resolve_max_connections(5000)\n"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard - 1536)
    assert (out["default"], out["given"]) == (most, 5000)
    assert out["soft"] >= most + 1536 > LOW


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port held by a listening socket for the test."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield int(busy.getsockname()[1])


@pytest.mark.parametrize("given", ["--max-connections", "AGENTROUTER_AUTH_MAX_CONNECTIONS"])
def test_a_cap_the_limit_cannot_hold_stops_serve_in_one_line_before_it_binds(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    busy_port: int,
    given: str,
) -> None:
    """The store is empty and the HTTP address busy: either would be the error if the cap were
    checked after loading the keys or after probing the addresses."""
    argv = ["serve", "--key-store", str(tmp_path / "keys"), "--http-addr"]
    argv += [f"127.0.0.1:{busy_port}", "--grpc-addr", "127.0.0.1:0"]
    if given == "--max-connections":
        argv += ["--max-connections", "100000000"]
    else:
        monkeypatch.setenv(given, "100000000")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"agentrouter-auth: error: {given} 100000000 needs 100001536 open files but the limit is "
    ), err
    assert err.endswith("; lower it or raise `ulimit -n`\n"), err
    assert err.count("\n") == 1, err
