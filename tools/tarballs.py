"""`make sdk`: the three SDK tarballs a user downloads, one per language.

Each tarball `agentrouter-<language>-<version>.tar.gz` extracts into a folder of the same
stem, holds everything its language needs to build against it (the generated code inside),
and nothing of the repository around it: no tests, caches or installed packages. The
TypeScript SDK ships built (ESM and type declarations), so its users never compile it. The
archives are reproducible: entries sorted, owners and times fixed.

    python tools/tarballs.py --out dist/sdk
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk"
LANGUAGES = ("python", "go", "typescript")
_SKIP_PARTS = {"__pycache__", "node_modules", "build", ".mypy_cache"}


class TarballError(Exception):
    """A tarball could not be built; the message says why."""


def version() -> str:
    """The SDKs' one version (sdk/VERSION)."""
    return (SDK / "VERSION").read_text().strip()


def stem(language: str) -> str:
    """The tarball's name without `.tar.gz`, and the folder it extracts into."""
    return f"agentrouter-{language}-{version()}"


def _tree(base: Path, *patterns: str) -> Iterator[Path]:
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            parts = set(path.relative_to(base).parts)
            if (
                path.is_file()
                and not parts & _SKIP_PARTS
                and not any(p.endswith(".egg-info") for p in parts)
            ):
                yield path


def _python() -> dict[str, bytes]:
    base = SDK / "python"
    files = _tree(base, "pyproject.toml", "README.md", "agentrouter_sdk/**/*", "tars/**/*")
    return {path.relative_to(base).as_posix(): path.read_bytes() for path in files}


def _go() -> dict[str, bytes]:
    base = SDK / "go"
    files = [p for p in _tree(base, "go.mod", "go.sum", "README.md", "*.go", "genapi/**/*.go")]
    return {
        path.relative_to(base).as_posix(): path.read_bytes()
        for path in files
        if not path.name.endswith("_test.go")
    }


def _typescript() -> dict[str, bytes]:
    base = SDK / "typescript"
    tsc = base / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        raise TarballError("the TypeScript SDK's packages are not installed; run `make sdk`")
    shutil.rmtree(base / "dist", ignore_errors=True)  # nothing of an earlier build ships
    build = subprocess.run(
        [str(tsc), "-p", str(base / "tsconfig.json")], capture_output=True, text=True, check=False
    )
    if build.returncode != 0:
        raise TarballError(f"tsc failed:\n{build.stdout}{build.stderr}")
    manifest = json.loads((base / "package.json").read_text())
    for development_only in ("devDependencies", "scripts"):
        manifest.pop(development_only, None)
    files = {"package.json": (json.dumps(manifest, indent=2) + "\n").encode()}
    for path in _tree(base, "README.md", "dist/**/*"):
        files[path.relative_to(base).as_posix()] = path.read_bytes()
    return files


BUILDERS: dict[str, Callable[[], dict[str, bytes]]] = {
    "python": _python,
    "go": _go,
    "typescript": _typescript,
}


def build(language: str, out: Path) -> Path:
    """Write `language`'s tarball into `out`; returns its path."""
    files = BUILDERS[language]()
    folder = stem(language)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uname = info.gname = ""
            archive.addfile(info, io.BytesIO(data))
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{folder}.tar.gz"
    with (
        target.open("wb") as handle,
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as compressed,
    ):
        compressed.write(raw.getvalue())
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tarballs", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "sdk")
    parser.add_argument("languages", nargs="*", help=f"any of {', '.join(LANGUAGES)} (all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.languages) - set(LANGUAGES))
    if unknown:
        parser.error(f"no SDK for {', '.join(unknown)}")
    try:
        for language in args.languages or LANGUAGES:
            print(build(language, args.out))
    except TarballError as err:
        print(f"tarballs: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
