"""The TypeScript SDK in a real browser: bundled into a page served from another origin than the
server's, it calls GetJWKS in headless Chromium, through the CORS preflight its API key causes,
and lists the kids in the page."""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serverproc import ServerProcess

from .peer import Peer
from .test_sdk_typescript import TS_BIN, TS_DIR, install_built_sdk, node, served_kids

pytestmark = pytest.mark.integration
BROWSER_DIR = TS_DIR / "test" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
API_KEY = "browser-api-key"  # the page's
METHOD_PATH = "/agentrouter.auth.v1.AuthService/GetJWKS"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test reads the page, not the log."""


@contextlib.contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """`folder` served on a free loopback port: another origin than the server's."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def bundle_page(tmp_path: Path) -> Path:
    """The page and its script, bundled by esbuild from the built package as an application
    would bundle it; returns the site's folder."""
    app = tmp_path / "app"
    app.mkdir()
    install_built_sdk(app)
    shutil.copy(BROWSER_DIR / "page.ts", app / "page.ts")
    site = tmp_path / "site"
    node(
        [str(TS_BIN / "esbuild"), "page.ts", "--bundle", "--format=esm", "--platform=browser",
         "--target=es2022", f"--outfile={site / 'page.js'}", "--log-level=warning"],
        app,
    )  # fmt: skip
    shutil.copy(BROWSER_DIR / "index.html", site / "index.html")
    return site


def test_a_page_from_another_origin_lists_the_served_kids(
    server: ServerProcess, peer: Peer, tmp_path: Path
) -> None:
    assert CHROMIUM.exists(), f"no {CHROMIUM}: `make test` installs Debian's chromium"
    site = bundle_page(tmp_path)
    with static_site(site) as origin:
        assert origin != server.base_url
        url = f"{origin}/index.html?server={server.base_url}&peer={peer.url}"
        printed = node(["node", "--import", "tsx", "test/browser/drive.ts", url], TS_DIR)
    page = json.loads(printed.splitlines()[-1])
    assert page["kids"] == served_kids(server), page
    assert page["outcome"]["peerKids"] == ["peer-key"], page
    assert page["outcome"]["peerError"] == {"code": "NotFound", "message": "forced not_found"}

    # What the browser sent: a preflight for the SDK's headers, then the GET with them.
    calls = [r for r in peer.requests if r["path"] == f"/browser{METHOD_PATH}"]
    preflight, get = (next(r for r in calls if r["method"] == m) for m in ("OPTIONS", "GET"))
    asked = set(preflight["headers"]["access-control-request-headers"].split(","))
    assert {"authorization", "connect-timeout-ms", "x-user-agent"} <= asked
    assert preflight["headers"]["access-control-request-method"] == "GET"
    headers = get["headers"]
    assert headers["origin"] == origin
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["x-user-agent"].startswith("agentrouter-sdk-typescript/")
    assert "Chrome/" in headers["user-agent"]  # the browser's own: pages cannot set it
    assert headers["connect-timeout-ms"] == "10000"
