"""The key-management and signing commands, run as an operator runs them. Tests that take
`store_factory` run against a key directory and against a PostgreSQL database alike."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest
from jwcrypto import jwk

from agentrouter_auth.keys.directory import MANIFEST, DirectoryStore
from tests.keystores import StoreFactory

from .serverproc import AGENTROUTER_AUTH, ServerProcess, refused_in_one_line

pytestmark = pytest.mark.integration


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*AGENTROUTER_AUTH, *args], capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def listing(where: Path | StoreFactory) -> list[dict[str, object]]:
    store = ["--keys-dir", str(where)] if isinstance(where, Path) else where.options()
    keys: list[dict[str, object]] = json.loads(cli("keys", "list", "--json", *store).stdout)["keys"]
    return keys


@pytest.mark.slow
def test_init_list_rotate_and_sign_for_every_algorithm(store_factory: StoreFactory) -> None:
    store = store_factory.options()
    cli("keys", "init", *store, "--alg", "RS256", "--alg", "ES256", "--alg", "EdDSA")
    keys = listing(store_factory)
    assert sorted((k["alg"], k["state"]) for k in keys) == [
        ("ES256", "active"), ("EdDSA", "active"), ("RS256", "active")
    ]  # fmt: skip
    assert all(k["next"]["event"] == "successor" for k in keys)  # type: ignore[index]
    table = cli("keys", "list", *store).stdout.splitlines()
    assert table[0].split() == ["KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED", "NEXT"]
    assert len(table) == 4

    cli("keys", "rotate", *store, "--alg", "EdDSA")
    states = sorted((k["alg"], k["state"]) for k in listing(store_factory))
    assert ("EdDSA", "pending") in states
    assert len(states) == 4

    for alg in ("RS256", "ES256", "EdDSA"):
        token = cli(
            "token", "sign", *store, "--alg", alg,
            "--claims", '{"sub": "operator", "aud": "fleet"}', "--ttl", "5m",
        ).stdout.strip()  # fmt: skip
        header = pyjwt.get_unverified_header(token)
        active = next(k for k in keys if k["alg"] == alg)
        assert header == {"alg": alg, "kid": active["kid"], "typ": "JWT"}


@pytest.mark.slow
def test_concurrent_rotations_leave_a_consistent_store(store_factory: StoreFactory) -> None:
    cli("keys", "init", *store_factory.options(), "--alg", "ES256")
    rotations = [
        subprocess.Popen(
            [*AGENTROUTER_AUTH, "keys", "rotate", *store_factory.options()],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    assert [proc.wait(timeout=120) for proc in rotations] == [0, 0, 0, 0]
    assert sorted(str(key["state"]) for key in listing(store_factory)) == ["active", "pending"]
    if store_factory.kind != "directory":
        return
    keys_dir = Path(store_factory.location)
    manifest = json.loads((keys_dir / MANIFEST).read_text())
    listed = {entry["kid"] for entry in manifest["keys"]}
    files = {path.name.removesuffix(".jwk.json") for path in keys_dir.glob("*.jwk.json")}
    assert listed == files
    assert sorted(entry["state"] for entry in manifest["keys"]) == ["active", "pending"]
    assert not list(keys_dir.glob("*.tmp"))


def test_import_publishes_a_foreign_public_key(tmp_path: Path, store_factory: StoreFactory) -> None:
    cli("keys", "init", *store_factory.options())
    foreign = tmp_path / "issuer.json"
    foreign.write_text(
        json.dumps(
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        )
    )
    cli("keys", "import", *store_factory.options(), str(foreign))
    imported = [k for k in listing(store_factory) if k["origin"] == "imported"]
    assert [(k["alg"], k["state"], k["next"]) for k in imported] == [("EdDSA", "published", None)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["token", "sign", "--claims", "not json"], "--claims: not JSON"),
        (["token", "sign", "--claims", "[1]"], "--claims: must be a JSON object"),
        (["token", "sign", "--claims", "{}", "--ttl", "2h"], "at most --max-token-ttl (1h)"),
        (["token", "sign", "--claims", "{}", "--alg", "RS256"], "no active RS256 key"),
        (["keys", "import", "/nonexistent.json"], "/nonexistent.json: unreadable"),
        (["keys", "rotate", "--alg", "HS256"], "invalid choice: 'HS256'"),
        (["keys", "list", "--publish-ahead", "1h", "--cache-max-age", "40m"],
         "at most half of --publish-ahead"),
        (["keys", "list", "--rotation-period", "soon"],
         "--rotation-period: 'soon' is not a duration"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_exit_non_zero(
    store_factory: StoreFactory, args: list[str], message: str
) -> None:
    cli("keys", "init", *store_factory.options())
    result = cli(*args, *store_factory.options(), check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_import_of_a_symmetric_key_is_refused(tmp_path: Path, store_factory: StoreFactory) -> None:
    cli("keys", "init", *store_factory.options())
    secret = tmp_path / "secret.json"
    secret.write_text(jwk.JWK.generate(kty="oct", size=256).export())  # made now, never committed
    result = cli("keys", "import", *store_factory.options(), str(secret), check=False)
    assert result.returncode == 1
    assert "secret.json: symmetric (oct) keys are refused" in result.stderr
    assert len(listing(store_factory)) == 1


def test_rotate_with_no_keys_says_so(store_factory: StoreFactory) -> None:
    result = cli("keys", "rotate", *store_factory.options(), check=False)
    assert result.returncode == 1
    assert "no active key to rotate" in result.stderr


@pytest.mark.slow
def test_remove_an_imported_key_and_a_compromised_active_one(
    tmp_path: Path, store_factory: StoreFactory
) -> None:
    store = store_factory.options()
    cli("keys", "init", *store)
    (active,) = listing(store_factory)
    foreign = tmp_path / "issuer.json"
    foreign.write_text(jwk.JWK.generate(kty="OKP", crv="Ed25519").export_public())
    cli("keys", "import", *store, str(foreign))
    (imported,) = [k for k in listing(store_factory) if k["origin"] == "imported"]
    cli("keys", "remove", *store, "--", str(imported["kid"]))
    assert [k["kid"] for k in listing(store_factory)] == [active["kid"]]
    if store_factory.kind == "directory":
        assert not (Path(store_factory.location) / f"{imported['kid']}.jwk.json").exists()

    # a kid may start with "-": `--` ends the options
    refused = cli("keys", "remove", *store, "--", str(active["kid"]), check=False)
    assert refused.returncode == 1
    assert "is the active ES256 key; rotate first, or use --force" in refused.stderr
    missing = cli("keys", "remove", *store, "--", "no-such-kid", check=False)
    assert "no key no-such-kid" in missing.stderr

    cli("keys", "remove", *store, "--force", "--", str(active["kid"]))
    assert listing(store_factory) == []
    cli("keys", "init", *store)  # the emergency path: a fresh signing key
    (replacement,) = listing(store_factory)
    assert replacement["kid"] != active["kid"]


def _kill(rotation: subprocess.Popen[bytes], keys_dir: Path, after_write: float | None) -> None:
    """SIGKILL `rotation` `after_write` seconds after a new file first shows in `keys_dir`
    (inside its transaction), or, for None, at once."""
    if after_write is not None:
        before = set(os.listdir(keys_dir))
        while rotation.poll() is None and not set(os.listdir(keys_dir)) - before:
            pass  # poll as fast as we can: the writes take milliseconds
        time.sleep(after_write)
    rotation.send_signal(signal.SIGKILL)
    rotation.wait(timeout=60)


@pytest.mark.slow
def test_rotate_killed_at_any_moment_leaves_the_old_store_or_the_new(tmp_path: Path) -> None:
    """SIGKILL `keys rotate` inside its transaction and at random moments: the store holds the
    old set or the new one, publishes only what its manifest lists, and the next transaction
    removes whatever the killed one left behind."""
    template = tmp_path / "template"
    cli("keys", "init", "--keys-dir", str(template), "--alg", "EdDSA")
    (active,) = listing(template)
    started = time.monotonic()
    cli("keys", "rotate", "--keys-dir", str(shutil.copytree(template, tmp_path / "timing")))
    took = time.monotonic() - started
    seed = random.randrange(1 << 32)
    pick = random.Random(seed)
    # (sleep before the kill, seconds after the first write or None for "from the start")
    plans: list[tuple[float, float | None]] = [
        (0, 0),
        (0, 0.0005),
        (0, 0.001),
        (0, 0.002),
        (0, 0.004),
    ]
    plans += [(pick.uniform(0.5, 1.05) * took, None) for _ in range(3)]
    for run, (moment, after_write) in enumerate(plans):
        keys_dir = shutil.copytree(template, tmp_path / f"run-{run}")
        rotation = subprocess.Popen(
            [*AGENTROUTER_AUTH, "keys", "rotate", "--keys-dir", str(keys_dir)],
            stderr=subprocess.DEVNULL,
        )
        time.sleep(moment)
        _kill(rotation, keys_dir, after_write)
        where = f"run {run}: killed at {moment:.3f}s/{after_write}s (took {took:.3f}s, seed {seed})"
        key_set = DirectoryStore(keys_dir).read()
        states = {k.kid: k.entry.state.value for k in key_set.keys}
        assert states[str(active["kid"])] == "active", where
        assert sorted(states.values()) in (["active"], ["active", "pending"]), where
        manifest = json.loads((keys_dir / MANIFEST).read_text())
        assert set(states) == {entry["kid"] for entry in manifest["keys"]}, where

        cli("keys", "rotate", "--keys-dir", str(keys_dir))  # the next transaction
        listed = {entry["kid"] for entry in json.loads((keys_dir / MANIFEST).read_text())["keys"]}
        assert sorted(p.name for p in keys_dir.iterdir()) == sorted(
            [MANIFEST, ".lock", *(f"{kid}.jwk.json" for kid in listed)]
        ), where


def test_serve_takes_a_file_url_and_hands_the_store_to_its_workers(tmp_path: Path) -> None:
    """The workers build their configuration from the environment `serve` exports: the
    store the flag chose reaches them, even under a stale variable of its other name."""
    keys_dir = tmp_path / "keys"
    location = f"file://{keys_dir}"
    cli("keys", "init", "--key-store", location, "--alg", "EdDSA")
    (key,) = listing(keys_dir)
    argv = [*AGENTROUTER_AUTH, "serve", "--key-store", location, "--rotation", "off",
            "--http-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"]  # fmt: skip
    env = os.environ | {"AGENTROUTER_AUTH_KEYS_DIR": str(tmp_path / "stale")}
    with ServerProcess(argv, env=env) as server:
        served = httpx.get(f"{server.base_url}/.well-known/jwks.json", timeout=10).json()
        assert [k["kid"] for k in served["keys"]] == [key["kid"]]
        (listening,) = server.events("listening")
        assert listening["key_store"] == str(keys_dir)
        assert server.terminate() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key-store", "/srv/a", "--keys-dir", "/srv/b"],
         "agentrouter-auth: error: --key-store and --keys-dir are given different values: "
         "give one"),
        (["--key-store", "mysql://db.internal/keys"],
         "agentrouter-auth: error: --key-store: mysql://db.internal/keys: unknown key store "
         "scheme 'mysql': use a directory path or one of file:, postgres:, postgresql:"),
        (["--key-store", "file://elsewhere/keys"],
         "agentrouter-auth: error: --key-store: file://elsewhere/keys: a file: URL names a "
         "directory on this machine, not on 'elsewhere'"),
    ],
)  # fmt: skip
def test_a_store_no_backend_takes_is_one_line_for_every_command(
    args: list[str], message: str
) -> None:
    for command in (["serve"], ["keys", "list"], ["token", "sign", "--claims", "{}"]):
        assert refused_in_one_line([*AGENTROUTER_AUTH, *command, *args]) == message
