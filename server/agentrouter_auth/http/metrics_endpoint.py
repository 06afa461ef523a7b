"""/metrics: every worker's request counters (summed) and this worker's key-set gauges."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentrouter_auth import metrics
from agentrouter_auth.asgi_types import App, Receive, Scope, Send
from agentrouter_auth.http.representation import send_uncached

if TYPE_CHECKING:
    from agentrouter_auth.runtime import Runtime


def metrics_endpoint(runtime: Runtime) -> App:
    """The Prometheus text exposition, with this worker's latest counts added first."""
    registry = metrics.registry_for(runtime.ring, reload_interval=runtime.config.reload_interval)

    async def scrape(scope: Scope, receive: Receive, send: Send) -> None:
        runtime.recorder.flush()
        body = metrics.exposition(registry)
        await send_uncached(send, 200, metrics.CONTENT_TYPE, body)

    return scrape
