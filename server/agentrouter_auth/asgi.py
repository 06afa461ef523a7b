"""`create_app`: the ASGI app configured from AGENTROUTER_AUTH_* environment variables.

`agentrouter-auth serve` runs it under granian (one instance per worker process). Any other
ASGI server can run it too, for example:

    AGENTROUTER_AUTH_KEY_STORE=/keys uvicorn --factory agentrouter_auth.asgi:create_app

The configuration comes from the environment alone (`config.from_environment`): no command
line is parsed here.
"""

from __future__ import annotations

import contextlib
import os

from agentrouter_auth import logs
from agentrouter_auth.config import SUPERVISOR_ENV, from_environment
from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.dispatch import PROTOCOLS
from agentrouter_auth.http.limits import BodyDeadline
from agentrouter_auth.keys.registry import open_store
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import KeyStoreError, KeyStoreUnavailableError
from agentrouter_auth.runtime import Runtime


def create_app() -> BodyDeadline:
    """Validate the configuration, load the key ring and build the app."""
    config = from_environment(os.environ)
    logs.configure(config.log_format)
    store = open_store(config.key_store, keks=config.keks)
    ring = KeyRing(store, config.policy, rsa_bits=config.rsa_bits, rotating=config.auto_rotate)
    # The upkeep retries until it loads. A worker of `serve` also waits out a refusal (a
    # state older than one a sibling accepted, keys.postgres.memory): its supervisor loaded
    # the store at start, and a worker that exits on it would only be respawned to fail again.
    worker = SUPERVISOR_ENV in os.environ
    with contextlib.suppress(KeyStoreError if worker else KeyStoreUnavailableError):
        ring.load()
    return BodyDeadline(HttpApp(Runtime(config, ring, PROTOCOLS)), config.http_limits.body_timeout)
