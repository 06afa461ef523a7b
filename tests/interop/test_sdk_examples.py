"""The SDK tarballs (`make sdk`), and the documentation's examples run verbatim with them.

Each example is copied from sdk/examples (the documentation's files, byte for byte) into a
scratch folder, its SDK tarball extracted into `third_party/` as a user would, and its own
commands run against a real server: `pip install -r requirements.txt && python main.py` in a
fresh virtual environment, `go mod tidy && go run .`, `npm install && npx tsx index.ts`. Each
must print every key id the server publishes.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

import tarballs as sdk_tarballs
from tests.conftest import REPO
from tests.integration.serverproc import ServerProcess, sign_token

from .peer import Peer
from .readme import snippets

pytestmark = pytest.mark.integration
EXAMPLES = REPO / "sdk" / "examples"
# Ours beside the documentation's files: the lock files that pin what the examples' tests
# install (the documentation ships none; a user resolves them with `go mod tidy`/`npm install`).
LOCKS = {"go": "go.sum", "typescript": "package-lock.json"}
DOCUMENTATION = REPO.parent / "shared" / "seed_examples"  # beside a checkout, when present
API_KEY = "sk-agentrouter-example-key"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    return {language: sdk_tarballs.build(language, out) for language in sdk_tarballs.LANGUAGES}


def served_kids(server: ServerProcess) -> list[str]:
    document = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
    return [key["kid"] for key in document["keys"]]


def example(language: str, tarball: Path, tmp_path: Path) -> Path:
    """The example's folder as a user has it: its files, and the SDK under third_party/."""
    folder = tmp_path / "example"
    shutil.copytree(EXAMPLES / language, folder)
    third_party = folder / "third_party"
    third_party.mkdir()
    with tarfile.open(tarball) as archive:
        archive.extractall(third_party, filter="data")
    return folder


def shell(command: str, folder: Path, server: ServerProcess | str, **env: str) -> str:
    """Run `command` as the example's README says, with the user's two variables set (the
    base URL: `server`'s, or `server` itself)."""
    environment = {
        **os.environ,
        "AGENTROUTER_BASE_URL": server if isinstance(server, str) else server.base_url,
        "AGENTROUTER_API_KEY": API_KEY,
        **env,
    }
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], cwd=folder, env=environment,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stderr}"
    return result.stdout


def test_the_examples_are_the_documentations() -> None:
    if not DOCUMENTATION.is_dir():
        pytest.skip(f"the documentation's copy is not beside this checkout ({DOCUMENTATION})")
    compared = filecmp.dircmp(EXAMPLES, DOCUMENTATION, ignore=["README.md"])
    assert compared.left_only == compared.right_only == []
    for language in ("go", "python", "typescript"):
        names = sorted(p.name for p in (DOCUMENTATION / language).iterdir())
        for name in names:
            assert (EXAMPLES / language / name).read_bytes() == (
                DOCUMENTATION / language / name
            ).read_bytes(), f"{language}/{name}"
        ours = {p.name for p in (EXAMPLES / language).iterdir()} - {LOCKS.get(language)}
        assert sorted(ours) == names


README_EXAMPLES = {
    "example-python": "python/main.py",
    "example-python-requirements": "python/requirements.txt",
    "example-go": "go/main.go",
    "example-go-mod": "go/go.mod",
    "example-typescript": "typescript/index.ts",
    "example-typescript-package": "typescript/package.json",
}


def test_the_readme_shows_the_examples_unchanged() -> None:
    shown = snippets()
    for name, path in README_EXAMPLES.items():
        assert shown[name] + "\n" == (EXAMPLES / path).read_text(), name


def test_each_tarball_extracts_into_its_stem_and_holds_only_the_sdk(
    built: dict[str, Path],
) -> None:
    version = (REPO / "sdk" / "VERSION").read_text().strip()
    required = {
        "python": {"pyproject.toml", "tars/auth/v1/auth_pb2.py", "agentrouter_sdk/_client.py"},
        "go": {"go.mod", "go.sum", "client.go", "genapi/api/tars/auth/v1/auth.pb.go"},
        "typescript": {
            "package.json", "dist/index.js", "dist/index.d.ts",
            "dist/gen/tars/auth/v1/auth_pb.js", "dist/gen/tars/auth/v1/auth_pb.d.ts",
        },
    }  # fmt: skip
    for language, tarball in built.items():
        stem = f"agentrouter-{language}-{version}"
        assert tarball.name == f"{stem}.tar.gz"
        with tarfile.open(tarball) as archive:
            names = archive.getnames()
        assert all(name.startswith(f"{stem}/") for name in names)
        inside = {name.removeprefix(f"{stem}/") for name in names}
        assert required[language] <= inside, language
        unwanted = ("_test.go", ".test.ts", "__pycache__", "node_modules", ".egg-info", "src/")
        assert not [name for name in inside if any(part in name for part in unwanted)]


def test_the_tarballs_are_reproducible(built: dict[str, Path], tmp_path: Path) -> None:
    again = sdk_tarballs.build("python", tmp_path)
    assert again.read_bytes() == built["python"].read_bytes()


def test_the_python_example(
    server: ServerProcess, peer: Peer, built: dict[str, Path], keys_dir: Path, tmp_path: Path
) -> None:
    folder = example("python", built["python"], tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bin_dir = venv / "bin"
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    printed = shell(
        "python -m pip install --quiet --upgrade pip"
        " && pip install --quiet -r requirements.txt && python main.py",
        folder, server, PATH=path, VIRTUAL_ENV=str(venv), PIP_DISABLE_PIP_VERSION_CHECK="1",
    )  # fmt: skip
    assert not printed.startswith("Error:"), printed
    for kid in served_kids(server):
        assert f'kid: "{kid}"' in printed
    (folder / "errors.py").write_text(snippets()["python-sdk-errors"])
    failed = shell("python errors.py", folder, f"{peer.url}/fail/unavailable", PATH=path)
    assert failed == "unavailable forced unavailable\n"
    # The verifying snippet, with the SDK and its PyJWT as the tarball installed them.
    (folder / "verify.py").write_text(snippets()["python-sdk-verify"])
    claims = {"sub": "svc-7", "aud": "api"}
    token = sign_token(keys_dir, "ES256", claims, "--issuer", "https://auth.example.com")
    assert shell("python verify.py", folder, server, PATH=path, TOKEN=token) == "svc-7\n"
    installed = shell("pip list --format=freeze", folder, server, PATH=path).lower()
    assert "agentrouter-sdk==" in installed
    assert "pyjwt==" in installed
    assert "cryptography==" in installed
    for server_only in ("grpcio", "granian", "jwcrypto", "agentrouter-auth"):
        assert f"{server_only}==" not in installed


def test_the_go_example(
    server: ServerProcess, peer: Peer, built: dict[str, Path], tmp_path: Path
) -> None:
    folder = example("go", built["go"], tmp_path)
    printed = shell("go mod tidy && go run .", folder, server)
    for kid in served_kids(server):
        assert f'kid:"{kid}"' in printed.replace(" ", "")
    # The committed go.sum is complete: tidy added nothing (and verified every hash in it).
    assert (folder / "go.sum").read_text() == (EXAMPLES / "go" / "go.sum").read_text()
    (folder / "errors").mkdir()
    (folder / "errors" / "main.go").write_text(snippets()["go-sdk-errors"] + "\n")
    failed = shell("go mod tidy && go run ./errors", folder, f"{peer.url}/fail/not_found")
    assert failed == "not_found forced not_found\n"


def test_the_typescript_example(
    server: ServerProcess, peer: Peer, built: dict[str, Path], tmp_path: Path
) -> None:
    folder = example("typescript", built["typescript"], tmp_path)
    # npx asks before it fetches tsx; a terminal user answers yes, here the variable does.
    printed = shell(
        "npm install --no-audit --no-fund && npx tsx index.ts",
        folder,
        server,
        npm_config_yes="true",
    )
    for kid in served_kids(server):
        assert f"kid: '{kid}'" in printed
    # npm installed what the committed lock pins, and had nothing to add to it.
    assert _locked(folder / "package-lock.json") == _locked(
        EXAMPLES / "typescript" / LOCKS["typescript"]
    )
    (folder / "errors.ts").write_text(snippets()["ts-sdk-errors"])
    failed = shell(
        "npx tsx errors.ts", folder, f"{peer.url}/fail/unavailable", npm_config_yes="true"
    )
    assert failed == "Unavailable forced unavailable\n"


def _locked(lock: Path) -> dict[str, str | None]:
    """Each package of a package-lock.json and the version it pins."""
    packages: dict[str, dict[str, str]] = json.loads(lock.read_text())["packages"]
    return {name: entry.get("version") for name, entry in packages.items()}
