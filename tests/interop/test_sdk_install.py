"""The SDK installs on its own (`pip install ./gen ./sdk/python`) and runs the seed example."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.serverproc import ServerProcess

from .test_documented_clients import SEED_EXAMPLE, environment

pytestmark = pytest.mark.integration


def test_sdk_installs_without_the_server(server: ServerProcess, tmp_path: Path) -> None:
    sources = tmp_path / "src"  # copies: building in place would leave build/ in the checkout
    shutil.copytree(
        REPO / "gen", sources / "gen", ignore=shutil.ignore_patterns("build", "*.egg-info")
    )
    shutil.copytree(
        REPO / "sdk" / "python",
        sources / "sdk",
        ignore=shutil.ignore_patterns("build", "*.egg-info"),
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-c", str(REPO / "constraints.txt"), str(sources / "gen"), str(sources / "sdk")],
        check=True, timeout=600, capture_output=True,
    )  # fmt: skip
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], check=True, capture_output=True, text=True
    ).stdout.lower()
    assert "agentrouter-sdk==0.1.0" in installed
    assert "agentrouter-auth==" not in installed
    assert "granian" not in installed
    assert "jwcrypto" not in installed
    program = tmp_path / "seed.py"
    program.write_text(SEED_EXAMPLE)
    env = environment(server.base_url)
    env["PATH"] = f"{venv / 'bin'}:{env['PATH']}"
    result = subprocess.run(
        [python, str(program)], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "keys {" in result.stdout
    tare = subprocess.run(
        [str(venv / "bin" / "tare"), "api", "auth", "jwks", "get"], env=env, capture_output=True,
        text=True, timeout=60, check=True,
    )  # fmt: skip
    assert '"keys"' in tare.stdout
