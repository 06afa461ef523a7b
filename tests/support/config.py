"""The configuration of one worker for tests that build the app in-process (no `serve`): fixed
loopback addresses (nothing is bound), a short grace period and reload interval."""

from __future__ import annotations

from agentrouter_auth.config import Address, ServeConfig
from agentrouter_auth.keys.policy import Policy


def worker_config(key_store: str, policy: Policy, *, auto_rotate: bool = False) -> ServeConfig:
    """A worker's `ServeConfig` for the store at `key_store`, rotating under `policy`."""
    return ServeConfig(
        key_store=key_store,
        http_addr=Address("127.0.0.1", 8080),
        grpc_addr=Address("127.0.0.1", 9090),
        grace_seconds=1,
        reload_interval=1,
        auto_rotate=auto_rotate,
        policy=policy,
    )
