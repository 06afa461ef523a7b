"""The key directory: one JWK file per key, written atomically and readable only by us."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from jwcrypto import jwk
from jwcrypto.common import JWException

KEY_SUFFIX = ".jwk.json"
DIR_MODE = 0o700
FILE_MODE = 0o600


class KeyFileError(ValueError):
    """A key file cannot be used; the message names the file and the reason."""


class KeyDirectory:
    """Private JWKs stored one per file in a directory (the embedded default store)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def files(self) -> list[Path]:
        """The key files, sorted by name."""
        if not self.path.is_dir():
            return []
        return sorted(self.path.glob(f"*{KEY_SUFFIX}"))

    def load(self) -> list[jwk.JWK]:
        """Every key in the directory; raise KeyFileError naming the first unusable file."""
        return [read_key(path) for path in self.files()]

    def add(self, key: jwk.JWK) -> Path:
        """Persist `key` as `<kid>.jwk.json` (mode 0600) with tmp + fsync + rename."""
        kid = key.get("kid")
        if not kid or "/" in kid or kid.startswith("."):
            raise KeyFileError(f"refusing to store a key with kid {kid!r}")
        self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        target = self.path / f"{kid}{KEY_SUFFIX}"
        write_atomic(target, key.export(private_key=key.has_private).encode())
        return target


def read_key(path: Path) -> jwk.JWK:
    """Parse one key file; any failure is a KeyFileError that names the file."""
    try:
        return jwk.JWK.from_json(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise KeyFileError(f"{path}: unreadable: {err}") from err
    except (ValueError, JWException, json.JSONDecodeError) as err:
        raise KeyFileError(f"{path}: not a valid JWK: {err}") from err


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` so a reader sees the old file or the new one, never a part."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
