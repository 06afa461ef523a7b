"""The whole server's layout: no module over the size of one job, and no import circle."""

from __future__ import annotations

from pathlib import Path

from tests.support.layout import MODULE_LIMIT, import_circles, modules


def test_no_module_of_the_server_is_over_the_limit() -> None:
    found = modules()
    assert len(found) > 40, "the walk no longer finds the server's modules"
    sizes = {name: len(path.read_text().splitlines()) for name, path in found.items()}
    assert {name: size for name, size in sizes.items() if size > MODULE_LIMIT} == {}


def test_no_import_circle_in_the_server() -> None:
    circles = import_circles(modules())
    assert circles == [], circles[0] if circles else None


def test_the_circle_finder_finds_a_circle(tmp_path: Path) -> None:
    """The check above cannot pass vacuously: modules that import each other are reported."""
    (tmp_path / "a.py").write_text("from agentrouter_auth.b import thing\n")
    (tmp_path / "b.py").write_text("def f():\n    import agentrouter_auth.a\n")
    (tmp_path / "c.py").write_text("from agentrouter_auth import b\n")
    found = {f"agentrouter_auth.{name}": tmp_path / f"{name}.py" for name in "abc"}
    circles = import_circles(found)
    assert ["agentrouter_auth.a", "agentrouter_auth.b", "agentrouter_auth.a"] in circles
    assert all("agentrouter_auth.c" not in circle for circle in circles)
