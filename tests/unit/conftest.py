"""Fixtures of the unit tests: the transcoder's test-only service, compiled once per run, a
worker's whole HTTP app, and a way to call an ASGI app in-process."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from grpc_tools import protoc

import contract
from agentrouter.auth.v1 import auth_pb2
from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.dispatch import PROTOCOLS
from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.rpc import python_name
from agentrouter_auth.runtime import Runtime
from agentrouter_auth.status import RpcError
from tests.support.config import worker_config

PROTOS = Path(__file__).resolve().parent.parent / "protos"


@pytest.fixture(scope="session")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """tests/protos/transcodetest/v1/library.proto (a service that uses the whole
    google.api.http grammar), compiled now with the same protoc and googleapis as the
    contract."""
    out = tmp_path_factory.mktemp("library_gen")
    well_known = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "protoc",
            f"--proto_path={PROTOS}",
            f"--proto_path={contract.googleapis_root()}",
            f"--proto_path={well_known}",
            f"--python_out={out}",
            str(PROTOS / "transcodetest/v1/library.proto"),
        ]
    )
    assert status == 0
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("transcodetest.v1.library_pb2")
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="session")
def http_app(tmp_path_factory: pytest.TempPathFactory) -> HttpApp:
    """The whole HTTP app of a worker (not started: no gRPC listener), on a real key ring."""
    keys = tmp_path_factory.mktemp("http_app") / "keys"
    ring = KeyRing(DirectoryStore(keys), Policy())
    ring.init(["ES256", "EdDSA"])
    ring.load()
    return HttpApp(Runtime(worker_config(str(keys), ring.policy), ring, PROTOCOLS))


Call = Callable[..., httpx.Response]


@pytest.fixture(scope="session")
def call() -> Call:
    """`call(app, method, url, **httpx_kwargs)`: one request to an ASGI app, in-process."""

    def call(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(go())

    return call


class StubServicer:
    """An AuthService servicer whose every RPC answers `answer`, or raises `error`."""

    SERVICE = auth_pb2.DESCRIPTOR.services_by_name["AuthService"]
    RPCS = frozenset(python_name(method.name) for method in SERVICE.methods)

    def __init__(self, answer: object, error: RpcError | None = None) -> None:
        self.answer = answer
        self.error = error
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name not in StubServicer.RPCS:
            raise AttributeError(name)

        async def call(request: object) -> object:
            self.calls.append(name)
            if self.error is not None:
                raise self.error
            return self.answer

        return call


MakeServicer = Callable[..., StubServicer]


@pytest.fixture(scope="session")
def servicer() -> MakeServicer:
    """`servicer(answer, error=None)`: a servicer for testing a transport on its own."""
    return StubServicer
