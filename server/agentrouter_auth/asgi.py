"""`create_app`: the ASGI app configured from AGENTROUTER_AUTH_* environment variables.

`agentrouter-auth serve` runs it under granian (one instance per worker process). Any other
ASGI server can run it too, for example:

    AGENTROUTER_AUTH_KEYS_DIR=/keys uvicorn --factory agentrouter_auth.asgi:create_app
"""

from __future__ import annotations

import os

from agentrouter_auth import logs
from agentrouter_auth.cli import serve_setup_from_environment
from agentrouter_auth.http_app import HttpApp
from agentrouter_auth.request_limits import BodyDeadline
from agentrouter_auth.runtime import Runtime


def create_app() -> BodyDeadline:
    """Validate the configuration, load the key ring and build the app."""
    logs.configure(os.environ.get("AGENTROUTER_AUTH_LOG_FORMAT", "json"))
    config, ring = serve_setup_from_environment()
    return BodyDeadline(HttpApp(Runtime(config, ring)), config.http_limits.body_timeout)
