"""What runs beside the HTTP app in each server process: the gRPC listener and the key ring's
upkeep (rotation steps and reloads), started and stopped by the ASGI lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import asdict

from agentrouter_auth import metrics
from agentrouter_auth.config import SUPERVISOR_ENV, Address, ServeConfig
from agentrouter_auth.grpc_server import PROTOCOL, GrpcServer, start_grpc_server
from agentrouter_auth.http.dispatch import PROTOCOLS
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import KeyStoreError
from agentrouter_auth.rendered import Freshness
from agentrouter_auth.service import AuthService, Discovery

log = logging.getLogger("agentrouter-auth")


class Runtime:
    """The key ring, the servicer, the gRPC server and the upkeep task of one process."""

    def __init__(self, config: ServeConfig, ring: KeyRing) -> None:
        self.config = config
        self.ring = ring
        policy = ring.policy
        freshness = Freshness(
            policy.cache_max_age, policy.stale_while_revalidate, policy.stale_if_error
        )
        discovery = Discovery(config.issuer, config.published_jwks_uri) if config.issuer else None
        self.service = AuthService(ring, freshness=freshness, discovery=discovery)
        self.recorder = metrics.Recorder((*PROTOCOLS, PROTOCOL))
        self.grpc: GrpcServer | None = None
        self.draining = False
        self._upkeep: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the gRPC listener and the upkeep task."""
        if os.environ.get(SUPERVISOR_ENV) == str(os.getppid()):
            # A worker of `serve`: Ctrl-C reaches the terminal's whole process group, and a
            # worker that stopped on it before its supervisor did would look like a crash to
            # respawn. The supervisor stops its workers (SIGTERM) itself.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.grpc = await start_grpc_server(
            self.service,
            self.config.grpc_addr.host,
            self.config.grpc_addr.port,
            tls=self.config.tls,
            recorder=self.recorder,
            limits=self.config.grpc_limits,
        )
        grpc_addr = Address(self.config.grpc_addr.host, self.grpc.port)
        kids = list(self.ring.snapshot().kids)
        log.info(
            "HTTP listening on %s, gRPC listening on %s (keys: %s)",
            self.config.http_addr,
            grpc_addr,
            ", ".join(kids),
            extra={
                "event": "listening",
                "pid": os.getpid(),
                "http": str(self.config.http_addr),
                "grpc": str(grpc_addr),
                "tls": self.config.tls is not None,
                "key_store": self.ring.store.description,
                "kids": kids,
                "policy": asdict(self.ring.policy),
            },
        )
        self._upkeep = asyncio.create_task(self._maintain())

    async def stop(self) -> None:
        """Report NOT_SERVING, stop the upkeep, and drain gRPC calls within the grace period."""
        self.draining = True
        log.info(
            "stopping: draining for up to %ss",
            self.config.grace_seconds,
            extra={"event": "stopping", "pid": os.getpid()},
        )
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        if self.grpc is not None:
            await self.grpc.stop(self.config.grace_seconds)
        self.recorder.flush()
        log.info("stopped", extra={"event": "stopped", "pid": os.getpid()})

    async def _maintain(self) -> None:
        """Every reload interval: take due rotation steps, then pick up any store change.

        The store is only written when the loaded set says a step is due: a transaction re-reads the
        store under its exclusive lock, which every other worker's reload would wait for, and a step
        from a store that cannot be read (say, its manifest is missing) is refused rather than
        taken.
        """
        last_error, failures_seen = "", self.ring.reload_failures
        while True:
            await asyncio.sleep(self.config.reload_interval)
            if self.config.auto_rotate and self.ring.due():
                try:
                    for change in await asyncio.to_thread(self.ring.step):
                        extra = {"event": "rotation_step", "pid": os.getpid(), **change.fields()}
                        log.info("rotation step applied: %s", change, extra=extra)
                    last_error = ""
                except (KeyStoreError, OSError) as err:
                    if str(err) != last_error:
                        log.error(
                            "rotation step failed: %s",
                            err,
                            extra={"event": "rotation_step_failed", "reason": str(err)},
                        )
                    last_error = str(err)
            self.recorder.flush()
            await asyncio.to_thread(self.ring.refresh)
            if self.ring.reload_failures > failures_seen:
                metrics.RELOAD_FAILURES.inc(self.ring.reload_failures - failures_seen)
                failures_seen = self.ring.reload_failures
            if self.grpc is not None:
                await self.grpc.set_keyring_health(self.ring.status().healthy)
