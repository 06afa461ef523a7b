"""The pods of deploy/kubernetes, run for real without Kubernetes: each container's command
and environment taken from the rendered manifests, the pod's paths moved into a temporary
folder. copy-secrets copies Secret volumes laid out as the kubelet lays them out for a non-root
pod with fsGroup (each file 0440 behind `..data` symlinks); the KEK check and libpq accept the
copies and not the originals; the base's init containers and server run on a real PostgreSQL
with a password role; the overlay's server serves the copied key directory (and refuses the
Secret volume itself)."""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentrouter_auth.config import ENV_PREFIX
from agentrouter_auth.keys.kek import KekError, read_kek
from tests.integration.serverproc import AGENTROUTER_AUTH, ServerProcess, serve_argv
from tests.support import PostgresServer

from . import manifests as m

pytestmark = pytest.mark.timeout(900)  # the first render may build kustomize (see manifests)

Files = dict[str, bytes]


@pytest.fixture(scope="module")
def base() -> m.Manifest:
    return m.one(m.render(m.KUSTOMIZATIONS["base"]), "Deployment")


@pytest.fixture(scope="module")
def overlay() -> m.Manifest:
    return m.one(m.render(m.KUSTOMIZATIONS["directory-secret"]), "Deployment")


def secret_volume(root: Path, files: Files) -> Path:
    """A Secret volume as the kubelet writes it for a pod with fsGroup: the files, made 0440
    whatever defaultMode says, in a timestamped directory that `..data` links to, and each
    name a link through `..data`."""
    version = root / "..2026_11_28_12_00_00.000000001"
    version.mkdir(parents=True)
    for name, data in files.items():
        (version / name).write_bytes(data)
        (version / name).chmod(0o440)
        (root / name).symlink_to(f"..data/{name}")
    (root / "..data").symlink_to(version.name)
    return root


def run_copy(
    deployment: m.Manifest, tmp_path: Path, volumes: dict[str, Files]
) -> subprocess.CompletedProcess[str]:
    """Run copy-secrets' script with its environment on `volumes` (by the name it copies them
    under), the pod's paths moved into `tmp_path`: SECRETS_DIR to etc/, RUN_DIR to run/ (an
    emptyDir under fsGroup: mode 2777)."""
    copy = m.container(deployment, m.COPY_SECRETS)
    assert copy["command"] == ["/bin/sh", "-ec"]
    assert sorted(m.copied_secrets(deployment)) == sorted(volumes)  # and where each is mounted
    etc, run = tmp_path / "etc", tmp_path / "run"
    for name, files in volumes.items():
        secret_volume(etc / name, files)
    run.mkdir()
    run.chmod(0o2777)
    script = copy["args"][0].replace(m.SECRETS_DIR, str(etc)).replace(m.RUN_DIR, str(run))
    variables = {e["name"]: e["value"] for e in copy.get("env", [])}
    return subprocess.run(
        ["/bin/sh", "-ec", script], env={"PATH": os.environ["PATH"], **variables},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def moved(path: str, tmp_path: Path) -> Path:
    """Where a path of the pod's RUN_DIR is in `tmp_path`."""
    assert path.startswith(m.RUN_DIR + "/")
    return tmp_path / "run" / path.removeprefix(m.RUN_DIR + "/")


def assert_private_copies(directory: Path, files: Files) -> None:
    assert sorted(os.listdir(directory)) == sorted(files)  # no `..data`, no links
    assert stat.S_IMODE(directory.stat().st_mode) & 0o777 == 0o700
    for name, data in files.items():
        st = (directory / name).lstat()
        assert stat.S_ISREG(st.st_mode), name
        assert stat.S_IMODE(st.st_mode) == 0o400, name
        assert st.st_uid == os.geteuid(), name
        assert (directory / name).read_bytes() == data


def test_the_kek_and_the_password_file_are_copied_private(base: m.Manifest, tmp_path: Path) -> None:
    kek = base64.b64encode(secrets.token_bytes(32)) + b"\n"
    volumes = {
        "kek": {"current": kek},
        "postgresql": {
            "url": b"postgresql://agentrouter_auth@db.example:5432/agentrouter_auth",
            "pgpass": b"db.example:5432:agentrouter_auth:agentrouter_auth:secret\n",
        },
    }
    result = run_copy(base, tmp_path, volumes)
    assert result.returncode == 0, result.stderr
    for name, files in volumes.items():
        assert_private_copies(tmp_path / "run" / name, files)
    server = m.env(m.container(base, m.SERVER))
    # The KEK check refuses the Secret's own file (group-readable) and accepts the copy.
    kek_file = moved(server["AGENTROUTER_AUTH_KEK_FILE"]["value"], tmp_path)
    assert read_kek(str(kek_file)).secret == base64.b64decode(kek)
    with pytest.raises(KekError, match="must not be readable or writable by group or others"):
        read_kek(str(tmp_path / "etc" / "kek" / "current"))
    # libpq ignores a password file its group or others can read: the copy is 0400.
    assert (
        moved(server["PGPASSFILE"]["value"], tmp_path).read_bytes()
        == (volumes["postgresql"]["pgpass"])
    )


def test_a_missing_secret_file_fails_the_copy(base: m.Manifest, tmp_path: Path) -> None:
    result = run_copy(base, tmp_path, {"kek": {}, "postgresql": {"pgpass": b"x:1:d:u:p\n"}})
    assert result.returncode != 0


def make_ring(tmp_path: Path) -> Files:
    """A key directory made by `keys init`, as its Secret would hold it."""
    ring = tmp_path / "ring"
    subprocess.run(
        [*AGENTROUTER_AUTH, "keys", "init", "--key-store", str(ring), "--alg", "ES256"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return {p.name: p.read_bytes() for p in ring.iterdir() if not p.name.startswith(".")}


def test_the_overlay_serves_the_copied_key_directory(overlay: m.Manifest, tmp_path: Path) -> None:
    files = make_ring(tmp_path)
    kids = [entry["kid"] for entry in json.loads(files["manifest.json"])["keys"]]
    assert len(files) == 2  # the manifest and the key
    # `kubectl create secret --from-file=DIR` also takes the store's `.lock`: not copied.
    result = run_copy(overlay, tmp_path, {"keys": {**files, ".lock": b""}})
    assert result.returncode == 0, result.stderr
    copied = tmp_path / "run" / "keys"
    assert_private_copies(copied, files)
    server = m.env(m.container(overlay, m.SERVER))
    assert moved(server["AGENTROUTER_AUTH_KEY_STORE"]["value"], tmp_path) == copied
    # The Secret volume itself is refused: its private key file is group-readable.
    refused = subprocess.run(
        [*AGENTROUTER_AUTH, "keys", "list", "--key-store", str(tmp_path / "etc" / "keys")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "private key is readable by group or others (mode 0440)" in refused.stderr
    # The copy is served, with the overlay's rotation setting.
    rotation = server["AGENTROUTER_AUTH_ROTATION"]["value"]
    with ServerProcess(serve_argv(copied, "--rotation", rotation)) as process:
        jwks: dict[str, Any] = httpx.get(
            f"{process.base_url}/.well-known/jwks.json", timeout=10
        ).json()
        assert process.terminate() == 0
    assert [key["kid"] for key in jwks["keys"]] == kids


def pod_environment(c: dict[str, Any], tmp_path: Path, secrets: dict[str, Files]) -> dict[str, str]:
    """The environment of container `c`: its variables, a path under RUN_DIR moved into
    `tmp_path`, a secretKeyRef read from `secrets` (by Secret name); the test's own
    AGENTROUTER_AUTH_* and PG* variables left out."""
    variables = {
        name: value for name, value in os.environ.items() if not name.startswith((ENV_PREFIX, "PG"))
    }
    for entry in c.get("env", []):
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]][ref["key"]].decode()
        else:
            value = entry["value"].replace(m.RUN_DIR, str(tmp_path / "run"))
        variables[entry["name"]] = value
    return variables


def run_init(
    deployment: m.Manifest, name: str, environment: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    c = m.container(deployment, name)
    return subprocess.run(
        [*AGENTROUTER_AUTH, *c["args"]], env=environment,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_base_pod_runs_on_postgresql(
    base: m.Manifest, postgres: PostgresServer, tmp_path: Path
) -> None:
    # The database and its role as an operator makes them: the role logs in with a password.
    role, password = f"auth_{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    postgres.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    database = postgres.create_database(f"{role}_db").rsplit("/", 1)[1]
    postgres.execute(f"ALTER DATABASE {database} OWNER TO {role}")
    url = postgres.dsn(database, user=role)  # no password: it comes from the password file
    data = {
        "agentrouter-auth-kek": {"current": base64.b64encode(secrets.token_bytes(32)) + b"\n"},
        m.POSTGRESQL_SECRET: {
            "url": url.encode(),
            "pgpass": f"127.0.0.1:{postgres.port}:{database}:{role}:{password}\n".encode(),
        },
    }
    volumes = {name: data[secret] for name, secret in m.copied_secrets(base).items()}
    try:
        copied = run_copy(base, tmp_path, volumes)
        assert copied.returncode == 0, copied.stderr
        environment = pod_environment(m.container(base, "migrate"), tmp_path, data)
        # libpq ignores the Secret's own password file (group-readable): the copy is needed.
        original = {**environment, "PGPASSFILE": str(tmp_path / "etc" / "postgresql" / "pgpass")}
        refused = run_init(base, "migrate", original)
        assert refused.returncode != 0
        assert "has group or world access" in refused.stderr, refused.stderr
        assert "no password supplied" in refused.stderr, refused.stderr
        for name in ("migrate", "keys-init"):
            result = run_init(base, name, pod_environment(m.container(base, name), tmp_path, data))
            assert result.returncode == 0, f"{name}: {result.stderr}"
        server = m.container(base, m.SERVER)
        # On loopback ports here: the pod's 0.0.0.0 listeners are not for a test machine.
        argv = [*AGENTROUTER_AUTH, *server["args"], "--http-addr", "127.0.0.1:0",
                "--grpc-addr", "127.0.0.1:0"]  # fmt: skip
        environment = pod_environment(server, tmp_path, data)
        with ServerProcess(argv, env=environment) as process:
            jwks = httpx.get(f"{process.base_url}/.well-known/jwks.json", timeout=10).json()
            assert process.terminate() == 0
        assert [key["alg"] for key in jwks["keys"]] == ["ES256"]
        # keys-init again, as the next pod runs it: the store has its key, nothing changes.
        again = run_init(base, "keys-init", environment)
        assert again.returncode == 0, again.stderr
        rows = postgres.execute("SELECT count(*) FROM agentrouter_auth.keys", dbname=database)
        assert rows == [(1,)]
    finally:
        postgres.drop_database(database)
        postgres.execute(f"DROP ROLE IF EXISTS {role}")
