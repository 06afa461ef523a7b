"""The option table: every name gives its flag and variable, the policy and the gRPC limits are
rows generated from their fields, and the README lists every option as the table has it."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from agentrouter_auth import config
from agentrouter_auth.config import OPTIONS, GrpcLimits
from agentrouter_auth.keys.policy import POLICY_FIELDS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_name_gives_its_flag_and_variable() -> None:
    names = [name for option in OPTIONS for name in option.names]
    assert len(names) == len(set(names))
    for option in OPTIONS:
        assert option.flag == "--" + option.name.replace("_", "-")
        assert option.env == "AGENTROUTER_AUTH_" + option.name.upper()
        assert re.fullmatch(r"[a-z][a-z0-9_]*", option.name)


def test_the_policy_and_the_grpc_limits_are_rows_generated_from_their_fields() -> None:
    by_target = {option.target: option for option in OPTIONS}
    for name in POLICY_FIELDS:
        row = by_target[f"policy.{name}"]
        assert (row.flag, row.commands) == ("--" + name.replace("_", "-"), None)
    for field in dataclasses.fields(GrpcLimits):
        row = by_target[f"grpc_limits.{field.name}"]
        assert row.flag == "--grpc-" + field.name.replace("_", "-")
        assert row.takes("serve")
        assert not row.takes("keys list")


def _tables(section: str) -> list[list[dict[str, str]]]:
    """The markdown tables of `section`, as rows of header → cell."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] = []
    for line in section.splitlines():
        if not line.startswith("|"):
            header = []
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if not header:
            header = cells
            tables.append([])
        elif not set(line) <= set("|- "):
            tables[-1].append(dict(zip(header, cells, strict=True)))
    return tables


def _quoted(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def _documented_default(cell: str) -> set[str]:
    return set(_quoted(cell)) or {cell}


def test_the_readme_lists_every_option_as_the_table_has_it() -> None:
    text = README.read_text()
    section = text[
        text.index("## Configuration\n") : text.index("\n## ", text.index("## Configuration\n") + 1)
    ]
    (rows,) = [t for t in _tables(section) if t and "environment" in t[0]]
    flags = [_quoted(row["flag"]) for row in rows]
    for option in OPTIONS:
        (row,) = [r for r, f in zip(rows, flags, strict=True) if option.flag in f]
        assert set(_quoted(row["flag"])) == set(map(config.flag_of, option.names)), row
        assert set(_quoted(row["environment"])) == set(map(config.env_of, option.names)), row
        shown = {option.default or "unset"} | {option.other_default or option.default or "unset"}
        assert _documented_default(row["default"]) >= shown, row
    listed = {flag for row in flags for flag in row}
    assert listed == {config.flag_of(name) for option in OPTIONS for name in option.names}


def test_every_readme_table_of_flags_shows_the_tables_defaults() -> None:
    """The Keys and Limits sections' tables of flags (policy, gRPC limits) agree too."""
    by_flag = {config.flag_of(name): option for option in OPTIONS for name in option.names}
    checked = 0
    for table in _tables(README.read_text()):
        for row in table:
            if "flag" not in row or "default" not in row:
                continue
            for flag in _quoted(row["flag"]):
                assert flag in by_flag, f"README documents {flag}, which no command takes"
                assert (by_flag[flag].default or "unset") in _documented_default(row["default"]), (
                    row
                )
                checked += 1
    assert checked > len(OPTIONS)  # the configuration table and the others


def test_each_grpc_limit_has_its_help_written_once_beside_its_field() -> None:
    """The help of a `--grpc-*` row is the text stored with its GrpcLimits field, so the two
    cannot drift apart; every row says something of its own."""
    by_target = {option.target: option for option in OPTIONS}
    helps = []
    for field in dataclasses.fields(GrpcLimits):
        row = by_target[f"grpc_limits.{field.name}"]
        assert row.help == field.metadata.get("help"), f"{row.flag}: help not from its field"
        helps.append(row.help)
    assert len(set(helps)) == len(helps)
