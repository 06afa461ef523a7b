"""The gRPC listener's layout: a package mirroring `http/`, one job per module, each small;
its transport adapter knows no servicer class, and nothing in it reaches up a layer (into the
HTTP listener or the runtime that starts it)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from tests.support.layout import imports

JOBS = {"adapter", "wrapping", "recording", "budget", "guard", "resets", "health", "server"}
ABOVE = tuple(f"agentrouter_auth.{name}" for name in
              ("http", "runtime", "asgi", "cli", "connect", "transcode", "service"))  # fmt: skip


def grpc_modules() -> dict[str, Path]:
    package = importlib.import_module("agentrouter_auth.grpc")
    assert package.__file__ is not None
    assert Path(package.__file__).name == "__init__.py", "agentrouter_auth.grpc is no package"
    folder = Path(package.__file__).parent
    return {info.name: folder / f"{info.name}.py" for info in pkgutil.iter_modules([str(folder)])}


def test_the_grpc_listener_is_a_package_of_small_modules_one_job_each() -> None:
    modules = grpc_modules()
    assert set(modules) == JOBS
    folder = next(iter(modules.values())).parent
    assert not (folder.parent / "grpc_server.py").exists(), "grpc_server.py is still there"


def test_the_adapter_imports_no_servicer_class() -> None:
    adapter = grpc_modules()["adapter"]
    imported = imports(adapter, "agentrouter_auth.grpc.adapter")
    assert not {name for name in imported if name.startswith("agentrouter_auth.service")}
    assert "agentrouter_auth.rpc.bind" in imported  # the descriptor's RPCs, bound


def test_no_module_of_the_grpc_listener_reaches_up_a_layer() -> None:
    for name, path in grpc_modules().items():
        imported = imports(path, f"agentrouter_auth.grpc.{name}")
        assert not {module for module in imported if module.startswith(ABOVE)}, name
