"""The HTTP listener's ASGI app: REST (transcoded), Connect, gRPC-Web and the service's own
endpoints, found by the table of `dispatch`.

Every request's head is checked first (`head`: its size, its Host). A plain ASGI app: it runs
under granian (what `agentrouter-auth serve` uses) and under any other ASGI server. Its
lifespan starts the process's gRPC listener and key-ring upkeep.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable

from agentrouter_auth import metrics
from agentrouter_auth.asgi_types import App, Receive, Scope, Send, header
from agentrouter_auth.http import head
from agentrouter_auth.http.dispatch import ENDPOINTS, ROWS, Build
from agentrouter_auth.http.limits import RequestBodyTimeoutError
from agentrouter_auth.http.recording import Recorded, method_of
from agentrouter_auth.http.representation import Representation
from agentrouter_auth.runtime import Runtime
from agentrouter_auth.status import Code
from agentrouter_auth.transcode import TranscodeError, request_path

log = logging.getLogger("agentrouter-auth")


class HttpApp:
    """Dispatches each HTTP request by the table of `dispatch`; runs the process's lifespan."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        built: dict[Build, App] = {}

        def app_of(build: Build) -> App:
            if build not in built:
                built[build] = build(runtime)
            return built[build]

        self._endpoints = {path: app_of(build) for path, build in ENDPOINTS.items()}
        # By path prefix, in the table's order: its rows, by Content-Type prefix.
        prefixes: dict[str, list[tuple[bytes, App]]] = {}
        for row in ROWS:
            app = app_of(row.build)
            if row.protocol is not None:
                app = Recorded(
                    app, row.protocol, runtime.recorder, access_log=runtime.config.access_log
                )
            prefixes.setdefault(row.path_prefix, []).append((row.content_type, app))
        self._prefixes = tuple((prefix, tuple(rows)) for prefix, rows in prefixes.items())
        self._errors = Representation()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            refused = head.refusal(scope)
            if refused is not None:
                await refused.send(scope, send)
                return
            try:
                await self._dispatch(scope, receive, send)
            except RequestBodyTimeoutError:
                raise  # answered 408 by BodyDeadline around this app
            except Exception:
                # Every expected failure is answered where it happens; this is the last resort.
                # Not the raw path: a client may put a credential in it.
                log.exception("unhandled error answering a %s request", method_of(scope))
                with contextlib.suppress(Exception):  # fails if the response had started
                    internal = TranscodeError(Code.INTERNAL, "internal error")
                    await self._errors.error(scope, send, internal, head=False)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # websocket connections are refused by returning without accepting

    def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The first row of the dispatch table that takes the request answers it, by the path
        as sent (an encoded `/` is no separator: see `request_path`)."""
        path = request_path(scope)
        endpoint = self._endpoints.get(path)
        if endpoint is not None:
            return endpoint(scope, receive, send)
        for prefix, rows in self._prefixes:
            if path.startswith(prefix):
                if len(rows) == 1:
                    return rows[0][1](scope, receive, send)
                content_type = header(scope, b"content-type")
                for wanted, app in rows:
                    if content_type.startswith(wanted):
                        return app(scope, receive, send)
        raise LookupError("no row of the dispatch table takes the path")  # the last takes all

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                    metrics.worker_started()
                except Exception as err:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                metrics.worker_stopped()
                await send({"type": "lifespan.shutdown.complete"})
                return
