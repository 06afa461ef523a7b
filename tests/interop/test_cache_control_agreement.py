"""The three SDKs' key caches read Cache-Control alike: one grammar (README, Client SDKs), so a
server's header, well-formed or not, gives the same freshness in Go, Python and TypeScript.

Each SDK's own tests hold its parser to the shared table; this one feeds the same generated
values, mostly malformed (odd spacing, quoting, separators, case, signs, Unicode digits,
repeated and conflicting directives), to the three parsers and requires the same
(max-age, stale-while-revalidate, stale-if-error) from each: three implementations that must
agree, with no expected value written here.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from agentrouter_sdk._keyset import parse_cache_control
from tests.conftest import REPO

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent / "cache_control"
NAMES = ["max-age", "stale-if-error", "stale-while-revalidate", "no-cache", "no-store",
         "must-revalidate", "proxy-revalidate", "ext", "private", "public"]  # fmt: skip
VALUES = ["60", "5", "86400", "0", '"60"', '"6\\0"', '"', '"a,b"', "x", "", " 60", "60 ",
          "-1", "+5", "0060", '"60"x', "6 0", "\u0661", "\t60", "1.5", "99999999999999999999",
          '"a\\"b, max-age=1"', "a=b"]  # fmt: skip
SEPARATORS = [", ", ",", " , ", ",,", ";", ", ,", "\t,", " ,\t"]
EQUALS = ["=", " =", "= ", " = ", "\t="]
SIZE = 3000


def corpus(seed: int = 20) -> list[str]:
    """SIZE distinct one-line values: 1 to 4 directives each, often malformed."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < SIZE:
        parts = []
        for _ in range(rng.randint(1, 4)):
            name = rng.choice(NAMES)
            name = name.upper() if rng.random() < 0.1 else name
            bare = rng.random() < 0.2
            parts.append(name if bare else name + rng.choice(EQUALS) + rng.choice(VALUES))
        line = parts[0]
        for part in parts[1:]:
            line += rng.choice(SEPARATORS) + part
        out.add(line)
    return sorted(out)


def python_reads(values: list[str]) -> list[list[float]]:
    read = []
    for value in values:
        fresh, _ = parse_cache_control([value])
        read.append([fresh.max_age, fresh.stale_while_revalidate, fresh.stale_if_error])
    return read


def go_reads(values: list[str], folder: Path) -> list[list[float]]:
    """The Go SDK's internal TestCacheControlOfCorpus, given the corpus as field-line lists."""
    go = shutil.which("go")
    assert go, "go is not on PATH: this test drives the Go SDK"
    path = folder / "corpus.json"
    path.write_text(json.dumps([[value] for value in values]))
    env = {**os.environ, "AGENTROUTER_TEST_CACHE_CONTROL_CORPUS": str(path)}
    ran = subprocess.run(
        [go, "test", "-count=1", "-run", "^TestCacheControlOfCorpus$", "."],
        cwd=REPO / "sdk" / "go", env=env, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return [row[:3] for row in json.loads(Path(f"{path}.go.json").read_text())]


def typescript_reads(values: list[str], folder: Path) -> list[list[float]]:
    path = folder / "values.json"
    path.write_text(json.dumps(values))
    ran = subprocess.run(
        ["node", "--import", "tsx", str(HERE / "parse.mts"), str(path)],
        cwd=REPO / "sdk" / "typescript", capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    read: list[list[float]] = json.loads(ran.stdout)
    return read


def test_the_three_sdks_read_every_cache_control_value_alike(tmp_path: Path) -> None:
    values = corpus()
    python = python_reads(values)
    go = go_reads(values, tmp_path)
    typescript = typescript_reads(values, tmp_path)
    assert len(python) == len(go) == len(typescript) == SIZE
    differ = [
        f"{value!r}: python {p}, go {g}, typescript {t}"
        for value, p, g, t in zip(values, python, go, typescript, strict=True)
        if not (p == g == t)
    ]
    assert not differ, f"{len(differ)} of {SIZE} values read differently:\n" + "\n".join(
        differ[:25]
    )
    # The corpus reaches every outcome that matters: fresh, default, zero, and stale windows.
    max_ages = {row[0] for row in python}
    assert {0, 5, 60, 300, 86400} <= max_ages, sorted(max_ages)
    assert any(row[1] > 0 for row in python)
    assert any(row[2] > 0 for row in python)
