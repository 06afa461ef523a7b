"""A worker that dies is replaced while the other keeps serving."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import DirectoryStore

from .serverproc import ServerProcess, serve_argv

pytestmark = pytest.mark.integration
JWKS = "/.well-known/jwks.json"


def worker_pids(base_url: str, tries: int = 80) -> set[int]:
    """The pids that answer /healthz on new connections (spread over the workers)."""
    pids = set()
    for _ in range(tries):
        with httpx.Client(timeout=5) as client:
            pids.add(client.get(f"{base_url}/healthz").json()["pid"])
    return pids


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(tmp_path: Path) -> None:
    KeyRing(DirectoryStore(tmp_path), Policy()).init(["ES256"])
    with ServerProcess(serve_argv(tmp_path, "--workers", "2")) as server:
        pids = worker_pids(server.base_url)
        assert len(pids) == 2
        victim, survivor = sorted(pids)
        survivor_answers: list[int] = []
        failures: list[str] = []
        stop = threading.Event()

        def load() -> None:
            # One keep-alive connection: whichever worker accepted it answers all its requests.
            with httpx.Client(timeout=5) as client:
                while not stop.is_set():
                    try:
                        pid = client.get(f"{server.base_url}/healthz").json()["pid"]
                        response = client.get(server.base_url + JWKS)
                    except httpx.HTTPError as err:
                        failures.append(repr(err))
                        continue
                    if pid == survivor:
                        survivor_answers.append(response.status_code)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        replaced: set[int] = set()
        while time.monotonic() < deadline:
            replaced = worker_pids(server.base_url, tries=20) - {victim, survivor}
            if replaced:
                break
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join()
        assert replaced, "no new worker answered within 20 s"
        assert survivor_answers
        assert set(survivor_answers) == {200}
        # A client whose connection the killed worker held sees that connection fail; those
        # on the survivor never do.
        assert len(failures) <= len(threads), failures
        assert server.proc.poll() is None  # the server as a whole kept running
        assert any(
            "Spawning worker" in line or "respawn" in line.lower() for line in server.drain()
        )
        assert server.terminate() == 0


def signals_ignored(pid: int) -> int:
    """The SigIgn mask of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn for {pid}")


def test_ctrl_c_on_the_whole_group_stops_cleanly_and_is_no_crash(tmp_path: Path) -> None:
    """Ctrl-C signals the terminal's process group, workers included; the workers leave it to
    their supervisor, so none exits first and is mistaken for a crash to respawn."""
    KeyRing(DirectoryStore(tmp_path), Policy()).init(["ES256"])
    for _ in range(3):
        with ServerProcess(serve_argv(tmp_path, "--workers", "2")) as server:
            workers = worker_pids(server.base_url, tries=40)
            assert workers
            for pid in workers:
                assert signals_ignored(pid) & (1 << (signal.SIGINT - 1))
            assert not signals_ignored(server.proc.pid) & (1 << (signal.SIGINT - 1))
            os.killpg(server.proc.pid, signal.SIGINT)
            assert server.proc.wait(timeout=30) == 0
            server.returncode = 0
            lines = server.drain()
            assert not [line for line in lines if "Unexpected exit" in line or "Respawning" in line]


def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL (or the OOM killer) leaves a supervisor no chance to stop its workers: they
    notice within a reload interval and drain, rather than serve on unsupervised."""
    KeyRing(DirectoryStore(tmp_path), Policy()).init(["ES256"])
    argv = serve_argv(tmp_path, "--workers", "2", "--reload-interval", "200ms")
    with ServerProcess(argv) as server:
        pids = worker_pids(server.base_url)
        assert len(pids) == 2
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        alive = set(pids)
        try:
            while alive and time.monotonic() < deadline:
                alive = {pid for pid in alive if _running(pid)}
                time.sleep(0.1)
        finally:
            for pid in alive:  # never leave them behind, even when the test fails
                os.kill(pid, signal.SIGKILL)
        assert not alive, f"workers {alive} outlived their supervisor"
        with pytest.raises(httpx.TransportError):
            httpx.get(server.base_url + "/healthz", timeout=2)
        gone = [e for e in server.events("supervisor_gone") if e["pid"] in pids]
        assert {e["pid"] for e in gone} == pids


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it has exited)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
