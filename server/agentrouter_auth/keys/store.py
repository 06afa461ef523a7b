"""Key stores. The directory store keeps one JWK file per key plus a manifest of states.

Layout of a key directory (mode 0700):

    <kid>.jwk.json   one key per file, mode 0600; private for generated keys, public for imports
    manifest.json    each key's state and times (see `Entry`)
    .lock            flock(2) target: writers hold it exclusively, readers shared

Every write is tmp + fsync + rename, so a reader sees a whole old file or a whole new one. A
transaction writes new key files first, then the manifest, then removes deleted files, so a
reader never finds the manifest naming a key whose file is missing. The CLI, every worker
process and every replica sharing the directory take the same lock, so a rotation step runs
once however many of them try at the same moment.

The ring only depends on the `KeyStore` protocol, so another backend (a database shared by
replicas on many machines) slots in without touching the ring, the snapshot or a transport.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentrouter_auth.keys.material import InvalidKeyError, validate

KEY_SUFFIX = ".jwk.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
MANIFEST_FORMAT = 1
DIR_MODE = 0o700
FILE_MODE = 0o600


class KeyStoreError(ValueError):
    """The store cannot be read or written as asked; the message names the file and reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class State(StrEnum):
    """Where a key is in its life. Keys in every state are published; only ACTIVE signs."""

    PENDING = "pending"
    """Published so verifiers cache it, not signing yet."""
    ACTIVE = "active"
    """Signs new tokens; exactly one per algorithm."""
    RETIRED = "retired"
    """Published until the tokens it signed have expired, not signing."""
    PUBLISHED = "published"
    """Imported or unlisted public key: published, never signs, never removed automatically."""


class Origin(StrEnum):
    """How a key entered the store."""

    GENERATED = "generated"
    IMPORTED = "imported"
    UNLISTED = "unlisted"  # a key file the manifest does not name


@dataclass(frozen=True, slots=True)
class Entry:
    """A key's manifest record. Times are Unix seconds."""

    kid: str
    alg: str
    state: State
    created: int
    activated: int | None = None
    retired: int | None = None
    origin: Origin = Origin.GENERATED

    def to_json(self) -> dict[str, Any]:
        """The manifest form of this entry."""
        record: dict[str, Any] = {
            "kid": self.kid,
            "alg": self.alg,
            "state": self.state.value,
            "origin": self.origin.value,
            "created": self.created,
        }
        if self.activated is not None:
            record["activated"] = self.activated
        if self.retired is not None:
            record["retired"] = self.retired
        return record

    @classmethod
    def from_json(cls, record: object) -> Entry:
        """Parse one manifest record; raise ValueError on anything malformed."""
        if not isinstance(record, dict):
            raise ValueError("an entry is not an object")
        kid, alg = record.get("kid"), record.get("alg")
        if not isinstance(kid, str) or not kid or not isinstance(alg, str):
            raise ValueError(f"entry {record!r} needs string kid and alg")
        times = {name: record.get(name) for name in ("created", "activated", "retired")}
        for name, value in times.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"entry {kid}: {name} must be Unix seconds")
        if times["created"] is None:
            raise ValueError(f"entry {kid}: created is missing")
        return cls(
            kid=kid,
            alg=alg,
            state=State(str(record.get("state"))),
            created=times["created"],
            activated=times["activated"],
            retired=times["retired"],
            origin=Origin(str(record.get("origin", Origin.GENERATED))),
        )


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key and its manifest entry. `key` is private for generated keys."""

    entry: Entry
    key: jwk.JWK = field(compare=False)

    @property
    def kid(self) -> str:
        """The key's id."""
        return self.entry.kid


@dataclass(frozen=True, slots=True)
class KeySet:
    """Everything a store holds at one moment, sorted by kid, plus notes worth logging."""

    keys: tuple[StoredKey, ...]
    notes: tuple[str, ...] = ()

    def active(self, alg: str) -> StoredKey | None:
        """The key that signs `alg` tokens, if any."""
        return next(
            (k for k in self.keys if k.entry.alg == alg and k.entry.state is State.ACTIVE), None
        )

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The manifest entries."""
        return tuple(k.entry for k in self.keys)


class Transaction:
    """Changes to a store made under its exclusive lock, applied together at the end."""

    def __init__(self, current: KeySet) -> None:
        self.current = current
        self.added: dict[str, StoredKey] = {}
        self.updated: dict[str, Entry] = {}
        self.deleted: set[str] = set()

    def add(self, key: jwk.JWK, entry: Entry) -> None:
        """Store a new key with its entry."""
        self.added[entry.kid] = StoredKey(entry, key)

    def update(self, entry: Entry) -> None:
        """Replace the entry of a key already stored."""
        self.updated[entry.kid] = entry

    def delete(self, kid: str) -> None:
        """Remove a key and its file."""
        self.deleted.add(kid)

    def result(self) -> KeySet:
        """What the store holds once this transaction is applied."""
        keys = {k.kid: k for k in self.current.keys}
        keys.update(self.added)
        for kid, entry in self.updated.items():
            keys[kid] = replace(keys[kid], entry=entry)
        for kid in self.deleted:
            keys.pop(kid, None)
        return KeySet(tuple(keys[kid] for kid in sorted(keys)))


class KeyStore(Protocol):
    """What the key ring needs from a store."""

    @property
    def description(self) -> str:
        """Where the keys live, for messages."""
        ...

    def fingerprint(self) -> object:
        """A cheap value that changes whenever the stored keys may have changed."""
        ...

    def read(self) -> KeySet:
        """Every key with its entry, validated; raise KeyStoreError naming what is wrong."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """Exclusive access: read the current set, change it, apply on clean exit."""
        ...


class DirectoryStore:
    """The embedded default store: a directory of JWK files and a manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def description(self) -> str:
        """The directory."""
        return str(self.path)

    def key_file(self, kid: str) -> Path:
        """Where the key `kid` is kept."""
        return self.path / f"{kid}{KEY_SUFFIX}"

    def fingerprint(self) -> object:
        """Names, inodes, sizes and mtimes of the directory's entries (symlinks followed).

        Follows symlinks so a Kubernetes Secret volume updated in place (an atomic swap of its
        `..data` link) counts as a change. Errors are part of the value, so they change it too.
        """
        marks: list[tuple[object, ...]] = []
        try:
            names = sorted(os.listdir(self.path))
        except OSError as err:
            return (("error", err.errno),)
        for name in names:
            if name == LOCK or name.endswith(".tmp"):
                continue
            try:
                st = os.stat(self.path / name)
            except OSError as err:
                marks.append((name, "error", err.errno))
                continue
            marks.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode))
        return tuple(marks)

    def read(self) -> KeySet:
        """Every key with its entry, validated, under a shared lock when one can be taken."""
        with self._lock(fcntl.LOCK_SH, required=False):
            return self._read()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the exclusive lock, yield the current set, apply the changes on clean exit."""
        with self._lock(fcntl.LOCK_EX, required=True):
            tx = Transaction(self._read())
            yield tx
            self._apply(tx)

    @contextlib.contextmanager
    def _lock(self, operation: int, *, required: bool) -> Iterator[None]:
        if required:
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as err:
            if required:
                raise KeyStoreError(self.path, f"cannot lock the key store: {err}") from err
            # A read-only mount (a Kubernetes Secret, say) has no writers to wait for.
            yield
            return
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read(self) -> KeySet:
        entries = self._read_manifest()
        loaded: dict[str, tuple[Path, jwk.JWK]] = {}
        for path in sorted(self.path.glob(f"*{KEY_SUFFIX}")) if self.path.is_dir() else []:
            key = read_key(path)
            kid = key["kid"]
            if kid in loaded:
                raise KeyStoreError(path, f"duplicate kid {kid} (also in {loaded[kid][0].name})")
            loaded[kid] = (path, key)
        for kid, (path, _) in loaded.items():
            if path.name != f"{kid}{KEY_SUFFIX}":
                raise KeyStoreError(path, f"file name does not match its kid {kid}")
        notes: list[str] = []
        keys: list[StoredKey] = []
        for kid in sorted(set(entries) | set(loaded)):
            if kid not in loaded:
                raise KeyStoreError(
                    self.path / MANIFEST, f"lists key {kid} but {kid}{KEY_SUFFIX} is missing"
                )
            path, key = loaded[kid]
            entry = entries.get(kid)
            if entry is None:
                notes.append(f"{path}: not in the manifest: published, never signs")
                mtime = int(path.stat().st_mtime)
                entry = Entry(kid, key["alg"], State.PUBLISHED, mtime, origin=Origin.UNLISTED)
            if entry.alg != key["alg"]:
                raise KeyStoreError(path, f"alg {key['alg']} but the manifest says {entry.alg}")
            if entry.state is State.ACTIVE and not key.has_private:
                raise KeyStoreError(path, "active key has no private half to sign with")
            keys.append(StoredKey(entry, key))
        key_set = KeySet(tuple(keys), tuple(notes))
        check_one_active_per_alg(key_set, self.path / MANIFEST)
        return key_set

    def _read_manifest(self) -> dict[str, Entry]:
        path = self.path / MANIFEST
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise KeyStoreError(path, f"unreadable: {err.strerror or err}") from err
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"not a format {MANIFEST_FORMAT} manifest")
            records = document.get("keys")
            if not isinstance(records, list):
                raise ValueError("keys must be a list")
            entries = [Entry.from_json(record) for record in records]
        except (ValueError, UnicodeDecodeError) as err:
            raise KeyStoreError(path, f"corrupt manifest: {err}") from err
        by_kid = {entry.kid: entry for entry in entries}
        if len(by_kid) != len(entries):
            raise KeyStoreError(path, "corrupt manifest: a kid is listed twice")
        return by_kid

    def _apply(self, tx: Transaction) -> None:
        result = tx.result()
        check_one_active_per_alg(result, self.path / MANIFEST)
        for stored in tx.added.values():
            write_atomic(
                self.key_file(stored.kid), stored.key.export(private_key=stored.key.has_private)
            )
        manifest = {"format": MANIFEST_FORMAT, "keys": [e.to_json() for e in result.entries]}
        write_atomic(self.path / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        for kid in sorted(tx.deleted):
            with contextlib.suppress(FileNotFoundError):
                self.key_file(kid).unlink()
        if tx.deleted:
            _fsync_dir(self.path)


def check_one_active_per_alg(key_set: KeySet, where: Path) -> None:
    """Raise unless each algorithm has at most one active key."""
    seen: dict[str, str] = {}
    for stored in key_set.keys:
        if stored.entry.state is State.ACTIVE:
            other = seen.setdefault(stored.entry.alg, stored.kid)
            if other != stored.kid:
                raise KeyStoreError(
                    where, f"two active {stored.entry.alg} keys ({other}, {stored.kid})"
                )


def read_key(path: Path) -> jwk.JWK:
    """Parse and validate one key file; any failure is a KeyStoreError that names the file."""
    try:
        st = os.stat(path)
        raw = path.read_bytes()
    except OSError as err:
        raise KeyStoreError(path, f"unreadable: {err.strerror or err}") from err
    try:
        key = jwk.JWK.from_json(raw.decode("utf-8"))
    except (ValueError, KeyError, TypeError, JWException, UnicodeDecodeError) as err:
        reason = "empty file" if not raw.strip() else f"{type(err).__name__}: {err}"
        raise KeyStoreError(path, f"not a valid JWK ({reason})") from err
    if key.has_private and stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyStoreError(
            path,
            "private key is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it",
        )
    try:
        validate(key)
    except InvalidKeyError as err:
        raise KeyStoreError(path, str(err)) from err
    return key


def write_atomic(target: Path, data: str | bytes) -> None:
    """Write `data` to `target` (mode 0600) so readers see the old file or the new, never a part."""
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems cannot fsync a directory; the rename stands
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
