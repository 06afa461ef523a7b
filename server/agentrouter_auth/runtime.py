"""What runs beside the HTTP app in each server process: the gRPC listener and the key ring's
upkeep (rotation steps and reloads), started and stopped by the ASGI lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterable
from dataclasses import asdict

from agentrouter_auth import metrics
from agentrouter_auth.config import SUPERVISOR_ENV, Address, ServeConfig
from agentrouter_auth.grpc.recording import PROTOCOL
from agentrouter_auth.grpc.server import GrpcServer, start_grpc_server
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import KeyStoreError
from agentrouter_auth.rendered import Freshness
from agentrouter_auth.service import AuthService, Discovery

log = logging.getLogger("agentrouter-auth")
FIRST_LOAD_RETRY_SECONDS = 0.25
"""The first retry's delay while no key set could be loaded yet; each retry doubles it, up to
the reload interval."""


class Runtime:
    """The key ring, the servicer, the gRPC server and the upkeep task of one process.

    `protocols` are the metrics' `protocol` labels of the HTTP listener (its dispatch table's,
    handed in by whoever builds the app, as the listener sits above this runtime); native
    gRPC's own label is added here."""

    def __init__(self, config: ServeConfig, ring: KeyRing, protocols: Iterable[str]) -> None:
        self.config = config
        self.ring = ring
        policy = ring.policy
        freshness = Freshness(
            policy.cache_max_age, policy.stale_while_revalidate, policy.stale_if_error
        )
        discovery = Discovery(config.issuer, config.published_jwks_uri) if config.issuer else None
        self.service = AuthService(ring, freshness=freshness, discovery=discovery)
        self.recorder = metrics.Recorder((*protocols, PROTOCOL))
        self.grpc: GrpcServer | None = None
        self.draining = False
        self._upkeep: asyncio.Task[None] | None = None
        self._supervisor: int | None = None

    async def start(self) -> None:
        """Start the gRPC listener and the upkeep task."""
        if os.environ.get(SUPERVISOR_ENV) == str(os.getppid()):
            # A worker of `serve`: Ctrl-C reaches the terminal's whole process group, and a
            # worker that stopped on it before its supervisor did would look like a crash to
            # respawn. The supervisor stops its workers (SIGTERM) itself.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._supervisor = os.getppid()
        loaded = self.ring.status().loaded
        if loaded and self.config.auto_rotate:
            # A store that cannot be written (a read-only mount) would never rotate: say so
            # from start, not when the first step falls due weeks from now.
            await asyncio.to_thread(self.ring.check_writable)
        self.ring.check_clock()
        self.grpc = await start_grpc_server(
            self.service,
            self.config.grpc_addr.host,
            self.config.grpc_addr.port,
            tls=self.config.tls,
            recorder=self.recorder,
            limits=self.config.grpc_limits,
        )
        grpc_addr = Address(self.config.grpc_addr.host, self.grpc.port)
        if not loaded:  # the store was unreachable: serve once the upkeep loads a set
            await self.grpc.set_serving(False)
        await self.grpc.set_keyring_health(self.ring.status().serving)
        kids = list(self.ring.snapshot().kids) if loaded else []
        log.info(
            "HTTP listening on %s, gRPC listening on %s (keys: %s)",
            self.config.http_addr,
            grpc_addr,
            ", ".join(kids) or "none loaded yet",
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
        """Every reload interval, or as soon as the store announces a change: take due rotation
        steps, then pick up any store change. Until a first key set is loaded (the store was
        unreachable at start), retry sooner, backing off up to the reload interval.

        The store is only written when the loaded set says a step is due: a transaction re-reads the
        store under its exclusive lock, which every other worker's reload would wait for, and a step
        from a store that cannot be read (say, its manifest is missing) is refused rather than
        taken.
        """
        failures_seen = self.ring.reload_failures
        feed = self.ring.store.change_feed()
        attempts = 0
        try:
            while True:
                loaded = self.ring.status().loaded
                delay = self.config.reload_interval
                if not loaded:
                    delay = min(delay, FIRST_LOAD_RETRY_SECONDS * 2**attempts)
                    attempts += 1
                await (asyncio.sleep(delay) if feed is None else feed.wait(delay))
                self._stop_if_orphaned()
                if self.config.auto_rotate and loaded:
                    if self.ring.due():
                        await self._take_due_steps()
                    elif self.ring.status().rotation_error is not None:
                        # Nothing is due: has the store become writable again?
                        await asyncio.to_thread(self.ring.check_writable)
                self.recorder.flush()
                await asyncio.to_thread(self.ring.refresh)
                if self.ring.reload_failures > failures_seen:
                    metrics.RELOAD_FAILURES.inc(self.ring.reload_failures - failures_seen)
                    failures_seen = self.ring.reload_failures
                if self.config.auto_rotate and not loaded and self.ring.status().loaded:
                    await asyncio.to_thread(self.ring.check_writable)  # the start's check, late
                self.ring.check_clock()
                status = self.ring.status()
                if self.grpc is not None:
                    if status.loaded and not loaded:
                        await self.grpc.set_serving(True)
                    await self.grpc.set_keyring_health(status.serving)
        finally:
            if feed is not None:
                await feed.close()

    def _stop_if_orphaned(self) -> None:
        """A worker whose supervisor died (SIGKILL, OOM) drains and exits: nothing else would
        tell it, and it would hold its ports and serve on, unsupervised, for ever."""
        if self._supervisor is not None and os.getppid() != self._supervisor:
            log.error(
                "the supervisor (pid %s) is gone: stopping this worker",
                self._supervisor,
                extra={"event": "supervisor_gone", "pid": os.getpid()},
            )
            self._supervisor = None
            os.kill(os.getpid(), signal.SIGTERM)  # granian's own graceful stop

    async def _take_due_steps(self) -> None:
        """Apply the due lifecycle steps. A failure is kept by the ring (keyring health turns
        NOT_SERVING until a step succeeds) and logged by it once; the step is tried again at
        the next interval, as it stays due."""
        try:
            changes = await asyncio.to_thread(self.ring.step)
        except (KeyStoreError, OSError):
            return
        for change in changes:
            extra = {"event": "rotation_step", "pid": os.getpid(), **change.fields()}
            log.info("rotation step applied: %s", change, extra=extra)
