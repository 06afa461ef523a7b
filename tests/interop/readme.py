"""The README's tested snippets: each follows a `<!-- tested: NAME -->` marker."""

from __future__ import annotations

import re

from tests.conftest import REPO

BLOCK = re.compile(r"<!-- tested: (?P<name>[\w-]+) -->\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.S)


def snippets() -> dict[str, str]:
    """Every tested snippet of README.md, by name, exactly as shown."""
    found = {m["name"]: m["code"] for m in BLOCK.finditer((REPO / "README.md").read_text())}
    assert found, "README.md has no tested snippets"
    return found
