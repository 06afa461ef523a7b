"""A damaged or hostile key store: crashes and full disks mid-transaction, unlisted files,
private halves that belong to another key, directories others can write, reads that write."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jwcrypto import jwk

from agentrouter_auth.keys import directory, files
from agentrouter_auth.keys.directory import LOCK, MANIFEST, DirectoryStore
from agentrouter_auth.keys.material import generate_key
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import Entry, KeyStoreError, State, Transaction

T0 = 1_700_000_000
NOBODY = 65534


# -- a fault-injecting filesystem layer ----------------------------------------------------


class Crash(BaseException):
    """The process died here: nothing after it runs (no except or finally does any I/O)."""


# Every os-level write step of a transaction, in the store module's own namespace.
WRITE_STEPS = ("mkstemp", "write", "fsync", "replace", "unlink")


class Faults:
    """Counts the store's write steps and fails the `at`-th one (0-based) as `kind`:
    `enospc` raises OSError(ENOSPC) instead of the step; `crash-before` / `crash-after` raise
    `Crash` before or after the step, and every later step raises `Crash` too (a dead process
    cleans nothing up)."""

    def __init__(self, at: int = -1, kind: str = "") -> None:
        self.at, self.kind = at, kind
        self.steps: list[str] = []
        self.dead = False

    def wrap(self, name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any, **kwargs: Any) -> Any:
            if self.dead:
                raise Crash(f"{name} after the crash")
            index = len(self.steps)
            self.steps.append(name)
            if index != self.at:
                return real(*args, **kwargs)
            if self.kind == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self.kind == "crash-before":
                self.dead = True
                raise Crash(name)
            real(*args, **kwargs)
            self.dead = True
            raise Crash(name)

        return step

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Route the directory store's `os` and `tempfile` (its own module's and its file
        helpers') through this layer."""
        faulty_os = SimpleNamespace(**{name: getattr(os, name) for name in dir(os)})
        for name in ("write", "fsync", "replace", "unlink"):
            setattr(faulty_os, name, self.wrap(name, getattr(os, name)))
        faulty_tempfile = SimpleNamespace(mkstemp=self.wrap("mkstemp", tempfile.mkstemp))
        for module in (directory, files):
            monkeypatch.setattr(module, "os", faulty_os)
        monkeypatch.setattr(files, "tempfile", faulty_tempfile)


# -- scenarios: a store before a transaction, and the transaction --------------------------


@pytest.fixture(scope="module")
def fresh_keys() -> dict[str, jwk.JWK]:
    """ES256/EdDSA keys (fast to make): A, B, E are ES256; C, D, F are EdDSA."""
    algs = {"A": "ES256", "B": "ES256", "E": "ES256", "C": "EdDSA", "D": "EdDSA", "F": "EdDSA"}
    return {name: generate_key(alg) for name, alg in algs.items()}


def _entry(
    key: jwk.JWK, state: State, *, activated: int | None = None, retired: int | None = None
) -> Entry:
    return Entry(key["kid"], key["alg"], state, T0, activated=activated, retired=retired)


def _seed_step(path: Path, k: dict[str, jwk.JWK]) -> None:
    """A store in the middle of its life: A active, B pending, C retired, D active."""
    store = DirectoryStore(path)
    with store.transaction() as tx:
        tx.add(k["A"], _entry(k["A"], State.ACTIVE, activated=T0))
        tx.add(k["B"], _entry(k["B"], State.PENDING))
        tx.add(k["C"], _entry(k["C"], State.RETIRED, retired=T0))
        tx.add(k["D"], _entry(k["D"], State.ACTIVE, activated=T0))


def _step(tx: Transaction, k: dict[str, jwk.JWK]) -> None:
    """Every kind of change at once: B promoted (A retires), C deleted, E and F created."""
    tx.update(_entry(k["A"], State.RETIRED, activated=T0, retired=T0 + 1))
    tx.update(_entry(k["B"], State.ACTIVE, activated=T0 + 1))
    tx.delete(k["C"]["kid"])
    tx.add(k["E"], _entry(k["E"], State.PENDING))
    tx.add(k["F"], _entry(k["F"], State.PENDING))


def _first(tx: Transaction, k: dict[str, jwk.JWK]) -> None:
    """`keys init` on a new directory."""
    tx.add(k["A"], _entry(k["A"], State.ACTIVE, activated=T0))


SCENARIOS: dict[str, tuple[Callable[..., None] | None, Callable[..., None]]] = {
    "step": (_seed_step, _step),
    "first-init": (None, _first),
}


def _states(path: Path) -> dict[str, str]:
    return {k.kid: k.entry.state.value for k in DirectoryStore(path).read().keys}


def _expected_states(path: Path, change: Callable[..., None], k: dict[str, jwk.JWK]) -> Any:
    """The states before and after `change`, computed without writing."""
    store = DirectoryStore(path)
    tx = Transaction(store.read())
    change(tx, k)
    after = {e.kid: e.state.value for e in tx.result().entries}
    return {e.kid: e.state.value for e in tx.current.entries}, after


def _only_listed_files(path: Path) -> None:
    listed = {e["kid"] for e in json.loads((path / MANIFEST).read_text())["keys"]}
    assert sorted(p.name for p in path.iterdir()) == sorted(
        [MANIFEST, LOCK, *(f"{kid}.jwk.json" for kid in listed)]
    )


@pytest.fixture
def template(tmp_path: Path, fresh_keys: dict[str, jwk.JWK]) -> Callable[[str], Path]:
    def make(scenario: str) -> Path:
        path = tmp_path / f"template-{scenario}"
        path.mkdir(mode=0o700)
        seed = SCENARIOS[scenario][0]
        if seed is not None:
            seed(path, fresh_keys)
        return path

    return make


def _copy(template: Path, to: Path) -> Path:
    shutil.copytree(template, to, symlinks=True)
    return to


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_fault_at_any_write_leaves_the_old_state_or_the_new(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_keys: dict[str, jwk.JWK],
    template: Callable[[str], Path],
    scenario: str,
) -> None:
    change = SCENARIOS[scenario][1]
    base = template(scenario)
    old, new = _expected_states(base, change, fresh_keys)
    assert old != new

    counting = Faults()  # a clean run, to learn the transaction's write steps
    with monkeypatch.context() as patch:
        counting.install(patch)
        with DirectoryStore(_copy(base, tmp_path / "count")).transaction() as tx:
            change(tx, fresh_keys)
    assert set(counting.steps) == set(WRITE_STEPS) - ({"unlink"} if scenario != "step" else set())

    outcomes: dict[str, int] = {"old": 0, "new": 0}
    for at, step in enumerate(counting.steps):
        for kind in ("enospc", "crash-before", "crash-after"):
            path = _copy(base, tmp_path / f"run-{at}-{kind}")
            failure = _apply_with(Faults(at, kind), monkeypatch, path, change, fresh_keys)
            if kind == "enospc":  # refused with one line, or hit the cleanup after the commit
                assert failure is None or isinstance(failure, KeyStoreError), failure
                assert failure is None or ": cannot write: No space left on device" in str(failure)
                assert "\n" not in str(failure)
            else:
                assert isinstance(failure, Crash)
            where = f"{kind} at write step {at} ({step})"
            states = _states(path)  # a fresh process reading what is on disk
            assert states in (old, new), where
            outcomes["old" if states == old else "new"] += 1
            manifest = (
                json.loads((path / MANIFEST).read_text()) if (path / MANIFEST).exists() else {}
            )
            listed = {e["kid"] for e in manifest.get("keys", [])}
            assert set(states) == listed, where  # nothing published that is not listed

            with DirectoryStore(path).transaction():
                pass  # the next successful transaction, even one that changes nothing
            assert _states(path) == states, where
            if (path / MANIFEST).exists():
                _only_listed_files(path)
            else:
                assert sorted(p.name for p in path.iterdir()) == [LOCK], where
    assert outcomes["old"]  # the faults fell on both sides of the commit
    assert outcomes["new"]


def _apply_with(
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
    path: Path,
    change: Callable[..., None],
    keys: dict[str, jwk.JWK],
) -> BaseException | None:
    """Run the transaction through `faults`; return what it raised, if anything."""
    with monkeypatch.context() as patch:
        faults.install(patch)
        try:
            with DirectoryStore(path).transaction() as tx:
                change(tx, keys)
        except (Crash, KeyStoreError) as err:
            return err
    return None


# -- nothing due, nothing written; reading writes nothing ---------------------------------


def _marks(path: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in path.iterdir()}


def test_a_step_with_nothing_due_writes_nothing(tmp_path: Path) -> None:
    clock = SimpleNamespace(now=float(T0))
    ring = KeyRing(DirectoryStore(tmp_path), Policy(), clock=lambda: clock.now)
    ring.init(["ES256", "EdDSA"])
    ring.load()
    before = _marks(tmp_path)
    for hour in range(1, 6):
        clock.now = T0 + hour * 3600
        assert ring.step() == []
        assert not ring.due()
    assert _marks(tmp_path) == before  # same manifest inode and mtime, no file added
    clock.now = T0 + Policy().rotation_period
    assert ring.due()
    assert ring.step()
    assert _marks(tmp_path)[MANIFEST] != before[MANIFEST]


def test_reading_creates_no_file(tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any) -> None:
    store = seed_store(tmp_path / "keys", key_pool[2:3])
    (store.path / LOCK).unlink()
    before = _marks(store.path)
    ring = KeyRing(DirectoryStore(store.path), Policy())
    ring.load()
    ring.refresh()
    DirectoryStore(store.path).read()
    assert _marks(store.path) == before
    assert not DirectoryStore(tmp_path / "absent").read().keys
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_key_file_that_is_not_a_file_is_refused_without_blocking(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any, kind: str
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[2:3])
    path = store.key_file(key_pool[2]["kid"])
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path, 0o600)  # opening it for reading would wait for a writer for ever
    else:
        path.mkdir(mode=0o700)
    with pytest.raises(KeyStoreError, match=f"{path}: (not a regular file|unreadable: Is a dir)"):
        DirectoryStore(store.path).read()


def test_a_failed_reload_is_logged_with_where_it_failed(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[2:3])
    ring = KeyRing(DirectoryStore(store.path), Policy())
    ring.load()
    for path in store.path.glob("*.json"):
        path.unlink()  # an emptied store: the error (empty set) names no file
    with caplog.at_level(logging.ERROR):
        assert ring.refresh() is False
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "key_set_reload_failed"]
    assert record.path == str(store.path)  # type: ignore[attr-defined]


# -- a private half that belongs to another key ---------------------------------------------


def _swap_private_half(path: Path, other: jwk.JWK) -> None:
    """Keep the file's public members (and kid), take the private ones from `other`."""
    members = json.loads(path.read_text())
    public = set(json.loads(other.export_public()))
    members.update({m: v for m, v in json.loads(other.export()).items() if m not in public})
    path.write_text(json.dumps(members))


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_a_private_half_of_another_key_is_refused_naming_the_file(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any, alg: str
) -> None:
    first, second = [k for k in key_pool if k["alg"] == alg]
    store = seed_store(tmp_path / "keys", [first])
    path = store.key_file(first["kid"])
    _swap_private_half(path, second)
    with pytest.raises(KeyStoreError, match="private half does not belong") as failure:
        DirectoryStore(store.path).read()
    assert str(path) in str(failure.value)


# -- who may write the store ------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o757, 0o720, 0o1777], ids=oct)
def test_a_key_directory_others_can_write_is_refused(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any, mode: int
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[2:3])
    store.path.chmod(mode)
    with pytest.raises(KeyStoreError, match=rf"writable by group or others \(mode {mode:04o}\)"):
        DirectoryStore(store.path).read()
    empty = tmp_path / "new"
    empty.mkdir()
    empty.chmod(mode)
    with pytest.raises(KeyStoreError, match="writable by group or others"):
        KeyRing(DirectoryStore(empty), Policy()).init(["ES256"])
    assert list(empty.iterdir()) == []  # refused before the lock file is made


def test_keys_init_makes_a_private_directory(tmp_path: Path) -> None:
    KeyRing(DirectoryStore(tmp_path / "a" / "keys"), Policy()).init(["EdDSA"])
    assert (tmp_path / "a" / "keys").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "a" / "keys").iterdir()} == {0o600}


@pytest.mark.parametrize(
    ("target", "mode"), [("key", 0o620), ("key", 0o602), ("manifest", 0o666)], ids=str
)
def test_a_file_others_can_write_is_refused(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any, target: str, mode: int
) -> None:
    store = seed_store(tmp_path / "keys", key_pool[2:3])
    path = store.key_file(key_pool[2]["kid"]) if target == "key" else store.path / MANIFEST
    path.chmod(mode)
    with pytest.raises(KeyStoreError, match=rf"writable by group or others \(mode {mode:04o}\)"):
        DirectoryStore(store.path).read()


@pytest.mark.parametrize("target", ["directory", "key", "manifest"])
def test_a_store_owned_by_another_user_is_refused(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any, target: str
) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    store = seed_store(tmp_path / "keys", key_pool[2:3])
    path = {
        "directory": store.path,
        "key": store.key_file(key_pool[2]["kid"]),
        "manifest": store.path / MANIFEST,
    }[target]
    os.chown(path, NOBODY, -1)
    with pytest.raises(KeyStoreError, match=f"owned by uid {NOBODY}: only the user") as failure:
        DirectoryStore(store.path).read()
    assert str(failure.value).startswith(str(path))


def _secret_layout(mount: Path, source: Path, data_mode: int) -> None:
    """Kubernetes' Secret layout: `..data -> ..<version>/`, one link per file through it."""
    version = mount / "..2026_11_27_01"
    version.mkdir(parents=True)
    for path in source.iterdir():
        if path.name != LOCK:
            shutil.copy2(path, version / path.name)
            (mount / path.name).symlink_to(f"..data/{path.name}")
    (mount / "..data").symlink_to(version.name)
    version.chmod(data_mode)


def test_a_symlinked_store_is_checked_where_its_files_really_are(
    tmp_path: Path, key_pool: list[jwk.JWK], seed_store: Any
) -> None:
    store = seed_store(tmp_path / "source", key_pool[2:3])
    _secret_layout(tmp_path / "good", store.path, 0o755)
    assert len(DirectoryStore(tmp_path / "good").read().keys) == 1
    _secret_layout(tmp_path / "bad", store.path, 0o777)
    with pytest.raises(KeyStoreError, match="..2026_11_27_01: the directory of a key file is"):
        DirectoryStore(tmp_path / "bad").read()


@pytest.fixture
def read_only_bind() -> Iterator[Callable[[Path, Path], None]]:
    """Bind-mount a directory read-only (root and a kernel that allows it, else skip)."""
    mounted: list[Path] = []

    def bind(source: Path, target: Path) -> None:
        target.mkdir()
        for argv in (["mount", "--bind", str(source), str(target)],
                     ["mount", "-o", "remount,ro,bind", str(target)]):  # fmt: skip
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                if mounted:
                    subprocess.run(["umount", str(target)], check=False)
                pytest.skip(f"cannot make a read-only bind mount here: {result.stderr.strip()}")
            if not mounted or mounted[-1] != target:
                mounted.append(target)

    yield bind
    for target in reversed(mounted):
        subprocess.run(["umount", str(target)], check=True)


def test_a_read_only_mount_is_trusted_whatever_its_modes_and_owners(
    tmp_path: Path,
    key_pool: list[jwk.JWK],
    seed_store: Any,
    read_only_bind: Callable[[Path, Path], None],
) -> None:
    """A Kubernetes Secret volume is a read-only tmpfs whose root is mode 1777 and owned by
    root: nobody can write it, so its modes and owners do not matter."""
    store = seed_store(tmp_path / "source", key_pool[2:3])
    (store.path / LOCK).unlink()
    store.path.chmod(0o1777)
    if os.geteuid() == 0:
        for path in store.path.iterdir():
            os.chown(path, NOBODY, -1)
    read_only_bind(store.path, tmp_path / "mount")
    with pytest.raises(KeyStoreError, match="writable by group or others"):
        DirectoryStore(store.path).read()  # the same files, writable
    ring = KeyRing(DirectoryStore(tmp_path / "mount"), Policy())
    assert ring.load().kids == (key_pool[2]["kid"],)
    with pytest.raises(KeyStoreError, match="cannot lock the key store: .*Read-only file system"):
        ring.rotate()


# -- health while the ring cannot take its steps ---------------------------------------------


def _rotation_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    names = ("rotation_step_failed", "rotation_step_recovered")
    events = (getattr(record, "event", "") for record in caplog.records)
    return [event for event in events if event in names]


def test_a_full_disk_turns_the_keyring_unhealthy_until_a_step_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    policy = Policy()
    ring = KeyRing(DirectoryStore(tmp_path), policy, clock=lambda: now)
    now = T0
    ring.init(["ES256"])
    ring.load()
    now = int(T0 + policy.rotation_period - policy.publish_ahead)  # a successor is due
    assert ring.due()
    with caplog.at_level(logging.INFO, logger="agentrouter_auth.keys"):
        for _ in range(3):  # every attempt fails the same way: one log line, not three
            Faults(at=0, kind="enospc").install(monkeypatch)
            with pytest.raises(KeyStoreError, match="No space left on device"):
                ring.step()
            status = ring.status()
            assert not status.serving
            assert status.rotation_error is not None
            assert "No space left on device" in status.rotation_error
            assert status.healthy  # the set served is still the good one
        monkeypatch.undo()  # space again
        (created,) = ring.step()
        assert created.after is State.PENDING
        assert ring.status().rotation_error is None
        assert ring.status().serving
    assert _rotation_events(caplog) == ["rotation_step_failed", "rotation_step_recovered"]


def test_a_read_only_store_cannot_rotate_and_says_so(
    tmp_path: Path,
    key_pool: list[jwk.JWK],
    seed_store: Any,
    read_only_bind: Callable[[Path, Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read-only mount serves its keys, but a server asked to rotate them cannot: the probe
    a server with `--rotation auto` runs at start says so before any step is due."""
    seed_store(tmp_path / "source", key_pool[2:3])
    read_only_bind(tmp_path / "source", tmp_path / "mount")
    ring = KeyRing(DirectoryStore(tmp_path / "mount"), Policy())
    ring.load()
    assert ring.status().serving  # nothing asked it to write yet
    with caplog.at_level(logging.INFO, logger="agentrouter_auth.keys"):
        assert ring.check_writable() is False
        assert ring.check_writable() is False
    status = ring.status()
    assert not status.serving
    assert "Read-only file system" in str(status.rotation_error)
    assert _rotation_events(caplog) == ["rotation_step_failed"]
    writable = KeyRing(DirectoryStore(tmp_path / "source"), Policy())
    writable.load()
    before = sorted(p.name for p in (tmp_path / "source").iterdir())
    assert writable.check_writable() is True
    assert writable.status().serving
    assert sorted(p.name for p in (tmp_path / "source").iterdir()) == before  # wrote nothing
