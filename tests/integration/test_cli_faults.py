"""Every command against every damaged store: one line on stderr and a non-zero exit, never a
traceback; a store a command cannot write stays as it was."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.directory import MANIFEST, DirectoryStore
from agentrouter_auth.keys.store import Entry, State

from .serverproc import AGENTROUTER_AUTH

pytestmark = pytest.mark.integration
NOBODY = 65534


class Mounts:
    """Real mounts made for a test (root only; a test that needs one is skipped without)."""

    def __init__(self) -> None:
        self.made: list[Path] = []

    def run(self, *argv: str) -> None:
        result = subprocess.run(["mount", *argv], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(f"cannot mount here ({' '.join(argv)}): {result.stderr.strip()}")

    def tmpfs(self, target: Path, size: str) -> None:
        target.mkdir(parents=True)
        self.run("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(target))
        self.made.append(target)

    def read_only_bind(self, source: Path, target: Path) -> None:
        target.mkdir(parents=True)
        self.run("--bind", str(source), str(target))
        self.made.append(target)
        self.run("-o", "remount,ro,bind", str(target))

    def undo(self) -> None:
        for target in reversed(self.made):
            subprocess.run(["umount", str(target)], check=True)


@pytest.fixture
def mounts() -> Iterator[Mounts]:
    made = Mounts()
    yield made
    made.undo()


def seed(path: Path, key: jwk.JWK) -> Path:
    """A store whose only key is `key`, active."""
    store = DirectoryStore(path)
    with store.transaction() as tx:
        tx.add(key, Entry(key["kid"], key["alg"], State.ACTIVE, 1_000_000, activated=1_000_000))
    return path


def first(keys: list[jwk.JWK], alg: str) -> jwk.JWK:
    return next(k for k in keys if k["alg"] == alg)


def fill(directory: Path) -> None:
    """Write zeros into `directory` until its filesystem is full."""
    with (directory / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    probe = directory / "probe"
    with pytest.raises(OSError, match="No space left"), probe.open("wb") as handle:
        handle.write(b"x" * 4096)
        handle.flush()
    probe.unlink()


Fault = Callable[[Path, list[jwk.JWK], Mounts], Path]


def missing_manifest(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
    path = seed(tmp / "keys", first(keys, "ES256"))
    (path / MANIFEST).unlink()
    return path


def corrupt_manifest(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
    path = seed(tmp / "keys", first(keys, "ES256"))
    (path / MANIFEST).write_text('{"format": 1, "keys": [')
    return path


def private_half_of_another_key(alg: str) -> Fault:
    def make(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
        mine, other = [k for k in keys if k["alg"] == alg]
        path = seed(tmp / "keys", mine)
        key_file = path / f"{mine['kid']}.jwk.json"
        members = json.loads(key_file.read_text())
        public = set(json.loads(other.export_public()))
        members.update({m: v for m, v in json.loads(other.export()).items() if m not in public})
        key_file.write_text(json.dumps(members))
        return path

    return make


def world_writable_directory(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
    path = seed(tmp / "keys", first(keys, "ES256"))
    path.chmod(0o777)
    return path


def foreign_owner(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    path = seed(tmp / "keys", first(keys, "ES256"))
    os.chown(path, NOBODY, -1)
    return path


def group_writable_key_file(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
    path = seed(tmp / "keys", first(keys, "ES256"))
    (path / f"{first(keys, 'ES256')['kid']}.jwk.json").chmod(0o620)
    return path


def unreadable_key_file(tmp: Path, keys: list[jwk.JWK], _: Mounts) -> Path:
    """Root reads any mode, so the key file is made a directory instead."""
    path = seed(tmp / "keys", first(keys, "ES256"))
    key_file = path / f"{first(keys, 'ES256')['kid']}.jwk.json"
    key_file.unlink()
    key_file.mkdir(mode=0o700)
    return path


def not_a_directory(tmp: Path, _keys: list[jwk.JWK], _: Mounts) -> Path:
    path = tmp / "keys"
    path.write_text("a file where the key directory should be\n")
    return path


def full_disk(tmp: Path, keys: list[jwk.JWK], mounts: Mounts) -> Path:
    mounts.tmpfs(tmp / "fs", "256k")
    path = seed(tmp / "fs" / "keys", first(keys, "ES256"))
    fill(tmp / "fs")
    return path


def read_only_mount(tmp: Path, keys: list[jwk.JWK], mounts: Mounts) -> Path:
    source = seed(tmp / "source", first(keys, "ES256"))
    mounts.read_only_bind(source, tmp / "mount")
    return tmp / "mount"


FAULTS: dict[str, Fault] = {
    "missing-manifest": missing_manifest,
    "corrupt-manifest": corrupt_manifest,
    "private-half-RS256": private_half_of_another_key("RS256"),
    "private-half-ES256": private_half_of_another_key("ES256"),
    "private-half-EdDSA": private_half_of_another_key("EdDSA"),
    "world-writable-directory": world_writable_directory,
    "foreign-owner": foreign_owner,
    "group-writable-key-file": group_writable_key_file,
    "unreadable-key-file": unreadable_key_file,
    "not-a-directory": not_a_directory,
    "full-disk": full_disk,
    "read-only-mount": read_only_mount,
}
# A full disk or a read-only mount can still be read: these commands work there, as they
# should (`prune` has nothing to prune, so it writes nothing). `serve` would serve.
WORKS = {
    "full-disk": {"keys list", "token sign", "keys prune", "serve"},
    "read-only-mount": {"keys list", "token sign", "serve"},
}
COMMANDS: dict[str, list[str]] = {
    "keys init": ["keys", "init", "--alg", "EdDSA", "--alg", "ES256"],
    "keys rotate": ["keys", "rotate"],
    "keys list": ["keys", "list"],
    "keys import": ["keys", "import", "{foreign}"],
    "keys prune": ["keys", "prune"],
    "keys remove": ["keys", "remove", "--force", "--", "{kid}"],
    "token sign": ["token", "sign", "--claims", "{}"],
    "serve": ["serve", "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"],
}


def _states(path: Path) -> dict[str, str] | str:
    try:
        return {k.kid: k.entry.state.value for k in DirectoryStore(path).read().keys}
    except ValueError as err:
        return str(err)


@pytest.mark.parametrize(
    ("fault", "command"),
    [
        (fault, command)
        for fault in sorted(FAULTS)
        for command in sorted(COMMANDS)
        if not (command == "serve" and command in WORKS.get(fault, set()))  # it would serve
    ],
)
def test_every_command_fails_in_one_line_on_a_damaged_store(
    tmp_path: Path, key_pool: list[jwk.JWK], mounts: Mounts, fault: str, command: str
) -> None:
    works = command in WORKS.get(fault, set())
    keys_dir = FAULTS[fault](tmp_path, key_pool, mounts)
    foreign = tmp_path / "foreign.json"
    other = jwk.JWK.generate(kty="OKP", crv="Ed25519")  # made now, never committed
    foreign.write_text(other.export_public())
    fill_in = {"{foreign}": str(foreign), "{kid}": first(key_pool, "ES256")["kid"]}
    argv = [fill_in.get(part, part) for part in COMMANDS[command]]
    before = _states(keys_dir)
    files_before = sorted(p.name for p in keys_dir.iterdir()) if keys_dir.is_dir() else None

    result = subprocess.run(
        [*AGENTROUTER_AUTH, *argv, "--keys-dir", str(keys_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert "Traceback" not in result.stderr
    if works:
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("agentrouter-auth: error: ")
    assert len(lines[0]) > len("agentrouter-auth: error: ") + 10
    assert _states(keys_dir) == before  # a refused change changes nothing
    if files_before is not None:
        assert sorted(p.name for p in keys_dir.iterdir()) == files_before


def test_rotate_on_a_full_disk_leaves_the_old_store(
    tmp_path: Path, key_pool: list[jwk.JWK], mounts: Mounts
) -> None:
    """A real full filesystem (a small tmpfs), not an injected error."""
    keys_dir = full_disk(tmp_path, key_pool, mounts)
    before = _states(keys_dir)
    result = subprocess.run(
        [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(keys_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.endswith(": cannot write: No space left on device"), line
    assert _states(keys_dir) == before
    (tmp_path / "fs" / "filler").unlink()  # space again: the next transaction cleans up
    subprocess.run(
        [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(keys_dir)], check=True, timeout=60
    )
    after = _states(keys_dir)
    assert isinstance(after, dict)
    assert sorted(after.values()) == ["active", "pending"]
    names = sorted(p.name for p in keys_dir.iterdir())
    assert names == sorted([MANIFEST, ".lock", *(f"{kid}.jwk.json" for kid in after)])


def test_a_store_copied_without_its_lock_reads_on_a_read_only_mount(
    tmp_path: Path, key_pool: list[jwk.JWK], mounts: Mounts
) -> None:
    """A Secret holds no `.lock`: reading works, a transaction fails in one line."""
    source = seed(tmp_path / "source", first(key_pool, "EdDSA"))
    (source / ".lock").unlink()
    shutil.copytree(source, tmp_path / "copy")
    mounts.read_only_bind(tmp_path / "copy", tmp_path / "mount")
    keys_dir = str(tmp_path / "mount")
    listed = subprocess.run(
        [*AGENTROUTER_AUTH, "keys", "list", "--json", "--keys-dir", keys_dir],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert len(json.loads(listed.stdout)["keys"]) == 1
    rotate = subprocess.run(
        [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", keys_dir],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rotate.returncode == 1
    assert rotate.stderr.strip() == (
        f"agentrouter-auth: error: {keys_dir}: cannot lock the key store: [Errno 30] "
        f"Read-only file system: '{keys_dir}/.lock'"
    )
