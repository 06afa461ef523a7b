"""http.health: /healthz while the worker lives; /readyz says whether to send it traffic."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agentrouter_auth.http.app import HttpApp

from .conftest import Call


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
