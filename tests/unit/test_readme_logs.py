"""README, section Logs, lists every event the server and the CLI log, and no event they do not."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EVENT = re.compile(r"""["']event["']\s*:\s*["']([a-z_]+)["']""")


def _logged_events() -> set[str]:
    return {
        match
        for path in (REPO / "server").rglob("*.py")
        for match in EVENT.findall(path.read_text(encoding="utf-8"))
    }


def _documented_events() -> set[str]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Logs\n", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([a-z_]+)`", row.split(" | ")[0])}


def test_every_logged_event_is_documented_in_the_readme() -> None:
    logged = _logged_events()
    assert len(logged) > 10, "the event pattern no longer finds the server's log events"
    assert sorted(logged - _documented_events()) == []


def test_the_readme_documents_no_event_that_is_not_logged() -> None:
    assert sorted(_documented_events() - _logged_events()) == []
