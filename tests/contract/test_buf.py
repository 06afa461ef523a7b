"""buf guards the contract: the checks pass on the repository and fail on real violations.

Each violation is made in a scratch copy of the repository and checked with the same code
`make lint` and `make breaking` run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import contract

PROTO = Path("proto/agentrouter/auth/v1/auth.proto")


def edit(root: Path, old: str, new: str, *, regex: bool = False) -> None:
    """Replace `old` with `new` once in the scratch contract, failing if `old` is absent."""
    path = root / PROTO
    text = path.read_text()
    changed = re.sub(old, new, text, count=1) if regex else text.replace(old, new, 1)
    assert changed != text, f"edit did not apply: {old!r}"
    path.write_text(changed)


def test_repository_contract_is_clean() -> None:
    contract.lint()
    contract.breaking()


def test_missing_comment_fails_lint(repo_copy: Path) -> None:
    edit(repo_copy, '  // Key type (RFC 7517 §4.1): "RSA", "EC" or "OKP".\n', "")
    with pytest.raises(
        contract.ContractError, match=r'Field "kty" should have a non-empty comment'
    ):
        contract.lint(repo_copy)


def test_standard_naming_violation_fails_lint(repo_copy: Path) -> None:
    edit(repo_copy, "string use = 2;", "string Use = 2;")
    with pytest.raises(contract.ContractError, match="lower_snake_case"):
        contract.lint(repo_copy)


def test_unformatted_proto_fails_format_check(repo_copy: Path) -> None:
    edit(repo_copy, "  string kty = 1;", "string   kty=1;")
    with pytest.raises(contract.ContractError, match="kty"):
        contract.lint(repo_copy)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            r"  // Y coordinate[^\n]*\n  string y = 14;\n",
            "",
            'Previously present field "14" with name "y" on message "JWK" was deleted',
            id="delete-field",
        ),
        pytest.param(
            r'json_name = "x5t#S256"',
            'json_name = "x5tS256"',
            'changed option "json_name" from "x5t#S256" to "x5tS256"',
            id="change-json-name",
        ),
        pytest.param(
            r"string kid = 5;",
            "string kid = 15;",
            'Previously present field "5" with name "kid" on message "JWK" was deleted',
            id="renumber-field",
        ),
        pytest.param(
            r"string crv = 12;",
            "bytes crv = 12;",
            'changed type from "string" to "bytes"',
            id="change-type",
        ),
    ],
)
def test_breaking_change_fails(repo_copy: Path, old: str, new: str, message: str) -> None:
    edit(repo_copy, old, new, regex=True)
    with pytest.raises(contract.ContractError) as failure:
        contract.breaking(repo_copy)
    assert message in str(failure.value)


def test_compatible_addition_passes_and_becomes_the_new_baseline(repo_copy: Path) -> None:
    addition = "  // Added for the test.\n  string ext_test = 15;\n}"
    edit(repo_copy, r"(  string y = 14;\n)}", r"\1" + addition.replace("\n", r"\n"), regex=True)
    contract.lint(repo_copy)
    contract.breaking(repo_copy)

    contract.freeze(repo_copy)
    edit(repo_copy, "  // Added for the test.\n  string ext_test = 15;\n", "")
    with pytest.raises(
        contract.ContractError, match='name "ext_test" on message "JWK" was deleted'
    ):
        contract.breaking(repo_copy)
