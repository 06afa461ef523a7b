"""Small programs the tests drive, built against the SDKs in this checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def build_go_program(source: Path, folder: Path) -> Path:
    """`source` (one `package main` file) built in `folder` as a module whose
    `github.com/tetrateio/agentrouter-go` is sdk/go, with the SDK's go.sum; the binary."""
    go = shutil.which("go")
    assert go, "go is not on PATH: this test drives the Go SDK"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / "main.go")
    shutil.copy(REPO / "sdk" / "go" / "go.sum", folder / "go.sum")
    (folder / "go.mod").write_text(
        f"module agentrouter-auth.test/{source.stem}\n\ngo 1.26\n\n"
        "require github.com/tetrateio/agentrouter-go v0.0.0\n\n"
        f"replace github.com/tetrateio/agentrouter-go => {REPO / 'sdk' / 'go'}\n"
    )
    for args in (["mod", "tidy"], ["build", "-o", source.stem, "."]):
        built = subprocess.run(
            [go, *args], cwd=folder, capture_output=True, text=True, timeout=300, check=False
        )
        assert built.returncode == 0, f"go {' '.join(args)}: {built.stdout}{built.stderr}"
    return folder / source.stem
