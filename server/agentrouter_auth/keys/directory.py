"""The directory store, the embedded default: one JWK file per key plus a manifest of states.

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
rotation step runs once however many of them try at the same moment. Every key file passes the
shared check of a stored key (`keys.check`) against its manifest entry; the file-safety rules are
`keys.files`. The `KeyStore` contract this store keeps is `keys.store`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jwcrypto import jwk

from agentrouter_auth.keys.check import check_stored_key, parse_key
from agentrouter_auth.keys.files import (
    check_private,
    fsync_dir,
    read_checked,
    reason,
    write_atomic,
)
from agentrouter_auth.keys.material import InvalidKeyError, validate
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStoreError,
    RecordedPolicy,
    StoredKey,
    Transaction,
    check_one_active_per_alg,
)

KEY_SUFFIX = ".jwk.json"
MANIFEST = "manifest.json"
LOCK = ".lock"
MANIFEST_FORMAT = 1
DIR_MODE = 0o700
FILE_MODE = 0o600
# The files a transaction may remove: key files the manifest does not list, and the temporary
# files `write_atomic` makes. Nothing else in the directory is ever touched.
KEY_FILE = re.compile(r"(?P<kid>[A-Za-z0-9_-]{1,128})\.jwk\.json")
TEMP_FILE = re.compile(r"\.(?:manifest\.json|[A-Za-z0-9_-]{1,128}\.jwk\.json)\.[A-Za-z0-9_]+\.tmp")


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
                raise KeyStoreError(self.path, f"cannot create: {reason(err)}") from err
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
            raise KeyStoreError(self.path, f"unreadable: {reason(err)}") from err
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
            raise KeyStoreError(self.path, f"unreadable: {reason(err)}") from err
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
            keys.append(StoredKey(entry, read_key(path, checked, entry)))
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
            raise KeyStoreError(path, f"unreadable: {reason(err)}") from err
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
                fsync_dir(self.path)


def _write(target: Path, data: str) -> None:
    try:
        write_atomic(target, data)
    except OSError as err:
        raise KeyStoreError(target, f"cannot write: {reason(err)}") from err


def _manifest_json(entries: Iterable[Entry], policy: RecordedPolicy | None) -> str:
    document: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "keys": [entry.to_json() for entry in entries],
    }
    if policy is not None:  # an earlier version reads (and drops) the extra member
        document["policy"] = policy.to_json()
    return json.dumps(document, indent=2) + "\n"


def read_key(
    path: Path, checked_dirs: set[str] | None = None, entry: Entry | None = None
) -> jwk.JWK:
    """Parse and check one key file; any failure is a KeyStoreError that names the file.

    The file must be safe (`read_checked`), a private half private to its owner; the key passes
    the shared check of a stored key against its manifest `entry` (`check_stored_key`), or,
    without one, the check of any key (`validate`).
    """
    try:
        raw, st = read_checked(
            path, "the key file", set() if checked_dirs is None else checked_dirs
        )
    except OSError as err:
        raise KeyStoreError(path, f"unreadable: {reason(err)}") from err
    try:
        key = parse_key(raw)
    except InvalidKeyError as err:
        raise KeyStoreError(path, str(err)) from err
    if key.has_private and stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyStoreError(
            path,
            "private key is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); chmod 600 it",
        )
    try:
        if entry is None:
            validate(key)
        else:
            check_stored_key(entry, key, record="the manifest")
    except InvalidKeyError as err:
        raise KeyStoreError(path, str(err)) from err
    return key
