"""The newest sealed ring state a process accepted, which it never lets go backwards: a state
older than it, or another at its generation, is a database written back to an earlier state.

The workers of one `serve` share it through a file in a directory their supervisor makes for
them (`RING_MEMORY_ENV`), so that neither a SIGHUP (granian restarts every worker) nor a
respawned worker forgets what any worker has seen. The file holds the state's document (kids,
states, row digests, policy: nothing secret), replaced atomically under an exclusive lock and
only by a newer generation. A new `serve` starts with an empty directory: it cannot know.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from agentrouter_auth.keys.postgres.rows import RingState, RowCodec
from agentrouter_auth.keys.store import RING_MEMORY_ENV, KeyStoreError

_FILE = "ring-state.json"


class SeenStates:
    """The newest ring state accepted by this process, and by its sibling workers."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = Path(directory) if directory else None
        self._seen: RingState | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> SeenStates:
        return cls(os.environ.get(RING_MEMORY_ENV) or None)

    def newest(self) -> RingState | None:
        """The newest state accepted here or (if shared) by a sibling."""
        shared = self._read()
        seen = self._seen
        if shared is not None and (seen is None or shared.generation > seen.generation):
            return shared
        return seen

    def accept(self, state: RingState) -> None:
        """Remember `state` if it is newer than any remembered."""
        with self._lock:
            if self._seen is None or state.generation > self._seen.generation:
                self._seen = state
        if self._directory is None:
            return
        with contextlib.suppress(OSError), self._exclusive():
            shared = self._read()
            if shared is not None and shared.generation >= state.generation:
                return
            staging = self._directory / f".{_FILE}.{os.getpid()}"
            staging.write_text(state.document())
            os.replace(staging, self._directory / _FILE)

    def check(self, state: RingState, rows: RowCodec) -> None:
        """Refuse a state older than the newest accepted, or another at its generation: the
        database was written back to an earlier state (a replay, or a restore from a backup,
        which is accepted by restarting)."""
        seen = self.newest()
        if seen is None or state.generation > seen.generation or state == seen:
            return
        kids = state.differences(seen)
        what = (
            f"older than generation {seen.generation}"
            if state.generation < seen.generation
            else "but another state than the one"
        )
        reason = (
            f"the ring state is at generation {state.generation}, {what} this process already "
            "loaded: the database was written back to an earlier state (a replay, or a restore "
            "from a backup); refused, the last good set stays (restart to accept a restore)"
        )
        if kids:
            raise rows.refuse(kids[0], reason)
        raise KeyStoreError(rows.description, reason)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        assert self._directory is not None
        fd = os.open(self._directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> RingState | None:
        if self._directory is None:
            return None
        try:
            return RingState.parse((self._directory / _FILE).read_text())
        except (OSError, ValueError):
            return None  # none yet (or the directory is gone: the server is stopping)
