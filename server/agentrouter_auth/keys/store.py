"""Key stores. The directory store keeps one JWK file per key plus a manifest of states.

Layout of a key directory (mode 0700, owned by the user running the server):

    <kid>.jwk.json   one key per file, mode 0600; private for generated keys, public for imports
    manifest.json    each key's state and times (see `Entry`); the only list of keys; and the
                     ring's rotation policy (`RecordedPolicy`) once a rotating server recorded it
    .lock            flock(2) target: writers hold it exclusively, readers shared

Only the keys the manifest lists are loaded. A `*.jwk.json` file it does not list is reported
(`KeySet.unlisted`) and ignored: it is never published and never signs, whoever put it there.
So a transaction can be ordered to survive a crash or a full disk at any point: new key files
first (orphans until the manifest names them), then the manifest (tmp + fsync + rename: the
commit point), then the removal of key files the manifest no longer names and of temporary
files an earlier, interrupted transaction left. A reader sees the old state or the new one.

A store is refused when someone other than its owner (or root) could change it: the
directory and every file read must not be writable by group or others nor owned by another
user, unless they sit on a read-only mount (a Kubernetes Secret volume), which nobody writes.
Reading never creates a file; only transactions write, and only when something changes.

The CLI, every worker process and every replica sharing the directory take the same lock, so a
rotation step runs once however many of them try at the same moment. The ring only depends on
the `KeyStore` protocol, so another backend (a database shared by replicas on many machines)
slots in without touching the ring, the snapshot or a transport: `stores.open_store` chooses
the backend from the `--key-store` location.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from jwcrypto import jwk
from jwcrypto.common import JWException

from agentrouter_auth.keys.material import InvalidKeyError, validate
from agentrouter_auth.keys.policy import Policy, format_duration

KEY_SUFFIX = ".jwk.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
MANIFEST_FORMAT = 1
DIR_MODE = 0o700
FILE_MODE = 0o600
# A kid is an RFC 7638 thumbprint (base64url), so it is safe in a file name.
KID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# The files a transaction may remove: key files the manifest does not list, and the temporary
# files `write_atomic` makes. Nothing else in the directory is ever touched.
KEY_FILE = re.compile(r"(?P<kid>[A-Za-z0-9_-]{1,128})\.jwk\.json")
TEMP_FILE = re.compile(r"\.(?:manifest\.json|[A-Za-z0-9_-]{1,128}\.jwk\.json)\.[A-Za-z0-9_]+\.tmp")


class KeyStoreError(ValueError):
    """The store cannot be read or written as asked; the message names where and why.

    `location` is whatever the store can point at: a file or a directory of the directory
    store, or a store's location as given (a URL).
    """

    def __init__(self, location: Path | str, reason: str) -> None:
        super().__init__(f"{location}: {reason}")
        self.location = str(location)
        self.reason = reason

    @property
    def path(self) -> str:
        """`location`, by the name the `key_set_reload_failed` log field has always had."""
        return self.location


class KeyStoreUnavailableError(KeyStoreError):
    """The store cannot be reached now (a database that is down or unreachable), as opposed
    to a store that answers but is wrong. It may recover by itself: a server that meets it at
    start keeps retrying rather than refusing to start."""


class ChangeFeed(Protocol):
    """Tells a process soon after another one changed the store (PostgreSQL's LISTEN)."""

    async def wait(self, timeout: float) -> bool:
        """Return True when the store announced a change, or may have changed unannounced (the
        feed reconnected); False when `timeout` seconds passed without one."""
        ...

    async def close(self) -> None:
        """Stop listening."""
        ...


class State(StrEnum):
    """Where a key is in its life. Keys in every state are published; only ACTIVE signs."""

    PENDING = "pending"
    """Published so verifiers cache it, not signing yet."""
    ACTIVE = "active"
    """Signs new tokens; exactly one per algorithm."""
    RETIRED = "retired"
    """Published until the tokens it signed have expired, not signing."""
    PUBLISHED = "published"
    """Imported public key: published, never signs, never removed automatically."""


class Origin(StrEnum):
    """How a key entered the store."""

    GENERATED = "generated"
    IMPORTED = "imported"

    @classmethod
    def parse(cls, value: object) -> Origin:
        """The origin a manifest records. Earlier versions wrote "unlisted" for a key file
        they found without an entry; such an entry is a hand-placed key, i.e. an import."""
        return cls.IMPORTED if value == "unlisted" else cls(str(value))


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
        if not KID.fullmatch(kid):
            raise ValueError(f"entry kid {kid!r} is not a base64url thumbprint")
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
            origin=Origin.parse(record.get("origin", Origin.GENERATED)),
        )


@dataclass(frozen=True, slots=True)
class RecordedPolicy:
    """The part of a rotation policy that decides when lifecycle steps fall due, as a store
    records it for its ring: every server that takes steps on one ring must agree on it, or the
    one with the shortest times takes each step first (a key signs after the shorter
    publish-ahead, against what the others' cache lifetimes were checked for). The token TTL and
    clock skew are bounded per server by `retain_after`, the cache lifetimes by `publish_ahead`.
    """

    rotation_period: float
    publish_ahead: float
    retain_after: float

    @classmethod
    def of(cls, policy: Policy) -> RecordedPolicy:
        """The recorded part of `policy`."""
        return cls(policy.rotation_period, policy.publish_ahead, policy.retain_after)

    def to_json(self) -> dict[str, float]:
        """The stored form: seconds by field name."""
        return {name: getattr(self, name) for name in RECORDED_POLICY_FIELDS}

    @classmethod
    def from_json(cls, record: object) -> RecordedPolicy:
        """Parse the stored form; ValueError on anything malformed."""
        if not isinstance(record, dict) or set(record) != set(RECORDED_POLICY_FIELDS):
            raise ValueError(f"a rotation policy has exactly {', '.join(RECORDED_POLICY_FIELDS)}")
        values = [record[name] for name in RECORDED_POLICY_FIELDS]
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError("a rotation policy's durations are positive seconds")
        return cls(*(float(value) for value in values))

    def __str__(self) -> str:
        return ", ".join(
            f"--{name.replace('_', '-')} {format_duration(getattr(self, name))}"
            for name in RECORDED_POLICY_FIELDS
        )


RECORDED_POLICY_FIELDS = ("rotation_period", "publish_ahead", "retain_after")


class PolicyConflictError(KeyStoreError):
    """The store records another rotation policy than this process's: a server taking
    lifecycle steps on it would race the others with other times."""


def policy_conflict(
    recorded: RecordedPolicy | None, policy: Policy, where: Path | str
) -> PolicyConflictError | None:
    """The error to raise (or report) when `recorded` is not `policy`'s; None when they agree
    or nothing is recorded yet (a store written by an earlier version: adopted)."""
    ours = RecordedPolicy.of(policy)
    if recorded is None or recorded == ours:
        return None
    return PolicyConflictError(
        where,
        f"the key store records the rotation policy {recorded}, this server's is {ours}: "
        "servers that rotate one key ring must share its policy; give this server the recorded "
        "one, or change the recorded one on purpose with `agentrouter-auth keys policy --set` "
        "and the new options",
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
    """Everything a store holds at one moment, sorted by kid, plus notes worth logging.

    `unlisted` names the key files found beside the manifest but not listed in it (left by an
    interrupted transaction, or put there by hand): ignored, never published, never signing,
    and removed by the store's next transaction. `policy` is the rotation policy recorded for
    the ring (None: none recorded yet, as in a store written by an earlier version).
    """

    keys: tuple[StoredKey, ...]
    notes: tuple[str, ...] = ()
    unlisted: tuple[str, ...] = ()
    policy: RecordedPolicy | None = None

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
        self.policy = current.policy

    def record_policy(self, policy: RecordedPolicy) -> None:
        """Record `policy` as the ring's rotation policy."""
        self.policy = policy

    def add(self, key: jwk.JWK, entry: Entry) -> None:
        """Store a new key with its entry."""
        self.added[entry.kid] = StoredKey(entry, key)

    def update(self, entry: Entry) -> None:
        """Replace the entry of a key already stored."""
        self.updated[entry.kid] = entry

    def delete(self, kid: str) -> None:
        """Remove a key and its file."""
        self.deleted.add(kid)

    @property
    def changed(self) -> bool:
        """Whether applying this transaction changes what the store holds."""
        return (
            bool(self.added)
            or self.policy != self.current.policy
            or self.result().entries != self.current.entries
        )

    def result(self) -> KeySet:
        """What the store holds once this transaction is applied."""
        keys = {k.kid: k for k in self.current.keys}
        keys.update(self.added)
        for kid, entry in self.updated.items():
            keys[kid] = replace(keys[kid], entry=entry)
        for kid in self.deleted:
            keys.pop(kid, None)
        return KeySet(tuple(keys[kid] for kid in sorted(keys)), policy=self.policy)


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

    def close(self) -> None:
        """Release what the store holds open (database sessions); it reopens them if used
        again. A process closes its stores before it forks workers."""
        ...

    def change_feed(self) -> ChangeFeed | None:
        """A feed of the store's change announcements, or None when it has none (then the
        ring's polling of `fingerprint()` alone sees changes)."""
        ...


class DirectoryStore:
    """The embedded default store: a directory of JWK files and a manifest."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def description(self) -> str:
        """The directory."""
        return str(self.path)

    def change_feed(self) -> None:
        """None: a directory announces nothing; the ring polls its fingerprint."""

    def close(self) -> None:
        """Nothing is held open between calls."""

    def key_file(self, kid: str) -> Path:
        """Where the key `kid` is kept."""
        return self.path / f"{kid}{KEY_SUFFIX}"

    def fingerprint(self) -> object:
        """The directory's own mode and owner, then names, inodes, sizes, mtimes, modes and
        owners of its entries (symlinks followed).

        Follows symlinks so a Kubernetes Secret volume updated in place (an atomic swap of its
        `..data` link) counts as a change; a chmod or chown counts too, since it can make a
        store unsafe. Errors are part of the value, so they change it too.
        """
        try:
            st = os.stat(self.path)
            names = sorted(os.listdir(self.path))
        except OSError as err:
            return (("error", err.errno),)
        marks: list[tuple[object, ...]] = [("", st.st_ino, st.st_mode, st.st_uid)]
        for name in names:
            if name == LOCK or name.endswith(".tmp"):
                continue
            try:
                st = os.stat(self.path / name)
            except OSError as err:
                marks.append((name, "error", err.errno))
                continue
            marks.append((name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid))
        return tuple(marks)

    def read(self) -> KeySet:
        """Every listed key with its entry, validated, under a shared lock when there is one.

        Creates nothing: without a lock file (a read-only mount, or a store no transaction has
        written yet) there is no writer to wait for.
        """
        with self._lock(fcntl.LOCK_SH, required=False):
            return self._read()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Hold the exclusive lock, yield the current set, apply the changes on clean exit.

        A transaction that changes nothing writes nothing (it only removes leftovers).
        """
        with self._lock(fcntl.LOCK_EX, required=True):
            tx = Transaction(self._read())
            yield tx
            self._apply(tx)

    @contextlib.contextmanager
    def _lock(self, operation: int, *, required: bool) -> Iterator[None]:
        if required:
            try:
                self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            except FileExistsError:
                pass  # not a directory: _check_directory says so
            except OSError as err:
                raise KeyStoreError(self.path, f"cannot create: {_reason(err)}") from err
            self._check_directory()  # before the lock file is made in it
        flags = os.O_RDWR | os.O_CREAT if required else os.O_RDONLY
        try:
            fd = os.open(self.path / LOCK, flags | os.O_CLOEXEC, FILE_MODE)
        except OSError as err:
            if required:
                raise KeyStoreError(self.path, f"cannot lock the key store: {err}") from err
            # No lock file, or a read-only mount (a Kubernetes Secret): no writer to wait for.
            yield
            return
        try:
            fcntl.flock(fd, operation)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _check_directory(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise KeyStoreError(self.path, f"unreadable: {_reason(err)}") from err
        if not stat.S_ISDIR(st.st_mode):
            raise KeyStoreError(self.path, "not a directory")
        check_private(self.path, st, "the key directory")

    def _read(self) -> KeySet:
        if not os.path.lexists(self.path):
            return KeySet(())  # a new store: the first transaction creates it
        self._check_directory()
        try:
            names = os.listdir(self.path)
        except OSError as err:
            raise KeyStoreError(self.path, f"unreadable: {_reason(err)}") from err
        key_files = sorted(n for n in names if n.endswith(KEY_SUFFIX) and not n.startswith("."))
        checked = {os.path.realpath(self.path)}  # directories found safe
        entries, policy = self._read_manifest(key_files, checked)
        keys: list[StoredKey] = []
        for kid, entry in sorted(entries.items()):
            path = self.key_file(kid)
            if not os.path.lexists(path):
                raise KeyStoreError(
                    self.path / MANIFEST, f"lists key {kid} but {path.name} is missing"
                )
            key = read_key(path, checked)
            if key["kid"] != kid:
                raise KeyStoreError(path, f"holds key {key['kid']}, not {kid} as its name says")
            if entry.alg != key["alg"]:
                raise KeyStoreError(path, f"alg {key['alg']} but the manifest says {entry.alg}")
            if entry.state is State.ACTIVE and not key.has_private:
                raise KeyStoreError(path, "active key has no private half to sign with")
            keys.append(StoredKey(entry, key))
        unlisted = tuple(name for name in key_files if name.removesuffix(KEY_SUFFIX) not in entries)
        notes = tuple(
            f"{self.path / name}: not in the manifest: ignored, never published (another "
            "issuer's key is added with `keys import`)"
            for name in unlisted
        )
        key_set = KeySet(tuple(keys), notes, unlisted, policy)
        check_one_active_per_alg(key_set, self.path / MANIFEST)
        return key_set

    def _read_manifest(
        self, key_files: list[str], checked: set[str]
    ) -> tuple[dict[str, Entry], RecordedPolicy | None]:
        """The manifest's entries by kid, and its recorded policy (None in a manifest written
        before policies were recorded: adopted as it is)."""
        path = self.path / MANIFEST
        try:
            raw, _ = read_checked(path, "the manifest", checked)
        except FileNotFoundError as err:
            if not key_files:
                return {}, None  # a new (or emptied) store
            raise KeyStoreError(
                path,
                f"missing, but the directory holds {len(key_files)} key file(s): the store is "
                "not read or written until the manifest is restored (from a backup)",
            ) from err
        except OSError as err:
            raise KeyStoreError(path, f"unreadable: {_reason(err)}") from err
        try:
            document = json.loads(raw)
            if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
                raise ValueError(f"not a format {MANIFEST_FORMAT} manifest")
            records = document.get("keys")
            if not isinstance(records, list):
                raise ValueError("keys must be a list")
            entries = [Entry.from_json(record) for record in records]
            recorded = document.get("policy")
            policy = None if recorded is None else RecordedPolicy.from_json(recorded)
        except (ValueError, UnicodeDecodeError) as err:
            raise KeyStoreError(path, f"corrupt manifest: {err}") from err
        by_kid = {entry.kid: entry for entry in entries}
        if len(by_kid) != len(entries):
            raise KeyStoreError(path, "corrupt manifest: a kid is listed twice")
        return by_kid, policy

    def _apply(self, tx: Transaction) -> None:
        """Key files, then the manifest (the commit), then removals: at every step a reader,
        or the next process after a crash, finds the old state or the new one."""
        manifest = self.path / MANIFEST
        if tx.changed:
            result = tx.result()
            check_one_active_per_alg(result, manifest)
            if not os.path.lexists(manifest):
                # A new store lists no key before its first key file exists, so a crash below
                # leaves an empty store rather than key files without a manifest.
                _write(manifest, _manifest_json((), None))
            for stored in tx.added.values():
                private = stored.key.has_private
                _write(self.key_file(stored.kid), stored.key.export(private_key=private))
            _write(manifest, _manifest_json(result.entries, result.policy))  # the commit
            listed = {entry.kid for entry in result.entries}
        else:
            listed = {entry.kid for entry in tx.current.entries}
        self._remove_leftovers(listed)

    def _remove_leftovers(self, listed: set[str]) -> None:
        """Remove key files the manifest does not list and temporary files of interrupted
        writes, under the exclusive lock (so no writer is using them). The manifest is
        already committed: a failure here leaves them for the next transaction."""
        try:
            names = os.listdir(self.path)
        except OSError:
            return
        removed = False
        for name in sorted(names):
            key_file = KEY_FILE.fullmatch(name)
            if (key_file is None or key_file["kid"] in listed) and not TEMP_FILE.fullmatch(name):
                continue
            with contextlib.suppress(OSError):
                os.unlink(self.path / name)
                removed = True
        if removed:
            with contextlib.suppress(OSError):
                _fsync_dir(self.path)


def _write(target: Path, data: str) -> None:
    try:
        write_atomic(target, data)
    except OSError as err:
        raise KeyStoreError(target, f"cannot write: {_reason(err)}") from err


def _manifest_json(entries: Iterable[Entry], policy: RecordedPolicy | None) -> str:
    document: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "keys": [entry.to_json() for entry in entries],
    }
    if policy is not None:  # an earlier version reads (and drops) the extra member
        document["policy"] = policy.to_json()
    return json.dumps(document, indent=2) + "\n"


def _reason(err: OSError) -> str:
    return err.strerror or str(err)


def check_private(path: Path, st: os.stat_result, what: str, *, real: Path | None = None) -> None:
    """Refuse `path` (stat `st`) if a user other than its owner could change it.

    It must be owned by the user running this process, or by root (who can change anything
    anyway), and not be writable by group or others. A read-only mount is exempt: nobody can
    write it (a Kubernetes Secret volume is a read-only tmpfs whose root is mode 1777).
    """
    mode = stat.S_IMODE(st.st_mode)
    unsafe_mode = mode & 0o022
    foreign = st.st_uid not in (os.geteuid(), 0)
    if not (unsafe_mode or foreign) or _read_only(real or path):
        return
    if foreign:
        raise KeyStoreError(
            path,
            f"{what} is owned by uid {st.st_uid}: only the user running this process "
            f"(uid {os.geteuid()}) or root may own it, or another user can change the keys; "
            "chown it",
        )
    raise KeyStoreError(
        path,
        f"{what} is writable by group or others (mode {mode:04o}): anyone who can write "
        f"it can add or replace a key; chmod go-w it",
    )


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_one_active_per_alg(key_set: KeySet, where: Path | str) -> None:
    """Raise unless each algorithm has at most one active key."""
    seen: dict[str, str] = {}
    for stored in key_set.keys:
        if stored.entry.state is State.ACTIVE:
            other = seen.setdefault(stored.entry.alg, stored.kid)
            if other != stored.kid:
                raise KeyStoreError(
                    where, f"two active {stored.entry.alg} keys ({other}, {stored.kid})"
                )


def read_checked(path: Path, what: str, checked_dirs: set[str]) -> tuple[bytes, os.stat_result]:
    """The bytes and status of `path` once it, and the directory it really lives in when it
    is a symlink (a Kubernetes Secret links every file into a timestamped directory), are found
    safe (`check_private`). `checked_dirs` holds directories already found safe. OSError
    passes."""
    real = Path(os.path.realpath(path))
    # Non-blocking, so a FIFO in the key's place cannot hang a reload.
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise KeyStoreError(path, "not a regular file")
        raw = handle.read()
    if str(real.parent) not in checked_dirs:
        check_private(real.parent, os.stat(real.parent), "the directory of a key file")
        checked_dirs.add(str(real.parent))
    check_private(path, st, what, real=real)
    return raw, st


def read_key(path: Path, checked_dirs: set[str] | None = None) -> jwk.JWK:
    """Parse and validate one key file; any failure is a KeyStoreError that names the file.

    The file must be safe (`read_checked`), and a private half must belong to the public one.
    """
    try:
        raw, st = read_checked(
            path, "the key file", set() if checked_dirs is None else checked_dirs
        )
    except OSError as err:
        raise KeyStoreError(path, f"unreadable: {_reason(err)}") from err
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
    """Write `data` to `target` (mode 0600) so readers see the old file or the new, never a part.

    The data is on disk (fsync) before the rename makes it visible, and the rename is on disk
    (directory fsync) before this returns. On an error the temporary file is removed; if the
    process dies first, the next transaction removes it (`TEMP_FILE`).
    """
    payload = memoryview(data.encode() if isinstance(data, str) else data)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        try:
            while payload:  # mkstemp made it 0600
                payload = payload[os.write(fd, payload) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems cannot fsync a directory; the rename stands
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
