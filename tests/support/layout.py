"""Reading the server's source as a graph: which module imports which (from the AST, without
importing anything), every module by dotted name, and the import circles among them. Used by
the layout tests of the whole server and of each package."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Mapping
from pathlib import Path

SERVER = Path(importlib.import_module("agentrouter_auth").__file__ or "").parent
"""The `agentrouter_auth` package folder."""
MODULE_LIMIT = 400
"""Lines: no module of the server above it (one job per module)."""


def imports(path: Path, module: str) -> set[str]:
    """The modules (and `module.name` members) `path`, the file of `module`, imports anywhere
    in it — under `TYPE_CHECKING` and inside functions too — with relative imports resolved."""
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = module.split(".")
            base = parts[: len(parts) - node.level + is_package] if node.level else []
            name = ".".join([*base, node.module or ""]).strip(".")
            names.add(name)
            names |= {f"{name}.{alias.name}" for alias in node.names}
    return names


def modules(folder: Path = SERVER) -> dict[str, Path]:
    """Every module under `folder` (a package of the server), by dotted name."""
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(SERVER.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_circles(found: Mapping[str, Path]) -> list[list[str]]:
    """Each circle of imports among `found` (a module importing its own package's `__init__`
    is not one: a package's modules import beside it)."""
    imported = {name: imports(path, name) for name, path in found.items()}
    graph = {
        name: {
            other
            for other in found
            if other != name
            and any(i == other or i.startswith(f"{other}.") for i in imported[name])
            and not name.startswith(f"{other}.")
        }
        for name in found
    }

    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    return [circle for name in sorted(graph) if (circle := circle_from(name))]
