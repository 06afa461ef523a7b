"""Contract tooling: stage third-party protos, generate every language's code, run buf, guard
the API.

Python code comes from the tools pinned in the project's virtual environment:
`grpc_tools.protoc` (grpcio-tools) with the `protoc-gen-connectrpc` and mypy-protobuf plugins;
`buf` is the `buf-bin` wheel. Go and TypeScript code comes from `buf generate` with local
plugins: protoc-gen-go and protoc-gen-connect-go built from the versions tools/go/go.sum pins,
and protoc-gen-es from the TypeScript SDK's package-lock.json. The SDKs' version is kept in
sdk/VERSION alone and stamped into each SDK by generation. The google/api protos come from the
installed `googleapis-common-protos` package, copied into a git-ignored folder at build time, so
no file of theirs is committed and no schema registry is needed.

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
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
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
CONTRACT_PACKAGE = "agentrouter"  # the contract's proto folder, as generated code names it
SDK_PACKAGE = "tars"  # the SDKs' name for the same files, as the documentation uses it
GO_MODULE = "github.com/tetrateio/agentrouter-go"
SDK_VERSION = "sdk/VERSION"  # the one place the SDKs' version is kept
_GENERATED_NOTE = "Generated from sdk/VERSION by `make generate`. DO NOT EDIT."
VERSION_SOURCES = {
    "sdk/python/agentrouter_sdk/_version.py": (
        f'"""{_GENERATED_NOTE}"""\n\n__version__ = "{{version}}"\n'
    ),
    "sdk/go/version.go": (
        f"// {_GENERATED_NOTE}\n\npackage agentrouter\n\n"
        "// Version is the SDK's version, sent in the User-Agent of every call.\n"
        'const Version = "{version}"\n'
    ),
    "sdk/typescript/src/version.ts": (
        f"// {_GENERATED_NOTE}\n\n"
        "/** The SDK's version, sent in the user agent of every call. */\n"
        'export const VERSION = "{version}";\n'
    ),
}
VERSION_FIELDS = ("sdk/typescript/package.json", "sdk/typescript/package-lock.json")
GO_TOOLS = ".build/bin"  # protoc-gen-go and protoc-gen-connect-go, built by `make go-tools`
ES_TOOL = "sdk/typescript/node_modules/.bin/protoc-gen-es"  # from the SDK's package-lock.json


class ContractError(Exception):
    """A contract check failed; the message is what the tool printed."""


def _bin(name: str) -> str:
    """Path of an executable installed in this interpreter's environment."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise ContractError(f"{name} is not installed next to {sys.executable}; run `make install`")
    return str(path)


def _go_tool(name: str) -> str:
    path = ROOT / GO_TOOLS / name
    if not path.exists():
        raise ContractError(f"{name} is not built; run `make generate` (it builds {GO_TOOLS})")
    return str(path)


def _es_tool() -> str:
    path = ROOT / ES_TOOL
    if not path.exists():
        raise ContractError("protoc-gen-es is not installed; run `make generate`")
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


def _protoc(root: Path, out: Path, *options: str) -> None:
    """Run the pinned protoc (grpcio-tools) on the contract with `options`, writing to `out`."""
    third_party = stage_third_party(root)
    well_known = Path(protoc.__file__).parent / "_proto"
    argv = [
        "grpc_tools.protoc",
        f"--proto_path={root / PROTO_DIR}",
        f"--proto_path={third_party}",
        f"--proto_path={well_known}",
        *options,
        *proto_files(root),
    ]
    out.mkdir(parents=True, exist_ok=True)
    # Inputs are named relative to the proto root, as they are inside the generated code.
    with contextlib.chdir(root / PROTO_DIR):
        status = protoc.main(argv)
    if status != 0:
        raise ContractError(f"protoc failed with status {status}")


def _server_python(root: Path, out: Path) -> None:
    """The server's code: messages, grpcio stubs, typing stubs and Connect code (`gen/`)."""
    _protoc(
        root,
        out,
        f"--plugin=protoc-gen-connectrpc={_bin('protoc-gen-connectrpc')}",
        f"--plugin=protoc-gen-mypy={_bin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_bin('protoc-gen-mypy_grpc')}",
        f"--python_out={out}",
        f"--mypy_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_grpc_out={out}",
        f"--connectrpc_out={out}",
        "--connectrpc_opt=protobuf=google",
    )


def _sdk_python(root: Path, out: Path) -> None:
    """The Python SDK's own copy of the messages and Connect client, under the module names
    the documentation uses (`tars.auth.v1`). The descriptors are the contract's, byte for
    byte, so a process that also imports the server's `agentrouter.auth.v1` registers them
    once and shares the message classes."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        _protoc(
            root,
            staging,
            f"--plugin=protoc-gen-connectrpc={_bin('protoc-gen-connectrpc')}",
            f"--plugin=protoc-gen-mypy={_bin('protoc-gen-mypy')}",
            f"--python_out={staging}",
            f"--mypy_out={staging}",
            f"--connectrpc_out={staging}",
            "--connectrpc_opt=protobuf=google",
        )
        _move_tree(staging / CONTRACT_PACKAGE, out / SDK_PACKAGE)


def _buf_generate(root: Path, plugins: list[dict[str, object]]) -> None:
    """`buf generate` of the contract with local `plugins` (a buf.gen.yaml v2 plugin list)."""
    stage_third_party(root)
    template = {"version": "v2", "plugins": plugins}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        json.dump(template, handle)  # JSON is YAML
        handle.flush()
        buf(["generate", PROTO_DIR, "--template", handle.name], root)


def _sdk_go(root: Path, out: Path) -> None:
    """The Go SDK's messages (protoc-gen-go) and Connect client (protoc-gen-connect-go), in
    the module's `genapi/api/tars/auth/v1` package `authv1`."""
    mapping = [f"M{name}={go_import(name)}" for name in proto_files(root)]
    options = [f"module={GO_MODULE}", *mapping]
    _buf_generate(
        root,
        [
            {"local": _go_tool("protoc-gen-go"), "out": str(out), "opt": options},
            {"local": _go_tool("protoc-gen-connect-go"), "out": str(out), "opt": options},
        ],
    )


def go_import(proto: str) -> str:
    """The Go import path and package of a contract file in the SDK module:
    agentrouter/auth/v1/auth.proto → …/genapi/api/tars/auth/v1;authv1."""
    folder = Path(proto).parent
    path = Path(SDK_PACKAGE, *folder.parts[1:])
    return f"{GO_MODULE}/genapi/api/{path.as_posix()};{''.join(folder.parts[-2:])}"


def _sdk_typescript(root: Path, out: Path) -> None:
    """The TypeScript SDK's messages (protoc-gen-es v2, TypeScript), with the google/api files
    they import, under `tars/auth/v1/auth_pb`."""
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        plugin = {
            "local": _es_tool(),
            "out": str(staging),
            "opt": ["target=ts", "import_extension=js"],
            "include_imports": True,
        }
        _buf_generate(root, [plugin])
        _move_tree(staging / CONTRACT_PACKAGE, staging / SDK_PACKAGE)
        _move_tree(staging, out)


def _move_tree(source: Path, target: Path) -> None:
    """Move every file under `source` to the same place under `target`."""
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        dest = target / path.relative_to(source)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, dest)


# Each generated tree: its folder in the repository, the files in it that generation owns,
# and the generator that writes them into a given folder.
GENERATED: tuple[tuple[str, tuple[str, ...], Callable[[Path, Path], None]], ...] = (
    (GEN_DIR, GENERATED_SUFFIXES, _server_python),
    ("sdk/python", ("_pb2.py", "_pb2.pyi", "_connect.py"), _sdk_python),
    ("sdk/go", (".pb.go", ".connect.go"), _sdk_go),
    ("sdk/typescript/src/gen", ("_pb.ts",), _sdk_typescript),
)


def _owned(folder: Path, suffixes: tuple[str, ...]) -> set[str]:
    """The generated files under `folder` (build output and installed packages aside)."""
    skip = {"build", "dist", "node_modules"}
    return {
        p.relative_to(folder).as_posix()
        for suffix in suffixes
        for p in folder.rglob(f"*{suffix}")
        if not skip & set(p.relative_to(folder).parts)
    }


def _version(root: Path) -> str:
    version = (root / SDK_VERSION).read_text().strip()
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise ContractError(f"{SDK_VERSION} must hold one version like 1.2.3, not {version!r}")
    return version


def _versioned_files(root: Path) -> list[Path]:
    return [root / name for name in (*VERSION_SOURCES, *VERSION_FIELDS)]


def stamp_version(root: Path = ROOT, out: Path | None = None) -> list[Path]:
    """Write the SDK version (sdk/VERSION, its one place) into each SDK: a generated source
    file per language and the `version` of the TypeScript package manifests (under `out`,
    laid out like `root`, when given)."""
    out = root if out is None else out
    version = _version(root)
    written = []
    for name, template in VERSION_SOURCES.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(version=version))
        written.append(path)
    for name in VERSION_FIELDS:
        path = out / name
        if not path.exists():  # a fresh generation starts from copies of the manifests
            continue
        manifest = json.loads(path.read_text())
        manifest["version"] = version
        if "" in manifest.get("packages", {}):  # package-lock.json's root package
            manifest["packages"][""]["version"] = version
        path.write_text(json.dumps(manifest, indent=2) + "\n")
        written.append(path)
    return written


def generate(root: Path = ROOT, out: Path | None = None) -> list[Path]:
    """Generate every language's code from the contract: into the repository at `root`, or
    into `out` laid out like it. Returns the files written.

    Each generated tree is cleared of previously generated files first, so a removed proto
    leaves nothing behind.
    """
    out = root if out is None else out
    written: list[Path] = []
    for folder, suffixes, generator in GENERATED:
        target = out / folder
        for stale in _owned(target, suffixes):
            (target / stale).unlink()
        generator(root, target)
        written += sorted(target / name for name in _owned(target, suffixes))
    written += stamp_version(root, out)
    return written


def generated_drift(root: Path = ROOT) -> list[str]:
    """Generated files (repository paths) that differ from a fresh generation: missing,
    extra or changed."""
    drift: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_root = Path(tmp)
        for path in _versioned_files(root):  # stamped in place, so start from the originals
            dest = fresh_root / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                shutil.copyfile(path, dest)
        generate(root, fresh_root)
        for folder, suffixes, _ in GENERATED:
            committed = _owned(root / folder, suffixes)
            fresh = _owned(fresh_root / folder, suffixes)
            names = sorted(committed ^ fresh)
            names += [
                name
                for name in sorted(committed & fresh)
                if not filecmp.cmp(root / folder / name, fresh_root / folder / name, shallow=False)
            ]
            drift += [f"{folder}/{name}" for name in names]
        for path in _versioned_files(root):
            fresh_path = fresh_root / path.relative_to(root)
            if not path.exists() or not filecmp.cmp(path, fresh_path, shallow=False):
                drift.append(path.relative_to(root).as_posix())
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
            for path in generate():
                print(path.relative_to(ROOT))
        elif args.command == "check-generated":
            drift = generated_drift()
            if drift:
                print(
                    "generated code differs from a fresh generation (run `make generate`):",
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
