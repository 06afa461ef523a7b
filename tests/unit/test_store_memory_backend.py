"""The key store seam, proven: a third backend (`tests/unit/memory_backend.py`, in memory) that
is only its module and one registry entry, an entry point in the group
`agentrouter_auth.key_stores` of a distribution installed for this module's tests (a
`.dist-info` on `sys.path`, as `pip install` would leave it). It passes the shared store suite
(every test that takes `store_factory`, imported here and run with a factory of memory stores)
and is served: the real ASGI app (`asgi.create_app`, what each `serve` worker runs) under a real
HTTP server in this process answers REST and gRPC from it.

A `serve` process cannot see this process's memory, so the app runs in-process: the same
factory, configuration from the same variables, the same lifespan that starts the gRPC
listener, with real clients over real sockets."""

from __future__ import annotations

import importlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.keys import registry
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import Entry, KeyStoreError, State
from tests.keystores import StoreFactory
from tests.support import free_port
from tests.unit import memory_backend
from tests.unit.test_ring import Clock

SHARED = ("test_store", "test_ring", "test_recorded_policy", "test_cli_keys", "test_cli_token")
LEFT_OUT = {
    # Forks processes that race one rotation step: a store in one process's memory is not
    # shared by its children, so this one is for stores other processes can reach.
    "test_processes_racing_the_rotation_step_create_one_key",
}
DISTRIBUTION = "agentrouter_auth_memory_store-0.dist-info"


@pytest.fixture(scope="module", autouse=True)
def memory_backend_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The backend's distribution, found on sys.path by `importlib.metadata` as any installed
    one is: its only tie to the project is the entry point."""
    site = tmp_path_factory.mktemp("site")
    info = site / DISTRIBUTION
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: agentrouter-auth-memory-store\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[agentrouter_auth.key_stores]\nmemory = tests.unit.memory_backend:backend\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        importlib.invalidate_caches()
        yield site
    importlib.invalidate_caches()


class MemoryStoreFactory(StoreFactory):
    """`StoreFactory` for memory stores: a name per location, content planted in memory."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.kind = "memory"
        self.tmp = tmp
        self.postgres = None
        self.kek_files = ()
        self.databases = []
        self._opened = []
        self._fresh = []
        self._migrated = False
        self.location = f"memory://{tmp}"

    def fresh(self) -> StoreFactory:
        other = MemoryStoreFactory(self.tmp / f"fresh-{len(self._fresh)}")
        self._fresh.append(other)
        return other

    def clear(self) -> None:
        memory_backend.MEMORIES.pop(self.location, None)

    def close(self) -> None:
        super().close()
        memory_backend.MEMORIES.pop(self.location, None)

    def where(self, kid: str) -> str:
        return f"key {kid}"

    def plant(self, kid: str, alg: str, content: str | dict[str, Any]) -> None:
        text = content if isinstance(content, str) else json.dumps(content)
        memory = memory_backend.MEMORIES.setdefault(self.location, memory_backend.Memory())
        entry = Entry.from_json(
            {"kid": kid, "alg": alg, "state": "published", "origin": "imported", "created": 1}
        )
        memory.records[kid] = (entry, text)
        memory.generation += 1

    def stored_text(self) -> list[str]:
        memory = memory_backend.MEMORIES.get(self.location, memory_backend.Memory())
        return [text for _, text in memory.records.values()]


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[StoreFactory]:
    """Memory stores, for the shared suite imported below."""
    factory = MemoryStoreFactory(tmp_path / "store")
    try:
        yield factory
    finally:
        factory.close()


def _shared_tests() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for name in SHARED:
        module: ModuleType = importlib.import_module(f"tests.unit.{name}")
        for test_name, test in vars(module).items():
            if (
                test_name.startswith("test_")
                and callable(test)
                and "store_factory" in inspect.signature(test).parameters
                and test_name not in LEFT_OUT
            ):
                found[test_name] = test
    return found


SHARED_TESTS = _shared_tests()
globals().update(SHARED_TESTS)  # collected here, with this module's `store_factory`


def test_the_shared_suite_is_here() -> None:
    assert len(SHARED_TESTS) >= 25, sorted(SHARED_TESTS)
    for name in ("test_refused_keys_are_named", "test_lifecycle_walks_at_the_policys_times",
                 "test_a_rotating_server_records_its_policy_and_one_with_another_takes_no_step",
                 "test_list_shows_states_times_and_the_next_step"):  # fmt: skip
        assert name in SHARED_TESTS


def test_the_project_names_no_memory_backend() -> None:
    """The backend comes from its entry point alone; without it the scheme is unknown."""
    assert "memory" not in registry.BACKENDS
    assert isinstance(registry.open_store("memory://named"), memory_backend.MemoryStore)
    with pytest.raises(KeyStoreError, match="a memory store is memory://NAME"):
        registry.check_location("memory://")


def test_an_unknown_scheme_is_still_refused() -> None:
    with pytest.raises(KeyStoreError, match="unknown key store scheme 'nosuch'"):
        registry.check_location("nosuch://x")


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KeyRing, int, int]]:
    """The worker app on a memory store, under uvicorn in a thread: (ring, HTTP, gRPC port)."""
    location = "memory://served"
    ring = KeyRing(registry.open_store(location), Policy(), clock=Clock())
    ring.init(["ES256", "EdDSA"])
    http_port, grpc_port = free_port(), free_port()
    monkeypatch.setenv("AGENTROUTER_AUTH_KEY_STORE", location)
    monkeypatch.setenv("AGENTROUTER_AUTH_GRPC_ADDR", f"127.0.0.1:{grpc_port}")
    monkeypatch.setenv("AGENTROUTER_AUTH_HTTP_ADDR", f"127.0.0.1:{http_port}")
    monkeypatch.setenv("AGENTROUTER_AUTH_AUTO_ROTATE", "off")
    config = uvicorn.Config(
        "agentrouter_auth.asgi:create_app",
        factory=True,
        host="127.0.0.1",
        port=http_port,
        lifespan="on",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(300):  # a bounded wait for the server's own "started"
            if server.started or not thread.is_alive():
                break
            thread.join(timeout=0.1)
        assert server.started, "uvicorn did not start the app"
        yield ring, http_port, grpc_port
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        memory_backend.MEMORIES.pop(location, None)


def test_the_memory_store_is_served_over_rest_and_grpc(
    served: tuple[KeyRing, int, int],
) -> None:
    ring, http_port, grpc_port = served
    kids = sorted(stored.kid for stored in ring.store.read().keys)
    assert len(kids) == 2
    assert {k.entry.state for k in ring.store.read().keys} == {State.ACTIVE}
    response = httpx.get(f"http://127.0.0.1:{http_port}/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200, response.text
    assert sorted(key["kid"] for key in response.json()["keys"]) == kids
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        answer = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(
            auth_pb2.GetJWKSRequest(), timeout=10
        )
    assert sorted(key.kid for key in answer.keys) == kids
