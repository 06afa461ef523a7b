"""When lifecycle steps fall due: pure functions of the entries, the policy and the time.

A key is created `publish_ahead` before its algorithm's active key has signed for
`rotation_period`, promoted once published for `publish_ahead`, and deleted once retired for
`retain_after`; a key dated in the future (a clock went back) is dated now. Nothing here reads a
store or a clock: the ring asks, then takes the steps in a transaction (`keys.transitions`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.store import Entry, Origin, State


class Action(Enum):
    """A lifecycle step the policy calls for."""

    CREATE = "create"  # pre-publish a new pending key for an algorithm
    PROMOTE = "promote"  # a pending key starts signing; the active one of its alg retires
    DELETE = "delete"  # a retired key has outlived every token it signed
    REDATE = "redate"  # a key dated in the future (a clock went back) is dated now


@dataclass(frozen=True, slots=True)
class Step:
    """One due lifecycle step: `subject` is an algorithm for CREATE, else a kid."""

    action: Action
    subject: str


def scheduled_steps(entries: Iterable[Entry], policy: Policy) -> list[tuple[Step, float]]:
    """Every lifecycle step the policy will call for on this manifest, with the Unix time
    from which it is due (a pure function of the manifest).

    Per algorithm with a generated key: a successor is pre-published `publish_ahead` before the
    active key's `rotation_period` ends, and promoted once it has been published for
    `publish_ahead`, whenever it was created (so a manual rotation is as safe as a scheduled
    one). Retired keys go `retain_after` after they stopped signing.
    """
    steps: list[tuple[Step, float]] = []
    entries = sorted(entries, key=lambda e: (e.created, e.kid))
    generated = [e for e in entries if e.origin is Origin.GENERATED]
    for alg in sorted({e.alg for e in generated}):
        pending = [e for e in generated if e.alg == alg and e.state is State.PENDING]
        active = [e for e in generated if e.alg == alg and e.state is State.ACTIVE]
        if pending:
            at = pending[0].created + policy.publish_ahead
            steps.append((Step(Action.PROMOTE, pending[0].kid), at))
        elif active:
            since = active[0].activated if active[0].activated is not None else active[0].created
            steps.append(
                (Step(Action.CREATE, alg), since + policy.rotation_period - policy.publish_ahead)
            )
    for entry in entries:
        if entry.state is State.RETIRED:
            retired = entry.retired if entry.retired is not None else entry.created
            steps.append((Step(Action.DELETE, entry.kid), retired + policy.retain_after))
    return steps


def future_dated(entries: Iterable[Entry], now: float, policy: Policy) -> list[Entry]:
    """The entries with a time later than `now` plus the policy's clock skew: written by a
    process whose clock ran ahead (or by a replica whose clock still does)."""
    limit = now + policy.clock_skew
    return [entry for entry in entries if latest(entry) > limit]


def latest(entry: Entry) -> int:
    return max(t for t in (entry.created, entry.activated, entry.retired) if t is not None)


def due_steps(entries: Iterable[Entry], now: float, policy: Policy) -> list[Step]:
    """The lifecycle steps the policy calls for at `now`."""
    return [step for step, at in scheduled_steps(entries, policy) if now >= at]


def upkeep_steps(entries: Iterable[Entry], now: float, policy: Policy) -> list[Step]:
    """What a rotation step does at `now`: re-date the keys dated in the future (REDATE),
    then the due lifecycle steps.

    A key dated in the future would hold its own schedule back until the clock caught up with
    it, years perhaps; it is dated `now` instead. That never makes a key sign sooner: a
    pending key re-dated now signs `publish_ahead` from now, later in real time than its own
    schedule from when it really was published.
    """
    entries = list(entries)
    redate = [Step(Action.REDATE, entry.kid) for entry in future_dated(entries, now, policy)]
    return redate + due_steps(entries, now, policy)


def next_step_at(entries: Iterable[Entry], policy: Policy) -> float | None:
    """When the policy next calls for a lifecycle step (Unix seconds); None for never."""
    return min((at for _, at in scheduled_steps(entries, policy)), default=None)


def next_events(entries: Iterable[Entry], policy: Policy) -> dict[str, tuple[str, int]]:
    """What the policy does next to each key it will change, and when (Unix seconds), by kid:
    `signs` (a pending key is promoted), `retires` (its successor is promoted), `successor`
    (a successor is pre-published), `deleted` (a retired key goes)."""
    entries = list(entries)
    active = {e.alg: e.kid for e in entries if e.state is State.ACTIVE}
    events: dict[str, tuple[str, int]] = {}
    for step, at in scheduled_steps(entries, policy):
        if step.action is Action.PROMOTE:
            events[step.subject] = ("signs", int(at))
            alg = next(e.alg for e in entries if e.kid == step.subject)
            if alg in active:
                events[active[alg]] = ("retires", int(at))
        elif step.action is Action.CREATE:
            events[active[step.subject]] = ("successor", int(at))
        else:
            events[step.subject] = ("deleted", int(at))
    return events
