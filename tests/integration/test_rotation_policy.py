"""Two real servers rotating one key store with different rotation policies: the second is
refused at start in one line naming both, before binding a port; a running server whose
store's recorded policy is changed (`keys policy --set`) stops its steps, with keyring health
NOT_SERVING and one log line, and resumes once they agree again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentrouter_auth.grpc.health import KEYRING_HEALTH_NAME

from .serverproc import AGENTROUTER_AUTH, ServerProcess, eventually, refused_in_one_line, serve_argv
from .test_postgres_faults import NOT_SERVING, SERVING, health, readyz, served_kids

pytestmark = pytest.mark.integration

# Times that fit a test: the first server publishes a successor 2 s before it signs...
FAST = ["--rotation-period", "4s", "--publish-ahead", "2s", "--retain-after", "2s",
        "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "1s",
        "--stale-while-revalidate", "0s"]  # fmt: skip
# ... the second one's verifiers were promised 20 s.
SLOW = ["--rotation-period", "40s", "--publish-ahead", "20s", "--retain-after", "2s",
        "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "1s",
        "--stale-while-revalidate", "0s"]  # fmt: skip


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*AGENTROUTER_AUTH, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}: {result.stderr}"
    return result


def _serve(keys: Path, policy: list[str]) -> list[str]:
    return serve_argv(keys, "--rotation", "auto", "--reload-interval", "200ms", *policy)


def test_a_second_server_with_another_rotation_policy_is_refused_at_start(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cli("keys", "init", "--keys-dir", str(keys))
    with ServerProcess(_serve(keys, FAST)) as first:
        line = refused_in_one_line(_serve(keys, SLOW), timeout=30)
        assert line.startswith(f"agentrouter-auth: error: {keys}: the key store records the "
                               "rotation policy --rotation-period 4s, --publish-ahead 2s, "
                               "--retain-after 2s, this server's is --rotation-period 40s, "
                               "--publish-ahead 20s, --retain-after 2s")  # fmt: skip
        assert "keys policy --set" in line
        assert health(first, KEYRING_HEALTH_NAME) == SERVING
        assert first.terminate() == 0


@pytest.mark.slow
def test_a_running_server_stops_rotating_when_the_recorded_policy_changes(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cli("keys", "init", "--keys-dir", str(keys))
    with ServerProcess(_serve(keys, FAST)) as server:
        assert "--rotation-period 4s" in cli("keys", "policy", "--keys-dir", str(keys)).stdout
        cli("keys", "policy", "--set", "--keys-dir", str(keys), *SLOW)  # on purpose
        keyring = eventually(lambda: readyz(server)[1]["keyring"], lambda state: state == "error")
        assert keyring == "error"
        assert health(server, KEYRING_HEALTH_NAME) == NOT_SERVING
        (failure,) = server.events("rotation_step_failed")
        assert "records the rotation policy --rotation-period 40s" in str(failure["reason"])
        # No step for longer than a whole rotation period of its own policy (4 s).
        served = served_kids(server)
        steps = len(server.events("rotation_step"))
        later = eventually(lambda: served_kids(server), lambda kids: kids != served, 6)
        assert later == served
        assert len(server.events("rotation_step")) == steps
        assert len(server.events("rotation_step_failed")) == 1
        # Agreeing again (the recorded policy set back), it resumes.
        cli("keys", "policy", "--set", "--keys-dir", str(keys), *FAST)
        keyring = eventually(lambda: readyz(server)[1]["keyring"], lambda state: state == "ok")
        assert keyring == "ok"
        resumed = eventually(lambda: served_kids(server), lambda kids: kids != served)
        assert resumed != served
        assert server.terminate() == 0
    # And a server with the policy now recorded starts.
    cli("keys", "policy", "--set", "--keys-dir", str(keys), *SLOW)
    with ServerProcess(_serve(keys, SLOW)) as slow:
        assert health(slow, KEYRING_HEALTH_NAME) == SERVING
        assert slow.terminate() == 0
