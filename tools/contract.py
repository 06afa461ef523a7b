"""Contract tooling: stage third-party protos, generate code, run buf, guard the API.

Everything here runs offline with the tools pinned in the project's virtual environment:
`grpc_tools.protoc` (grpcio-tools) with the `protoc-gen-connectrpc` and mypy-protobuf plugins,
and `buf` from the `buf-bin` wheel. The google/api protos come from the installed
`googleapis-common-protos` package, copied into a git-ignored folder at build time, so no file
of theirs is committed and no schema registry is needed.

The Makefile calls this as `python tools/contract.py COMMAND`; the contract tests import it and
run the same functions on temporary copies of the repository, so the guard that CI runs is the
guard the tests prove can fail.
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = "proto"
GEN_DIR = "gen"
THIRD_PARTY_DIR = ".build/googleapis"
BASELINE = "api/released.json"
# The third-party files our contract imports, found in googleapis-common-protos.
THIRD_PARTY_PROTOS = ("google/api/annotations.proto", "google/api/http.proto")
# Code generated for each proto file, relative to the output root.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi", "_connect.py")


class ContractError(Exception):
    """A contract check failed; the message is what the tool printed."""


def _bin(name: str) -> str:
    """Path of an executable installed in this interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ContractError(f"{name} is not installed next to {sys.executable}; run `make install`")
    return str(path)


def _run(argv: Sequence[str], cwd: Path) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ContractError(
            (proc.stdout + proc.stderr).strip() or f"{argv[0]} exited {proc.returncode}"
        )
    return proc.stdout


def buf(args: Sequence[str], root: Path = ROOT) -> str:
    """Run the pinned buf with `args` in `root` and return its output; raise on failure."""
    return _run([_bin("buf"), *args], root)


def googleapis_root() -> Path:
    """The site-packages folder holding googleapis-common-protos' google/api/*.proto."""
    spec = importlib.util.find_spec("google.api")
    if spec is None or not spec.submodule_search_locations:
        raise ContractError("googleapis-common-protos is not installed")
    for location in spec.submodule_search_locations:
        candidate = Path(location).parent.parent
        if all((candidate / name).is_file() for name in THIRD_PARTY_PROTOS):
            return candidate
    raise ContractError("googleapis-common-protos ships no google/api/annotations.proto")


def stage_third_party(root: Path = ROOT) -> Path:
    """Copy the imported google/api protos from the installed package into `root`'s build dir."""
    source = googleapis_root()
    target = root / THIRD_PARTY_DIR
    for name in THIRD_PARTY_PROTOS:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, dest)
    return target


def proto_files(root: Path = ROOT) -> list[str]:
    """The contract's .proto files, relative to the proto root, sorted."""
    base = root / PROTO_DIR
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*.proto"))


def generate(out: Path, root: Path = ROOT) -> list[Path]:
    """Generate messages, grpcio stubs, typing stubs and Connect code for the contract into `out`.

    Returns the files written. `out` is cleared of previously generated files first so a
    removed proto leaves nothing behind.
    """
    third_party = stage_third_party(root)
    for suffix in GENERATED_SUFFIXES:
        for stale in out.rglob(f"*{suffix}"):
            stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    argv = [
        "grpc_tools.protoc",
        f"--proto_path={root / PROTO_DIR}",
        f"--proto_path={third_party}",
        f"--proto_path={well_known}",
        f"--plugin=protoc-gen-connectrpc={_bin('protoc-gen-connectrpc')}",
        f"--plugin=protoc-gen-mypy={_bin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_bin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        f"--connectrpc_out={out}",
        "--connectrpc_opt=protobuf=google",
        *proto_files(root),
    ]
    # Inputs are named relative to the proto root, as they are inside the generated code.
    with contextlib.chdir(root / PROTO_DIR):
        status = protoc.main(argv)
    if status != 0:
        raise ContractError(f"protoc failed with status {status}")
    return sorted(p for suffix in GENERATED_SUFFIXES for p in out.rglob(f"*{suffix}"))


def generated_drift(root: Path = ROOT) -> list[str]:
    """Generated files under gen/ that differ from a fresh generation (missing, extra or
    changed). Build output (gen/build/) is not part of the generated tree."""
    committed_root = root / GEN_DIR
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        fresh = {p.relative_to(fresh_root).as_posix() for p in generate(fresh_root, root)}
        committed = {
            p.relative_to(committed_root).as_posix()
            for suffix in GENERATED_SUFFIXES
            for p in committed_root.rglob(f"*{suffix}")
            if p.relative_to(committed_root).parts[0] not in ("build", "dist")
        }
        drift = sorted(committed ^ fresh)
        for name in sorted(committed & fresh):
            if not filecmp.cmp(committed_root / name, fresh_root / name, shallow=False):
                drift.append(name)
    return drift


def lint(root: Path = ROOT) -> None:
    """buf lint (STANDARD + COMMENTS) and buf format; raise ContractError on any finding."""
    stage_third_party(root)
    buf(["lint"], root)
    buf(["format", "--diff", "--exit-code", PROTO_DIR], root)


def _build_dir(root: Path) -> Path:
    path = root / ".build"
    path.mkdir(exist_ok=True)
    return path


def breaking(root: Path = ROOT) -> None:
    """buf breaking of the contract against the committed image of the last released API.

    The baseline holds only our own files; the google/api files it imports are built from the
    installed package at check time and prepended (a binary FileDescriptorSet concatenated
    with another is their union), so the baseline never carries third-party descriptors.
    """
    stage_third_party(root)
    build = _build_dir(root)
    deps, released, against = (
        build / "deps.binpb",
        build / "released.binpb",
        build / "against.binpb",
    )
    buf(["build", THIRD_PARTY_DIR, "--exclude-source-info", "-o", str(deps)], root)
    buf(
        [
            "convert",
            str(deps),
            "--type=google.protobuf.FileDescriptorSet",
            f"--from={root / BASELINE}#format=json",
            f"--to={released}#format=binpb",
        ],
        root,
    )
    against.write_bytes(deps.read_bytes() + released.read_bytes())
    buf(["breaking", PROTO_DIR, "--against", str(against)], root)


def freeze(root: Path = ROOT) -> Path:
    """Record the current contract as the released baseline (run when cutting a release)."""
    stage_third_party(root)
    image = json.loads(
        buf(
            [
                "build",
                PROTO_DIR,
                "--exclude-imports",
                "--exclude-source-info",
                "-o",
                "-#format=json",
            ],
            root,
        )
    )
    target = root / BASELINE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(image, indent=2, sort_keys=True) + "\n")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="contract", description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        choices=["stage", "generate", "check-generated", "lint", "breaking", "freeze"],
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "stage":
            stage_third_party()
        elif args.command == "generate":
            for path in generate(ROOT / GEN_DIR):
                print(path.relative_to(ROOT))
        elif args.command == "check-generated":
            drift = generated_drift()
            if drift:
                print(
                    "gen/ differs from a fresh generation (run `make generate`):",
                    *drift,
                    sep="\n  ",
                )
                return 1
        elif args.command == "lint":
            lint()
        elif args.command == "breaking":
            breaking()
        elif args.command == "freeze":
            print(freeze().relative_to(ROOT))
    except ContractError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
