"""/healthz and /readyz: whether this worker lives, and whether it should get traffic.

/readyz says `loading` (503) until a first key set is loaded (a store unreachable at start),
`draining` (503) once shutdown has begun, and `keyring: error` whenever the gRPC keyring health
entry is NOT_SERVING: the last key-store reload failed (refused, or the store unreachable), a
lifecycle step cannot be written (a read-only store with `--rotation auto`, a full disk), the
store records another rotation policy than this server's, or a key is dated in the future.
It is still ready then, since the last good set is served. The details name files, so they go
to the log (`key_set_reload_failed`, `rotation_step_failed`, `key_dated_in_future`), never to
whoever asks; `reason` says which kind of trouble it is.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from agentrouter_auth.asgi_types import App, Receive, Scope, Send
from agentrouter_auth.http.representation import send_uncached
from agentrouter_auth.keys.ring import RingStatus

if TYPE_CHECKING:
    from agentrouter_auth.runtime import Runtime


def liveness(runtime: Runtime) -> App:
    """/healthz: 200 with this worker's pid while its event loop answers."""

    async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
        await _json(send, 200, {"status": "ok", "pid": os.getpid()})

    return healthz


def readiness(runtime: Runtime) -> App:
    """/readyz: 200 while serving, 503 while draining; the version of the key set served and
    how many keys it holds; never a path or a key id."""

    async def readyz(scope: Scope, receive: Receive, send: Send) -> None:
        ring_status = runtime.ring.status()
        body: dict[str, Any] = {
            "status": "ready",
            "version": ring_status.version,
            "keys": len(runtime.ring.snapshot().kids) if ring_status.loaded else 0,
            "keyring": "ok",
        }
        code = 200
        if not ring_status.loaded:
            body["status"], code = "loading", 503
        if runtime.draining:
            body["status"], code = "draining", 503
        if ring_status.error or (ring_status.loaded and not ring_status.serving):
            body["keyring"] = "error"
            body["reason"] = _reason(ring_status)
        await _json(send, code, body)

    return readyz


def _reason(status: RingStatus) -> str:
    """Why the keyring is not serving, without a path or a key id."""
    if status.error and not status.reachable:
        return "the key store cannot be reached; see the server log"
    if status.error:
        return "a change to the key store was refused; see the server log"
    if status.rotation_error is not None and status.policy_conflict:
        return (
            "the key store records another rotation policy than this server's: it takes no "
            "rotation step; see the server log"
        )
    if status.rotation_error is not None:
        return "the key store cannot be written: no rotation step can be taken; see the server log"
    return "a key is dated in the future (a clock went back?); see the server log"


async def _json(send: Send, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    await send_uncached(send, status, "application/json", body)
