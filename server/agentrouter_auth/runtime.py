"""What runs beside the HTTP app in each server process: the gRPC listener and the key ring's
upkeep (rotation steps and reloads), started and stopped by the ASGI lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from agentrouter_auth.config import Address, ServeConfig
from agentrouter_auth.grpc_server import GrpcServer, start_grpc_server
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import KeyStoreError
from agentrouter_auth.service import AuthService

log = logging.getLogger("agentrouter-auth")


class Runtime:
    """The key ring, the servicer, the gRPC server and the upkeep task of one process."""

    def __init__(self, config: ServeConfig, ring: KeyRing) -> None:
        self.config = config
        self.ring = ring
        self.service = AuthService(ring, cache_control=ring.policy.cache_control)
        self.grpc: GrpcServer | None = None
        self.draining = False
        self._upkeep: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the gRPC listener and the upkeep task."""
        self.grpc = await start_grpc_server(
            self.service, self.config.grpc_addr.host, self.config.grpc_addr.port
        )
        grpc_addr = Address(self.config.grpc_addr.host, self.grpc.port)
        log.info(
            "HTTP listening on %s, gRPC listening on %s (keys: %s)",
            self.config.http_addr,
            grpc_addr,
            ", ".join(self.ring.snapshot().kids),
        )
        self._upkeep = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        """Report NOT_SERVING, stop the upkeep, and drain gRPC calls within the grace period."""
        self.draining = True
        log.info("stopping: draining for up to %ss", self.config.grace_seconds)
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        if self.grpc is not None:
            await self.grpc.stop(self.config.grace_seconds)
        log.info("stopped")

    async def _maintain(self) -> None:
        """Every reload interval: take due rotation steps, then pick up any store change."""
        last_error = ""
        while True:
            await asyncio.sleep(self.config.reload_interval)
            if self.config.auto_rotate:
                try:
                    for change in await asyncio.to_thread(self.ring.step):
                        log.info("rotation step applied: %s", change)
                    last_error = ""
                except (KeyStoreError, OSError) as err:
                    if str(err) != last_error:
                        log.error("rotation step failed: %s", err)
                    last_error = str(err)
            await asyncio.to_thread(self.ring.refresh)
            if self.grpc is not None:
                await self.grpc.set_keyring_health(self.ring.status().healthy)
