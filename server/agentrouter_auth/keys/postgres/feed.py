"""The PostgreSQL store's change feed: LISTEN for the commits of other processes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg

from agentrouter_auth.keys.postgres.schema import CHANNEL
from agentrouter_auth.keys.postgres.session import Sessions

COALESCE_SECONDS = 0.05
"""A wait that got a notification swallows whatever else arrives this long after it: anyone
who may connect can NOTIFY the channel, and a flood must cost at most one reload per interval
of this length, not one per notification (attack F8a)."""


class PostgresChangeFeed:
    """The store's change announcements: LISTEN on `CHANNEL` in an async session of its own.

    Wake-ups are coalesced (`COALESCE_SECONDS`). A lost session is opened again on the next
    wait, and that wait reports a change: anything committed meanwhile was announced to nobody.
    While the database cannot be reached, a wait sleeps its timeout and reports none, and the
    ring's polling carries on alone.
    """

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def wait(self, timeout: float) -> bool:
        """True on a notification (or a new session), False after `timeout` without one."""
        if self._conn is None or self._conn.closed:
            started = asyncio.get_running_loop().time()
            if await self._listen():
                return True
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, timeout - elapsed))
            return False
        try:
            notified = False
            async for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                notified = True
            if notified:  # coalesce: what else comes within COALESCE_SECONDS is this change
                async for _ in self._conn.notifies(timeout=COALESCE_SECONDS):
                    pass
        except psycopg.Error:
            await self.close()
            return True  # changes may have gone unannounced: look
        return notified

    async def _listen(self) -> bool:
        parameters = self._sessions.connection_parameters()
        try:
            conn = await psycopg.AsyncConnection.connect(self._sessions.location, **parameters)
        except psycopg.Error:
            return False
        try:
            await conn.execute("LISTEN " + CHANNEL)  # a constant identifier
        except psycopg.Error:
            await conn.close()
            return False
        self._conn = conn
        return True

    async def close(self) -> None:
        """Close the session (a new wait opens another)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
