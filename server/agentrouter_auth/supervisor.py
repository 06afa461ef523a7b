"""The supervisor of `serve`'s workers: granian's, except for what it does when a worker dies.

granian 2.8 replaces a dead worker at once, but when the same worker slot dies again within
5.5 s of being replaced it logs "Worker crash loop detected", stops every worker and exits 1
(`AbstractServer._serve_loop`; `respawn_interval` only paces SIGHUP reloads, and no setting
turns the check off). So two quick kills of one worker stopped a server whose other workers
were healthy. Here a slot whose worker keeps dying is replaced later each time, for as long as
it keeps dying, while the other workers serve; the supervisor exits only on SIGTERM/SIGINT.

A worker is forked with the supervisor's signal handlers, and runs them until it installs its
own (granian does so after loading the app, which reads the key store: that can take a while).
A SIGTERM in between ran the supervisor's handler in the worker, which set a flag nobody reads
there: the signal was lost, and the stop waited out the kill timeout and killed the worker.
So every fork of the supervisor (`_ForkSignals`) starts its child with SIGTERM at its
default action (a worker that does not serve yet has nothing to drain: it ends at once) and
SIGINT ignored (Ctrl-C is the supervisor's to act on, as `Runtime.start` keeps it), with
SIGTERM, SIGINT and SIGHUP blocked across the fork so that none lands before the child has
its own dispositions.

Everything else is granian's own: the shared sockets, spawning, SIGHUP reload (a new worker in
every slot), draining on SIGTERM/SIGINT, and workers that stop when their supervisor is gone
(`Runtime._stop_if_orphaned`: the supervisor stays their parent). granian is pinned to one
version (pyproject.toml); `_serve_loop` below replaces the method of that version and uses its
attributes (`wrks`, `interrupt_children`, `main_loop_interrupt`, the signal flags).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from granian.server.mp import MPServer, WorkerProcess

log = logging.getLogger("agentrouter-auth")
Spawner = Callable[..., Any]


@dataclass(frozen=True)
class Backoff:
    """How long a slot waits before its next worker: at once after a worker that had lived at
    least `healthy_after` seconds (a one-off death: the OOM killer, an operator's kill), then
    `first` seconds, doubling for each further quick death, at most `cap`.

    `healthy_after` equals `cap` by default: a worker that lives that long costs no more
    restarts than a slot that waits out the longest delay."""

    first: float = 1.0
    cap: float = 30.0
    healthy_after: float = 30.0

    def delay(self, quick_deaths: int) -> float:
        """Seconds to wait after the `quick_deaths`-th death in a row (1 = the first)."""
        if quick_deaths <= 1:
            return 0.0
        return float(min(self.cap, self.first * 2 ** min(quick_deaths - 2, 32)))


@dataclass
class RespawnSchedule:
    """For each worker slot: how many of its workers died in a row without living
    `backoff.healthy_after`, and when its next worker is due."""

    backoff: Backoff = field(default_factory=Backoff)
    clock: Callable[[], float] = time.monotonic
    quick_deaths: dict[int, int] = field(default_factory=dict)
    due: dict[int, float] = field(default_factory=dict)

    def died(self, slot: int, lived: float) -> float:
        """Record that the worker of `slot` died after `lived` seconds; return the seconds
        until its successor is due."""
        healthy = lived >= self.backoff.healthy_after
        deaths = 1 if healthy else self.quick_deaths.get(slot, 0) + 1
        self.quick_deaths[slot] = deaths
        delay = self.backoff.delay(deaths)
        self.due[slot] = self.clock() + delay
        return delay

    def ready(self) -> list[int]:
        """The slots whose successor is due now, the longest due first."""
        now = self.clock()
        return [slot for at, slot in sorted((at, s) for s, at in self.due.items()) if at <= now]

    def started(self, slot: int) -> None:
        """The successor of `slot` runs (or a reload replaced it): nothing is due for it."""
        self.due.pop(slot, None)

    def wait(self) -> float | None:
        """Seconds until the next successor is due; None when none is."""
        if not self.due:
            return None
        return max(0.0, min(self.due.values()) - self.clock())


_STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


@dataclass
class _ForkSignals:
    """What `os.register_at_fork` runs around each fork of the supervisor: the stop signals
    blocked in the forking thread (the child inherits that mask), then the child's own
    dispositions set before they are let through, so a signal sent to the child at any moment
    meets either a blocked mask or its final disposition, never the supervisor's handler."""

    saved: set[int | signal.Signals] = field(default_factory=set)

    def before(self) -> None:
        self.saved = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)

    def in_parent(self) -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, self.saved)

    def in_child(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.saved)


_fork_signals: _ForkSignals | None = None


def _install_fork_signals() -> None:
    """Register `_ForkSignals` once per process (registrations cannot be undone)."""
    global _fork_signals  # noqa: PLW0603 - one registration per process
    if _fork_signals is None:
        _fork_signals = _ForkSignals()
        os.register_at_fork(
            before=_fork_signals.before,
            after_in_parent=_fork_signals.in_parent,
            after_in_child=_fork_signals.in_child,
        )


class Supervisor(MPServer):
    """granian's multi-process server (same arguments) whose dead workers are replaced on a
    `RespawnSchedule` instead of a crash-loop exit. Its loop serves what `serve` uses: worker
    deaths, SIGHUP, SIGTERM/SIGINT; not granian's worker lifetime and memory limits."""

    backoff = Backoff()
    schedule: RespawnSchedule

    def startup(self, spawn_target: Spawner, target_loader: Spawner) -> None:
        """granian's startup (signal handlers, sockets, the first workers), every worker
        forked with its own stop signals (`_ForkSignals`)."""
        _install_fork_signals()
        super().startup(spawn_target, target_loader)  # type: ignore[no-untyped-call]

    def _serve_loop(self, spawn_target: Spawner, target_loader: Spawner) -> None:
        """Until SIGTERM/SIGINT: note each worker that died, start successors as they fall
        due, and reload on SIGHUP. The flags are read after the event is cleared: a signal
        handler or worker watcher sets its flag before the event, so none is missed."""
        if self.workers_lifetime is not None or self.workers_rss is not None:
            raise ValueError("Supervisor handles neither workers_lifetime nor workers_max_rss")
        self.schedule = RespawnSchedule(self.backoff)
        while True:
            if not self.interrupt_children:  # granian's reload clears the event: check first
                self.main_loop_interrupt.wait(self.schedule.wait())
            self.main_loop_interrupt.clear()
            if self.interrupt_signal:
                # Stopping: workers that died meanwhile are not respawned, and not a failure.
                self.interrupt_children.clear()
                return
            self._note_deaths()
            for slot in self.schedule.ready():
                self._replace(slot, spawn_target, target_loader)
            if self.reload_signal:
                self._reload(spawn_target, target_loader)  # type: ignore[no-untyped-call]
                for worker in self.wrks:
                    self.schedule.started(worker.idx)

    def _note_deaths(self) -> None:
        """Schedule a successor for each slot whose worker died unasked."""
        while self.interrupt_children:
            slot = self.interrupt_children.pop(0)
            worker = self.wrks[slot]
            if worker.inner.is_alive() or slot in self.schedule.due:
                continue  # an earlier worker of the slot, already replaced (SIGHUP)
            self._schedule_successor(worker, time.monotonic() - worker.birth)

    def _schedule_successor(self, worker: WorkerProcess, lived: float) -> None:
        """Log the death of `worker` after `lived` seconds, and when its successor starts."""
        delay = self.schedule.died(worker.idx, lived)
        deaths = self.schedule.quick_deaths[worker.idx]
        log.error(
            "worker-%d (pid %s) exited %s after %.1f s (quick deaths in a row: %d): "
            "starting another in %g s",
            worker.idx + 1,
            worker.inner.pid,
            worker.inner.exitcode,
            lived,
            deaths,
            delay,
            extra={
                "event": "worker_died",
                "slot": worker.idx + 1,
                "pid": worker.inner.pid,
                "exit_code": worker.inner.exitcode,
                "lived_seconds": round(lived, 3),
                "quick_deaths": deaths,
                "delay_seconds": delay,
            },
        )

    def _replace(self, slot: int, spawn_target: Spawner, target_loader: Spawner) -> None:
        """Start a new worker in `slot`, whose worker is dead; a failed start (fork refused)
        counts as another quick death."""
        dead = self.wrks[slot]
        if dead.inner.is_alive():  # replaced meanwhile
            self.schedule.started(slot)
            return
        log.info("Respawning worker-%d", slot + 1)
        try:
            worker = self._spawn_worker(
                idx=slot, target=spawn_target, callback_loader=target_loader
            )
            worker.start()  # type: ignore[no-untyped-call]
        except OSError as err:
            log.error(
                "worker-%d could not be started: %s",
                slot + 1,
                err,
                extra={"event": "worker_start_failed", "slot": slot + 1, "reason": str(err)},
            )
            self._schedule_successor(dead, 0.0)
            return
        self.wrks[slot] = worker
        self.schedule.started(slot)
        self._metrics.incr_spawn(1)
        self._metrics.incr_respawn_err(1)
