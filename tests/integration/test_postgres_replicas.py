"""Three real servers sharing one PostgreSQL key ring through a stretch of fast rotation.

Every replica runs `--rotation auto` with a policy that takes a key through its whole life
(pre-published, signing, retired, deleted) every few seconds, and the default
`--reload-interval` (2 s): a change must reach the other replicas through LISTEN/NOTIFY, since
the poll alone would take up to two seconds. Meanwhile every replica's JWKS is polled about
every 100 ms, and `agentrouter-auth token sign` signs a token every few seconds against the same
store. When each change was committed comes from the `rotation_step` log line of the replica
that took the step (written right after its commit).

Checked at the end: every answer was a 200 and no replica logged an error; each lifecycle step
was taken exactly once, one successor at a time, about once per rotation period; once a key has
been signing for `WINDOW`, every answer of every replica holds it; every change to the set
(a key added, a key deleted) reaches every replica's answers within `WINDOW` of its commit; every
token verifies (PyJWT, key looked up by `kid`) against the set each replica serves right after
signing. The delays measured are printed (`pytest -s`).
"""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import pytest

from .serverproc import AGENTROUTER_AUTH, ServerProcess

DURATION = 60.0
"""Seconds of rotation under observation, the minute the issue asks for: a new key signs about
every 4.1 s, so about fourteen rotations, each key created, promoted, retired and deleted (the
test takes about 70 s in all, starting and stopping the servers included; ~25 s of CPU)."""
REPLICAS = 3
WINDOW = 1.0
"""How long a change may take to reach every replica's answers (the issue's "within a second")."""
POLL_EVERY = 0.1
"""Each replica's JWKS is fetched this often."""
SIGN_EVERY = 3.0
"""`token sign` runs this often (each run is a fresh CLI process: about a second of CPU)."""
ROTATION_PERIOD = 4.0
POLICY = [
    "--rotation-period", f"{ROTATION_PERIOD:g}s", "--publish-ahead", "2s", "--retain-after", "2s",
    "--max-token-ttl", "1s", "--clock-skew", "0s", "--cache-max-age", "0s",
    "--stale-while-revalidate", "0s",
]  # fmt: skip
RELOAD_INTERVAL = 2.0
"""The server's default `--reload-interval`; not passed, only used to bound the step cadence."""
JWKS = "/.well-known/jwks.json"

pytestmark = [pytest.mark.integration, pytest.mark.timeout(DURATION + 120)]


@dataclass(frozen=True, slots=True)
class Answer:
    """One JWKS fetch: `status` 0 when no answer came (the reason in `error`)."""

    replica: int
    sent: float
    received: float
    status: int
    kids: frozenset[str]
    error: str = ""


@dataclass(frozen=True, slots=True)
class StepLine:
    """A `rotation_step` log record: `kid` went from `before` to `after` at `at` (Unix time)."""

    replica: int
    at: float
    kid: str
    before: str
    after: str


def cli(*args: str) -> str:
    result = subprocess.run(
        [*AGENTROUTER_AUTH, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{args[:2]} exited {result.returncode}: {result.stderr}"
    return result.stdout


def serve(pg_dsn: str, kek_file: Path) -> list[str]:
    return [*AGENTROUTER_AUTH, "serve", "--key-store", pg_dsn, "--kek-file", str(kek_file),
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0", "--rotation", "auto",
            *POLICY]  # fmt: skip


def unix_time(stamp: str) -> float:
    """A log record's `time` (UTC, milliseconds) as Unix seconds."""
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def poll(replica: int, base_url: str, stop: threading.Event, answers: list[Answer]) -> None:
    """Fetch `base_url`'s JWKS every POLL_EVERY until `stop`, recording every answer."""
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            sent = time.time()
            try:
                reply = client.get(base_url + JWKS)
                kids = (
                    frozenset(k["kid"] for k in reply.json()["keys"]) if reply.is_success else None
                )
                answers.append(
                    Answer(replica, sent, time.time(), reply.status_code, kids or frozenset())
                )
            except (httpx.HTTPError, ValueError, KeyError) as err:
                answers.append(Answer(replica, sent, time.time(), 0, frozenset(), repr(err)))
            stop.wait(max(0.0, sent + POLL_EVERY - time.time()))


def verify(token: str, jwks: dict[str, Any]) -> str | None:
    """Verify `token` with the key of its `kid` in `jwks`: None, or why it does not verify."""
    header = pyjwt.get_unverified_header(token)
    by_kid = {key["kid"]: key for key in jwks["keys"]}
    if header["kid"] not in by_kid:
        return f"kid {header['kid']} is not in the set {sorted(by_kid)}"
    key = pyjwt.PyJWK.from_dict(by_kid[header["kid"]])
    try:
        # `exp` is `iat` + 1 s in whole seconds, so it may pass before this runs: the signature
        # and the key lookup are what is checked here.
        claims = pyjwt.decode(token, key=key, algorithms=[header["alg"]], leeway=5)
    except pyjwt.InvalidTokenError as err:
        return f"kid {header['kid']}: {type(err).__name__}: {err}"
    return None if claims.get("sub") == "replica-test" else f"claims {claims}"


def percentile(values: Sequence[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(percent / 100 * len(ordered)) - 1)]


@pytest.mark.slow
def test_three_replicas_rotating_fast_serve_every_signing_key_and_take_each_step_once(
    pg_dsn: str, kek_file: Path
) -> None:
    store = ["--key-store", pg_dsn, "--kek-file", str(kek_file)]
    cli("keys", "init", *store, *POLICY)
    (first,) = json.loads(cli("keys", "list", "--json", *store))["keys"]
    answers: list[Answer] = []
    tokens: list[tuple[float, str, list[str]]] = []  # (signed at, kid, failures)
    stop = threading.Event()
    with ExitStack() as stack:
        servers = [
            stack.enter_context(ServerProcess(serve(pg_dsn, kek_file))) for _ in range(REPLICAS)
        ]
        pollers = [
            threading.Thread(target=poll, args=(i, s.base_url, stop, answers), daemon=True)
            for i, s in enumerate(servers)
        ]
        for thread in pollers:
            thread.start()
        started = time.time()
        try:
            with httpx.Client(timeout=5) as client:
                while time.time() < started + DURATION:
                    claims = json.dumps({"sub": "replica-test", "n": len(tokens)})
                    token = cli("token", "sign", *store, *POLICY, "--claims", claims).strip()
                    signed = time.time()
                    failures = []
                    for offset in range(REPLICAS):  # each replica's set, a different one first
                        replica = (len(tokens) + offset) % REPLICAS
                        jwks = client.get(servers[replica].base_url + JWKS).json()
                        failure = verify(token, jwks)
                        if failure is not None:
                            failures.append(f"replica {replica}: {failure}")
                    kid = str(pyjwt.get_unverified_header(token)["kid"])
                    tokens.append((signed, kid, failures))
                    time.sleep(max(0.0, signed + SIGN_EVERY - time.time()))
        finally:
            stop.set()
            for thread in pollers:
                thread.join(timeout=10)
        ended = time.time()
        for server in servers:
            assert server.terminate() == 0
    records = [server.events() for server in servers]

    # No replica ever failed to answer, or logged an error.
    bad = [a for a in answers if a.status != 200]
    assert not bad, f"{len(bad)} answers were not 200, first: {bad[:3]}"
    errors = [
        (i, r)
        for i, rs in enumerate(records)
        for r in rs
        if r.get("level") in {"error", "critical"}
    ]
    assert not errors, errors[:5]
    for server in servers:
        text = [line for line in server.lines if not line.startswith("{")]
        assert not text, f"non-JSON output (a traceback?): {text[:5]}"

    # Each lifecycle step was applied exactly once, by one replica, one successor at a time.
    steps = sorted(
        (StepLine(i, unix_time(r["time"]), r["kid"], r["from"], r["to"])
         for i, rs in enumerate(records) for r in rs if r.get("event") == "rotation_step"),
        key=lambda step: step.at,
    )  # fmt: skip
    taken = Counter((s.kid, s.before, s.after) for s in steps)
    assert taken, "no rotation step was taken"
    assert max(taken.values()) == 1, [k for k, n in taken.items() if n > 1]
    created = [s.kid for s in steps if s.after == "pending"]
    assert len(created) == len(set(created)), created
    assert first["kid"] not in created
    order = [s.after for s in steps if s.after in {"pending", "active"}]
    assert order == ["pending", "active"] * (len(order) // 2) + ["pending"] * (len(order) % 2), (
        f"not one successor at a time: {order}"
    )
    life: dict[str, dict[str, float]] = {first["kid"]: {"active": -math.inf}}
    for s in steps:
        life.setdefault(s.kid, {})[s.after] = s.at
    promoted = [kid for kid, times in life.items() if "active" in times]
    assert len(promoted) - 1 >= 5, f"only {len(promoted) - 1} rotations in {DURATION:g} s"
    # One key per rotation period: a successor is due `rotation_period` after its predecessor's
    # due time, counted in whole seconds, so N keys take at least (N - 1) periods less a second.
    # Nor may rotation stall: each of a period's two steps waits at most one reload interval
    # for the next upkeep tick.
    creations = [s.at for s in steps if s.after == "pending"]
    most = math.floor((creations[-1] - creations[0] + 1) / ROTATION_PERIOD) + 1
    fewest = math.floor((steps[-1].at - steps[0].at) / (ROTATION_PERIOD + 2 * RELOAD_INTERVAL))
    assert fewest <= len(created) <= most, (len(created), fewest, most)

    # Once a key signs for WINDOW, every answer of every replica holds it until it retires.
    late = [
        (a.replica, kid, round(a.sent - times["active"], 3))
        for kid, times in life.items()
        if "active" in times
        for a in answers
        if times["active"] + WINDOW <= a.sent < times.get("retired", math.inf) and kid not in a.kids
    ]
    assert not late, f"{len(late)} answers lacked a signing key: {late[:10]}"

    # Every change to the set reaches every replica's answers within WINDOW of its commit.
    unseen = [
        (a.replica, kid, "added", round(a.sent - times["pending"], 3))
        for kid, times in life.items()
        if "pending" in times
        for a in answers
        if times["pending"] + WINDOW <= a.sent < times.get("deleted", math.inf)
        and kid not in a.kids
    ] + [
        (a.replica, kid, "deleted", round(a.sent - times["deleted"], 3))
        for kid, times in life.items()
        if "deleted" in times
        for a in answers
        if a.sent >= times["deleted"] + WINDOW and kid in a.kids
    ]  # fmt: skip
    assert not unseen, (
        f"{len(unseen)} answers missed a change older than {WINDOW:g} s: {unseen[:10]}"
    )

    # Every token verifies against what every replica served right after it was signed.
    assert len(tokens) >= DURATION / SIGN_EVERY / 2, len(tokens)
    failed = [(round(at - started, 1), kid, failures) for at, kid, failures in tokens if failures]
    assert not failed, failed
    assert len({kid for _, kid, _ in tokens}) >= 3, "tokens were not signed by successive keys"

    report(life, answers, records, steps, tokens, started, ended)


def report(
    life: dict[str, dict[str, float]],
    answers: list[Answer],
    records: list[list[dict[str, Any]]],
    steps: list[StepLine],
    tokens: list[tuple[float, str, list[str]]],
    started: float,
    ended: float,
) -> None:
    """Print the measured delays (seen with `pytest -s`)."""
    served: list[float] = []  # commit -> first answer holding the key, per (key, replica)
    everywhere: list[float] = []  # commit -> held by every replica, per key
    loaded: list[float] = []  # commit -> the replica's `key_state_changed` line, per (key, replica)
    lead: list[float] = []  # how long before activation every replica already served the key
    for kid, times in life.items():
        if "pending" not in times or times["pending"] < started:
            continue
        firsts = []
        for replica in range(REPLICAS):
            first = min(
                (a.received for a in answers if a.replica == replica and kid in a.kids),
                default=math.inf,
            )
            firsts.append(first - times["pending"])
            loaded += [
                unix_time(r["time"]) - times["pending"]
                for r in records[replica]
                if r.get("event") == "key_state_changed"
                and r["kid"] == kid
                and r["to"] == "pending"
            ][:1]
        served += firsts
        everywhere.append(max(firsts))
        if "active" in times:
            lead.append(times["active"] - (times["pending"] + max(firsts)))
    periods = [
        life[b]["active"] - life[a]["active"]
        for a, b in zip(list(life), list(life)[1:], strict=False)
        if "active" in life[b] and life[a]["active"] > -math.inf
    ]
    mean = sum(periods) / len(periods)
    print(
        f"\n{REPLICAS} replicas, {ended - started:.1f} s, {len(answers)} JWKS answers, "
        f"{len(steps)} rotation steps, {len(tokens)} tokens; "
        f"a key signed for {min(periods):.2f}-{max(periods):.2f} s (mean {mean:.2f})"
        f"\nkey committed -> served by a replica: max {max(served):.3f} s, "
        f"p99 {percentile(served, 99):.3f} s over {len(served)} (key, replica) pairs"
        f"\nkey committed -> served by every replica: max {max(everywhere):.3f} s, "
        f"p99 {percentile(everywhere, 99):.3f} s over {len(everywhere)} keys"
        f"\nkey committed -> loaded by a replica (its log line): max {max(loaded):.3f} s, "
        f"p99 {percentile(loaded, 99):.3f} s"
        f"\nactivation -> served by every replica: already served {min(lead):.2f} s or more before"
    )
