"""A running server follows its key store: CLI changes, bad files, automatic rotation."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jwcrypto import jwk
from prometheus_client.parser import text_string_to_metric_families

from agentrouter.auth.v1 import auth_pb2, auth_pb2_grpc
from agentrouter_auth.grpc.health import KEYRING_HEALTH_NAME
from agentrouter_auth.keys.directory import MANIFEST

from .serverproc import AGENTROUTER_AUTH, ServerProcess, eventually
from .serverproc import serve_argv as base_serve_argv

pytestmark = pytest.mark.integration
# A policy compressed into seconds so a whole lifecycle fits in a test.
FAST_POLICY = [
    "--rotation-period", "4s", "--publish-ahead", "2s", "--retain-after", "2s",
    "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "1s",
    "--stale-while-revalidate", "0s",
]  # fmt: skip


def kids(port: int) -> set[str]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = auth_pb2_grpc.AuthServiceStub(channel).GetJWKS(
            auth_pb2.GetJWKSRequest(), timeout=10
        )
    return {key.kid for key in response.keys}


def keyring_health(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=KEYRING_HEALTH_NAME)
        return int(stub.Check(request, timeout=10).status)  # type: ignore[attr-defined]


def serve_argv(keys_dir: Path, *extra: str) -> list[str]:
    return base_serve_argv(keys_dir, "--reload-interval", "200ms", *extra)


def test_cli_rotation_and_bad_files_reach_a_running_server(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off")) as server:
        before = kids(server.port)
        subprocess.run(
            [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(keys_dir)], check=True
        )
        after = eventually(lambda: kids(server.port), lambda k: len(k) == 2)
        assert before < after

        (pending,) = after - before
        bad = keys_dir / f"{pending}.jwk.json"
        original = bad.read_bytes()
        bad.write_text('{"kty": "EC", "crv": "P-256"')  # truncated by hand
        assert eventually(lambda: keyring_health(server.port), lambda s: s != 1) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert kids(server.port) == after  # the last good set is still served
        bad.write_bytes(original)
        assert eventually(lambda: keyring_health(server.port), lambda s: s == 1) == 1
        assert kids(server.port) == after
        assert server.terminate(signal.SIGTERM) == 0
    (error,) = server.events("key_set_reload_failed")
    assert error["path"] == str(bad)
    assert "not a valid JWK" in error["reason"]


@pytest.mark.parametrize("rotation", ["off", "auto"])
@pytest.mark.slow
def test_a_key_file_the_manifest_does_not_list_is_never_published(
    tmp_path: Path, rotation: str
) -> None:
    """Anyone who can drop `<thumbprint>.jwk.json` beside the manifest must not get a key
    trusted: the file is reported and ignored, and the next transaction removes it. A server
    with nothing due (even with --rotation auto) does not write the store to remove it."""
    keys_dir = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    intruder = jwk.JWK.generate(kty="EC", crv="P-256")  # made now, never committed
    intruder.update(kid=intruder.thumbprint(), alg="ES256", use="sig")
    dropped = keys_dir / f"{intruder['kid']}.jwk.json"
    with ServerProcess(serve_argv(keys_dir, "--rotation", rotation)) as server:
        served = kids(server.port)
        dropped.write_text(intruder.export_public())
        notes = eventually(lambda: server.events("key_store_note"), bool)
        assert str(dropped) in notes[0]["message"]
        assert kids(server.port) == served
        assert intruder["kid"] not in kids(server.port)
        assert keyring_health(server.port) == health_pb2.HealthCheckResponse.SERVING
        assert unlisted_gauge(server) == 1
        time.sleep(1.0)  # several reload intervals with nothing due: nothing is written
        assert dropped.exists()
        assert unlisted_gauge(server) == 1
        subprocess.run(
            [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(keys_dir)], check=True
        )
        assert not dropped.exists()  # the next transaction cleaned it up
        assert len(eventually(lambda: kids(server.port), lambda k: len(k) == 2)) == 2
        assert intruder["kid"] not in kids(server.port)
        assert unlisted_gauge(server) == 0
        assert server.terminate() == 0


def unlisted_gauge(server: ServerProcess) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "agentrouter_auth_unlisted_key_files":
            return float(family.samples[0].value)
    raise AssertionError("no agentrouter_auth_unlisted_key_files gauge")


def _jwks(server: ServerProcess) -> tuple[str, bytes]:
    response = httpx.get(server.base_url + "/.well-known/jwks.json", timeout=10)
    assert response.status_code == 200
    return response.headers["etag"], response.content


def _readyz(server: ServerProcess) -> dict[str, object]:
    document: dict[str, object] = httpx.get(server.base_url + "/readyz", timeout=10).json()
    return document


def _files(directory: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry of `directory` with its inode, mtime and size: any write changes it."""
    marks = {}
    for path in directory.iterdir():
        st = path.lstat()
        marks[path.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return marks


@pytest.mark.slow
def test_a_missing_manifest_is_refused_and_nothing_is_rewritten(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    init = [*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir), "--alg", "ES256",
            "--alg", "EdDSA"]  # fmt: skip
    subprocess.run(init, check=True)
    with ServerProcess(serve_argv(keys_dir)) as server:  # --rotation auto, nothing due
        etag, body = _jwks(server)
        unchanged = _files(keys_dir)
        time.sleep(1)  # five reload intervals with nothing due write nothing
        assert _files(keys_dir) == unchanged

        manifest = keys_dir / MANIFEST
        saved = manifest.read_bytes()
        manifest.unlink()
        assert eventually(lambda: keyring_health(server.port), lambda s: s != 1) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert _jwks(server) == (etag, body)  # the last good set, same ETag
        assert _readyz(server)["keyring"] == "error"  # still ready: the last good set serves
        without = _files(keys_dir)
        time.sleep(1)  # five more reload intervals: nothing rewritten, no manifest made up
        assert _files(keys_dir) == without
        assert not manifest.exists()

        manifest.write_bytes(saved)
        manifest.chmod(0o600)
        assert eventually(lambda: keyring_health(server.port), lambda s: s == 1) == 1
        assert _readyz(server)["keyring"] == "ok"
        assert _jwks(server) == (etag, body)
        assert server.terminate() == 0
    (error,) = server.events("key_set_reload_failed")
    assert error["path"] == str(manifest)
    assert error["reason"].startswith("missing, but the directory holds 2 key file(s)")
    assert not server.events("rotation_step")


def test_a_directory_others_can_write_is_refused_while_serving(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir)], check=True)
    with ServerProcess(serve_argv(keys_dir, "--rotation", "off")) as server:
        etag, body = _jwks(server)
        keys_dir.chmod(0o777)
        assert eventually(lambda: keyring_health(server.port), lambda s: s != 1) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert _jwks(server) == (etag, body)
        assert _readyz(server)["keyring"] == "error"
        keys_dir.chmod(0o700)
        assert eventually(lambda: keyring_health(server.port), lambda s: s == 1) == 1
        assert _readyz(server)["keyring"] == "ok"
        assert server.terminate() == 0
    (error,) = server.events("key_set_reload_failed")
    assert error["path"] == str(keys_dir)
    assert "writable by group or others (mode 0777)" in error["reason"]


@pytest.mark.slow
def test_automatic_rotation_walks_the_lifecycle_in_one_server(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    init = [*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir), *FAST_POLICY]
    subprocess.run(init, check=True)
    with ServerProcess(serve_argv(keys_dir, *FAST_POLICY)) as server:
        (first,) = kids(server.port)
        with_successor = eventually(lambda: kids(server.port), lambda k: len(k) == 2)
        (second,) = with_successor - {first}
        without_first = eventually(lambda: kids(server.port), lambda k: first not in k, within=15)
        assert second in without_first
        server.terminate()
    steps = {(e["kid"], e["from"], e["to"]) for e in server.events("rotation_step")}
    assert {
        (second, "new", "pending"),
        (second, "pending", "active"),
        (first, "active", "retired"),
        (first, "retired", "deleted"),
    } <= steps


@pytest.mark.slow
def test_two_servers_on_one_directory_rotate_once(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    init = [*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(keys_dir), *FAST_POLICY]
    subprocess.run(init, check=True)
    with (
        ServerProcess(serve_argv(keys_dir, *FAST_POLICY)) as one,
        ServerProcess(serve_argv(keys_dir, *FAST_POLICY)) as two,
    ):
        deadline = time.monotonic() + 9
        seen: set[str] = set()
        while time.monotonic() < deadline:
            manifest = json.loads((keys_dir / MANIFEST).read_text())
            states = [entry["state"] for entry in manifest["keys"]]
            seen.update(entry["kid"] for entry in manifest["keys"])
            assert states.count("active") == 1
            assert states.count("pending") <= 1
            time.sleep(0.05)
        one.terminate()
        two.terminate()
    applied = [event for s in (one, two) for event in s.events("rotation_step")]
    assert {event["pid"] for event in applied} <= {one.proc.pid, two.proc.pid} | {
        event["pid"] for s in (one, two) for event in s.events("listening")
    }
    created = [event["kid"] for event in applied if event["to"] == "pending"]
    promoted = [event["kid"] for event in applied if event["to"] == "active"]
    assert len(created) >= 2  # the policy rotated more than once in 9 s
    assert len(created) == len(set(created))  # each step was taken by exactly one process
    assert len(promoted) == len(set(promoted)) >= 1
    final = {entry["kid"] for entry in json.loads((keys_dir / MANIFEST).read_text())["keys"]}
    files = {path.name.removesuffix(".jwk.json") for path in keys_dir.glob("*.jwk.json")}
    assert files == final  # no key file a lost race left behind
    assert set(created) <= seen | final  # every key created made it into the manifest


@pytest.mark.slow
def test_a_kubernetes_secret_updated_in_place_is_picked_up(tmp_path: Path) -> None:
    """A Secret volume holds `..data -> ..<timestamp>/` and one symlink per file through
    `..data`; kubelet updates it by swapping `..data` atomically. The server must follow."""
    source = tmp_path / "issuer"
    subprocess.run([*AGENTROUTER_AUTH, "keys", "init", "--keys-dir", str(source)], check=True)
    mount = tmp_path / "secret"
    mount.mkdir()

    def publish(version: str) -> None:
        snapshot = mount / f"..{version}"
        snapshot.mkdir()
        for path in source.iterdir():
            if path.name != ".lock":
                (snapshot / path.name).write_bytes(path.read_bytes())
                (snapshot / path.name).chmod(0o400)
        staging = mount / "..data_tmp"
        staging.symlink_to(snapshot.name)
        staging.replace(mount / "..data")  # the atomic swap kubelet makes
        for path in snapshot.iterdir():
            link = mount / path.name
            if not link.is_symlink():
                link.symlink_to(f"..data/{path.name}")

    def tree() -> dict[str, tuple[int, int, int]]:
        return {f"{d.name}/{name}": mark for d in (mount, *mount.glob("..2*"))
                for name, mark in _files(d).items()}  # fmt: skip

    publish("2026_11_27_01")
    # --rotation off, as README says to serve a Secret: with auto, the server opens the store's
    # lock at start to check it can rotate (a real Secret is a read-only mount, so it cannot).
    with ServerProcess(serve_argv(mount, "--rotation", "off")) as server:
        (first,) = kids(server.port)
        subprocess.run([*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(source)], check=True)
        publish("2026_11_27_02")
        both = eventually(lambda: kids(server.port), lambda k: len(k) == 2)
        assert first in both
        assert keyring_health(server.port) == health_pb2.HealthCheckResponse.SERVING

        # a version without its manifest (a Secret edited by hand) is refused, not rewritten
        (source / MANIFEST).rename(tmp_path / MANIFEST)
        publish("2026_11_27_03")
        assert eventually(lambda: keyring_health(server.port), lambda s: s != 1) == (
            health_pb2.HealthCheckResponse.NOT_SERVING
        )
        assert kids(server.port) == both
        (tmp_path / MANIFEST).rename(source / MANIFEST)
        publish("2026_11_27_04")
        assert eventually(lambda: keyring_health(server.port), lambda s: s == 1) == 1
        written = tree()
        assert not [name for name in written if name.endswith((".lock", ".tmp"))]
        time.sleep(1)
        assert tree() == written  # the server never wrote into the Secret
        assert server.terminate() == 0
    (error,) = server.events("key_set_reload_failed")
    assert error["path"] == str(mount / MANIFEST)
