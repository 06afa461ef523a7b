"""The README's client snippets, extracted verbatim and run against a real server (the SDKs'
are run by test_sdk_examples, with their tarballs).

A snippet follows a `<!-- tested: NAME -->` marker. Only the documented loopback addresses are
replaced by the test server's; nothing else is edited, so what the README shows is what runs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.integration.serverproc import ServerProcess

from .conftest import NODE_DIR, run
from .readme import snippets

pytestmark = pytest.mark.integration
API_KEY = "sk-agentrouter-test-key"


def for_server(code: str, server: ServerProcess) -> str:
    return code.replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}").replace(
        "127.0.0.1:9090", f"127.0.0.1:{server.port}"
    )


def environment(base_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "AGENTROUTER_BASE_URL": base_url,
        "AGENTROUTER_API_KEY": API_KEY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }


def rest(server: ServerProcess) -> dict[str, list[dict[str, str]]]:
    document: dict[str, list[dict[str, str]]] = httpx.get(
        f"{server.base_url}/.well-known/jwks.json", timeout=10
    ).json()
    return document


def shell(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], env=env, cwd=cwd, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip


def workspace(tmp_path: Path) -> Path:
    """A scratch directory that looks like the repository root to the snippets."""
    for name in (".venv", "proto", "buf.yaml", ".build"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def test_every_documented_client_is_tested() -> None:
    sdk_snippets = {  # run by test_sdk_examples with the SDK tarballs
        "example-python-requirements", "example-python", "python-sdk-errors", "example-go-mod",
        "example-go", "go-sdk-errors", "example-typescript-package", "example-typescript",
        "ts-sdk-errors",
    }  # fmt: skip
    verify_snippets = {  # run by each SDK's driver on a token from `token sign`
        "go-sdk-verify", "python-sdk-verify", "ts-sdk-verify",
    }  # fmt: skip
    assert set(snippets()) == {
        "curl", "curl-connect", "tare", "buf-curl", "node", "python-connect", "python-grpc",
        *sdk_snippets, *verify_snippets,
    }  # fmt: skip


def test_curl(server: ServerProcess, tmp_path: Path) -> None:
    result = shell(snippets()["curl"], environment(server.base_url), tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == rest(server)


def test_connect_with_curl(server: ServerProcess, tmp_path: Path) -> None:
    result = shell(snippets()["curl-connect"], environment(server.base_url), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 2 * httpx.get(f"{server.base_url}/.well-known/jwks.json").text


def test_tare(server: ServerProcess, tmp_path: Path) -> None:
    result = shell(snippets()["tare"], environment(server.base_url), tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == rest(server)


@pytest.mark.parametrize(
    ("base_url", "message"),
    [
        ("http://127.0.0.1:{closed}", "tare: error: unavailable: "),
        ("{server}/not-agentrouter", "tare: error: "),
        ("not-a-url", "tare: error: base_url must be an http:// or https:// URL"),
    ],
)
def test_tare_errors_are_one_line(
    server: ServerProcess, tmp_path: Path, base_url: str, message: str
) -> None:
    url = base_url.format(closed=closed_port(), server=server.base_url)
    result = shell(snippets()["tare"], environment(url), tmp_path)
    assert result.returncode != 0
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_buf_curl(server: ServerProcess, tmp_path: Path) -> None:
    result = shell(
        for_server(snippets()["buf-curl"], server), os.environ.copy(), workspace(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    decoder, position, answers = json.JSONDecoder(), 0, []
    text = result.stdout
    while (position := _skip_space(text, position)) < len(text) and text[position] == "{":
        answer, position = decoder.raw_decode(text, position)
        answers.append(answer)
    assert answers == [rest(server)] * 3
    assert "agentrouter.auth.v1.AuthService/GetJWKS" in text[position:].split()


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def test_node(server: ServerProcess, image: Path, tmp_path: Path) -> None:
    shutil.copy(image, tmp_path / "auth.binpb")
    script = NODE_DIR / f".readme-{uuid.uuid4().hex}.mjs"  # beside node_modules, git-ignored
    script.write_text(snippets()["node"])
    try:
        result = run(["node", str(script)], cwd=tmp_path, env=environment(server.base_url))
    finally:
        script.unlink()
    assert json.loads(result.stdout) == rest(server)


@pytest.mark.parametrize("name", ["python-connect", "python-grpc"])
def test_python_without_the_sdk(server: ServerProcess, tmp_path: Path, name: str) -> None:
    program = tmp_path / "client.py"
    program.write_text(for_server(snippets()[name], server))
    result = run([sys.executable, str(program)])
    assert int(result.stdout) == len(rest(server)["keys"])


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
