"""The keyring's health reflects every state in which the ring cannot do its job, on a real
server: a read-only store asked to rotate, a full disk under every step, keys from the future.

The set is still served in each of them, so /readyz stays 200 and the server's own gRPC health
stays SERVING; the keyring entry, /readyz's `keyring` member and a gauge say what is wrong.
The faults are real: a read-only bind mount and a full tmpfs (root only; skipped elsewhere).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentrouter_auth.keys.directory import MANIFEST, DirectoryStore
from agentrouter_auth.keys.policy import DAY, Policy
from agentrouter_auth.keys.ring import KeyRing

from .serverproc import AGENTROUTER_AUTH, ServerProcess, eventually
from .test_operations import samples
from .test_reload import FAST_POLICY, keyring_health, kids, serve_argv

pytestmark = pytest.mark.integration
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
YEAR = 365 * DAY


class Mounts:
    """Mounts made by a test, undone at its end; a test is skipped where mounting is refused."""

    def __init__(self) -> None:
        self.targets: list[Path] = []

    def run(self, *argv: str) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot {' '.join(argv[:3])} here: {result.stderr.strip()}")

    def read_only_bind(self, source: Path, target: Path) -> None:
        target.mkdir()
        self.run("mount", "--bind", str(source), str(target))
        self.targets.append(target)
        self.run("mount", "-o", "remount,ro,bind", str(target))

    def tmpfs(self, target: Path, size: str) -> None:
        target.mkdir()
        self.run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target))
        self.targets.append(target)


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    made = Mounts()
    yield made
    for target in reversed(made.targets):
        subprocess.run(["umount", str(target)], check=True)


def gauge(server: ServerProcess, name: str) -> float:
    return samples(server.base_url)[(name, ())]


def readyz(server: ServerProcess) -> tuple[int, dict[str, object]]:
    response = httpx.get(server.base_url + "/readyz", timeout=10)
    document: dict[str, object] = response.json()
    return response.status_code, document


def overall_health(port: int) -> int:
    """The gRPC health of the server as a whole (the empty service name)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="")
        return int(stub.Check(request, timeout=10).status)  # type: ignore[attr-defined]


def keys_init(keys_dir: Path, *extra: str) -> None:
    argv = [*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir), *extra]
    subprocess.run(argv, check=True)


@pytest.mark.slow
def test_a_read_only_store_with_rotation_on_says_it_cannot_rotate_from_start(
    tmp_path: Path, mounts: Mounts
) -> None:
    keys_init(tmp_path / "source")
    mounts.read_only_bind(tmp_path / "source", tmp_path / "mount")
    with ServerProcess(serve_argv(tmp_path / "mount", "--rotation", "auto")) as server:
        assert keyring_health(server.port) == NOT_SERVING  # from start, before any step is due
        assert overall_health(server.port) == SERVING  # the set is served
        code, ready = readyz(server)
        assert code == 200
        assert ready["keyring"] == "error"
        assert "cannot be written" in str(ready["reason"])
        assert gauge(server, "agentrouter_auth_rotation_failing") == 1
        # Observe a few reload intervals (200 ms): the probe runs again each one, the state
        # holds, and it is logged once.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert keyring_health(server.port) == NOT_SERVING
            time.sleep(0.1)
        assert server.terminate() == 0
    (failed,) = server.events("rotation_step_failed")
    assert "Read-only file system" in failed["reason"]

    with ServerProcess(serve_argv(tmp_path / "mount", "--rotation", "off")) as server:
        assert keyring_health(server.port) == SERVING  # nothing asks it to write
        assert readyz(server)[1]["keyring"] == "ok"
        assert gauge(server, "agentrouter_auth_rotation_failing") == 0
        assert server.terminate() == 0
    assert server.events("rotation_step_failed") == []


def _fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; return the filler."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as handle, pytest.raises(OSError, match="No space"):
        while True:
            handle.write(b"\0" * 4096)
    return filler


@pytest.mark.slow
def test_a_full_disk_turns_the_keyring_unhealthy_until_a_step_succeeds(
    tmp_path: Path, mounts: Mounts
) -> None:
    mounts.tmpfs(tmp_path / "disk", "256k")
    keys_dir = tmp_path / "disk" / "keys"
    keys_init(keys_dir, *FAST_POLICY)  # its successor is due 2 s after
    filler = _fill(tmp_path / "disk")
    with ServerProcess(serve_argv(keys_dir, *FAST_POLICY)) as server:
        (first,) = kids(server.port)
        health = eventually(lambda: keyring_health(server.port), lambda s: s != SERVING)
        assert health == NOT_SERVING, "keyring health stayed SERVING while every step failed"
        code, ready = readyz(server)
        assert (code, ready["keyring"]) == (200, "error")
        assert "cannot be written" in str(ready["reason"])
        assert gauge(server, "agentrouter_auth_rotation_failing") == 1
        assert kids(server.port) == {first}  # the good set, still served
        # Observe a few more failed attempts (one per 200 ms reload interval): the state
        # holds and is not logged again.
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert keyring_health(server.port) == NOT_SERVING
            time.sleep(0.1)
        assert len(server.events("rotation_step_failed")) == 1
        filler.unlink()
        assert eventually(lambda: keyring_health(server.port), lambda s: s == SERVING) == SERVING
        assert eventually(lambda: len(kids(server.port)), lambda n: n == 2) == 2
        assert readyz(server)[1]["keyring"] == "ok"
        assert gauge(server, "agentrouter_auth_rotation_failing") == 0
        assert server.terminate() == 0
    (failed,) = server.events("rotation_step_failed")
    assert "No space left on device" in failed["reason"]
    assert len(server.events("rotation_step_recovered")) == 1


def _store_from_the_future(keys_dir: Path) -> list[str]:
    """A store whose keys were made while the clock ran two years ahead: an active key and a
    pending successor."""
    ring = KeyRing(DirectoryStore(keys_dir), Policy(), clock=lambda: time.time() + 2 * YEAR)
    made = [*ring.init(["ES256"]), *ring.rotate()]
    return sorted(change.kid for change in made)


def _manifest(keys_dir: Path) -> dict[str, dict[str, object]]:
    document = json.loads((keys_dir / MANIFEST).read_text())
    return {entry["kid"]: entry for entry in document["keys"]}


def test_keys_dated_in_the_future_are_reported_and_redated(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    future = _store_from_the_future(keys_dir)
    before = _manifest(keys_dir)
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off")) as server:
        assert keyring_health(server.port) == NOT_SERVING
        assert sorted(kids(server.port)) == future  # still served
        code, ready = readyz(server)
        assert (code, ready["keyring"]) == (200, "error")
        assert "dated in the future" in str(ready["reason"])
        assert gauge(server, "agentrouter_auth_future_dated_keys") == 2
        assert server.terminate() == 0
    assert sorted(event["kid"] for event in server.events("key_dated_in_future")) == future
    assert _manifest(keys_dir) == before  # --rotation off writes nothing

    with ServerProcess(serve_argv(keys_dir, "--rotation", "auto")) as server:
        assert eventually(lambda: keyring_health(server.port), lambda s: s == SERVING) == SERVING
        assert gauge(server, "agentrouter_auth_future_dated_keys") == 0
        now = time.time()
        after = _manifest(keys_dir)
        for entry in after.values():
            for name in ("created", "activated", "retired"):
                assert int(str(entry.get(name, 0))) <= now, (entry["kid"], name)
        states = sorted(str(entry["state"]) for entry in after.values())
        assert states == ["active", "pending"]  # the successor waits publish_ahead from now
        assert server.terminate() == 0
    assert sorted(event["kid"] for event in server.events("key_redated")) == future
