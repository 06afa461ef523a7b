"""runtime: the process's gRPC listener and key-ring upkeep. It sits below the HTTP listener,
so whoever builds a Runtime hands it the HTTP listener's protocol labels."""

from __future__ import annotations

import ast
from pathlib import Path

import agentrouter_auth.runtime
from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.dispatch import PROTOCOLS
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.registry import open_store
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.runtime import Runtime
from tests.support.config import worker_config


def test_the_runtime_imports_nothing_from_the_http_listener() -> None:
    tree = ast.parse(Path(agentrouter_auth.runtime.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {name for name in imported if name.startswith("agentrouter_auth.http")}


def test_the_runtime_records_the_protocols_it_is_handed_and_native_grpc(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    config = worker_config(str(keys), Policy())
    ring = KeyRing(open_store(str(keys)), Policy())
    runtime = Runtime(config, ring, ("rest", "other"))
    assert runtime.recorder.protocols == ("rest", "other", "grpc")
    app = HttpApp(Runtime(config, ring, PROTOCOLS))  # as the app factory builds it
    assert app.runtime.recorder.protocols == (*PROTOCOLS, "grpc")
