"""/healthz and /readyz: whether this worker lives, and whether it should get traffic.

/readyz says `loading` (503) until a first key set is loaded (a store unreachable at start),
`draining` (503) once shutdown has begun, and `keyring: error` while the last key-store reload
failed (refused, or the store unreachable); it is still ready then, since the last good set is
served. The
reason names files, so it goes to the log (`key_set_reload_failed`), never to whoever asks.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from agentrouter_auth.asgi_types import App, Receive, Scope, Send, respond
from agentrouter_auth.http.representation import uncached

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
        if ring_status.error:
            body["keyring"] = "error"
            body["reason"] = (
                "the key store cannot be reached; see the server log"
                if not ring_status.reachable
                else "a change to the key store was refused; see the server log"
            )
        await _json(send, code, body)

    return readyz


async def _json(send: Send, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    await respond(send, status, uncached("application/json", body), body)
