"""`create_app`: the ASGI app configured from AGENTROUTER_AUTH_* environment variables.

`agentrouter-auth serve` runs it under granian (one instance per worker process). Any other
ASGI server can run it too, for example:

    AGENTROUTER_AUTH_KEYS_DIR=/keys uvicorn --factory agentrouter_auth.asgi:create_app
"""

from __future__ import annotations

from agentrouter_auth.cli import configure_logging, serve_setup_from_environment
from agentrouter_auth.http_app import HttpApp
from agentrouter_auth.runtime import Runtime


def create_app() -> HttpApp:
    """Validate the configuration, load the key ring and build the app."""
    configure_logging()
    config, ring = serve_setup_from_environment()
    return HttpApp(Runtime(config, ring))
