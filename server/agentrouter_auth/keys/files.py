"""File safety for stores kept in files: refuse what others could change, read without
hanging, write so that readers see the old file or the new, never a part."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from agentrouter_auth.keys.store import KeyStoreError


def reason(err: OSError) -> str:
    """The OS's words for `err`."""
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
    if not (unsafe_mode or foreign) or read_only(real or path):
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


def read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


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


def write_atomic(target: Path, data: str | bytes) -> None:
    """Write `data` to `target` (mode 0600) so readers see the old file or the new, never a part.

    The data is on disk (fsync) before the rename makes it visible, and the rename is on disk
    (directory fsync) before this returns. On an error the temporary file is removed; if the
    process dies first, the directory store's next transaction removes it (its `TEMP_FILE`).
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
    fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as err:  # some filesystems cannot fsync a directory; the rename stands
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
