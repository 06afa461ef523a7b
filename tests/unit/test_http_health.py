"""http.health: /healthz while the worker lives; /readyz says whether to send it traffic."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentrouter_auth.http.app import HttpApp
from agentrouter_auth.http.dispatch import PROTOCOLS
from agentrouter_auth.keys.directory import DirectoryStore
from agentrouter_auth.keys.policy import DAY, Policy
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.runtime import Runtime
from tests.support.config import worker_config

from .conftest import Call

T0 = 1_700_000_000


@pytest.fixture
def draining(http_app: HttpApp) -> Iterator[HttpApp]:
    http_app.runtime.draining = True
    try:
        yield http_app
    finally:
        http_app.runtime.draining = False


def test_healthz_names_the_worker(http_app: HttpApp, call: Call) -> None:
    assert call(http_app, "GET", "/healthz").json() == {"status": "ok", "pid": os.getpid()}


def test_readyz_is_ready_with_the_key_set_version(http_app: HttpApp, call: Call) -> None:
    response = call(http_app, "GET", "/readyz")
    assert response.status_code == 200
    ring = http_app.runtime.ring
    assert response.json() == {
        "status": "ready", "version": ring.status().version, "keys": len(ring.key_set.keys),
        "keyring": "ok",
    }  # fmt: skip


def test_readyz_is_503_while_draining(draining: HttpApp, call: Call) -> None:
    response = call(draining, "GET", "/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "draining"


def _app(ring: KeyRing, keys: Path) -> HttpApp:
    config = worker_config(str(keys), ring.policy, auto_rotate=True)
    return HttpApp(Runtime(config, ring, PROTOCOLS))


def test_readyz_says_keys_dated_in_the_future_and_stays_ready(tmp_path: Path, call: Call) -> None:
    now = T0 + 730 * DAY  # keys made while the clock ran two years ahead
    ring = KeyRing(DirectoryStore(tmp_path), Policy(), clock=lambda: now)
    ring.init(["ES256"])
    now = T0  # and set back
    ring.load()
    response = call(_app(ring, tmp_path), "GET", "/readyz")
    assert response.status_code == 200  # the set is still served
    body = response.json()
    assert body["keyring"] == "error"
    assert body["reason"] == "a key is dated in the future (a clock went back?); see the server log"
    assert ring.key_set.keys[0].kid not in response.text


def test_readyz_says_the_store_cannot_be_written_and_stays_ready(
    tmp_path: Path, call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = KeyRing(DirectoryStore(tmp_path), Policy())
    ring.init(["ES256"])
    ring.load()
    app = _app(ring, tmp_path)
    real_open = os.open

    def read_only_open(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(".lock") and flags & os.O_CREAT:  # a read-only mount
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only_open)
    assert ring.check_writable() is False
    response = call(app, "GET", "/readyz")
    assert response.status_code == 200
    assert response.json()["keyring"] == "error"
    assert response.json()["reason"] == (
        "the key store cannot be written: no rotation step can be taken; see the server log"
    )
    assert str(tmp_path) not in response.text
    monkeypatch.undo()
    assert ring.check_writable() is True
    assert call(app, "GET", "/readyz").json()["keyring"] == "ok"
