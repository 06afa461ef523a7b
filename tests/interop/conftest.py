"""A real server with one key of every algorithm, the schema image external clients use, and
the SDKs' error-forcing peer."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import contract
from tests.integration.serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv

from .peer import Peer, running_peer

INTEROP = Path(__file__).resolve().parent
NODE_DIR = INTEROP / "node"
ALGS = ("RS256", "ES256", "EdDSA")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every interop test is `slow`: each drives a toolchain nobody here wrote (Node, Go,
    Chromium, an SDK installed from its tarball) or the SDKs' peer, against a real server;
    measured here, none takes under about 1.5 s with its set-up and tear-down."""
    for item in items:
        if INTEROP in item.path.parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="package")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("interop") / "keys"
    algs = [arg for alg in ALGS for arg in ("--alg", alg)]
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(path), *algs], check=True)
    return path


@pytest.fixture(scope="package")
def server(keys_dir: Path) -> Iterator[ServerProcess]:
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off")) as running:
        yield running
        assert running.terminate() == 0


@pytest.fixture(scope="package")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The contract as a `buf build` image (with its imports), built by the pinned buf."""
    path = tmp_path_factory.mktemp("image") / "auth.binpb"
    contract.stage_third_party()
    contract.buf(["build", contract.PROTO_DIR, "-o", str(path)])
    return path


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run an external client; fail the test with its stderr when it fails."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=120, check=False, **kwargs
    )  # type: ignore[call-overload]
    if result.returncode != 0:
        raise AssertionError(f"{argv[:3]} exited {result.returncode}:\n{result.stderr}")
    return result  # type: ignore[no-any-return]


@pytest.fixture
def peer() -> Iterator[Peer]:
    """The SDKs' error-forcing Connect peer (see peer.py), fresh for each test."""
    with running_peer() as running:
        yield running
