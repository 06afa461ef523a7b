"""`keys …` run in-process against real stores (a directory, a PostgreSQL database): the store
is chosen by path or file: URL alike, and `keys list` shows each key's state and next step."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from jwcrypto import jwk

from agentrouter_auth import cli
from agentrouter_auth.keys.directory import DirectoryStore
from tests.keystores import StoreFactory


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_a_file_url_and_a_path_name_the_same_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "keys", "init", "--key-store", "file:my%20keys", "--alg", "EdDSA")
    assert status == 0, err
    (stored,) = DirectoryStore(tmp_path / "my keys").read().keys
    for location in (f"file://{tmp_path}/my%20keys", str(tmp_path / "my keys"), "my keys"):
        status, out, err = run(capsys, "keys", "list", "--json", "--key-store", location)
        assert status == 0, err
        assert [key["kid"] for key in json.loads(out)["keys"]] == [stored.kid]


def test_list_shows_states_times_and_the_next_step(
    store_factory: StoreFactory,
    capsys: pytest.CaptureFixture[str],
    key_pool: Sequence[jwk.JWK],
) -> None:
    es256 = [key for key in key_pool if key["alg"] == "ES256"]
    store_factory.seed(es256)  # created 1970-01-12T13:46:40Z: one active, one pending
    status, out, _ = run(capsys, "keys", "list", *store_factory.options())
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["KID", "ALG", "STATE", "CREATED", "ACTIVATED", "RETIRED", "NEXT"]
    by_kid = {row.split()[0]: row.split()[1:] for row in rows}
    active, pending = by_kid[es256[0]["kid"]], by_kid[es256[1]["kid"]]
    assert active[:4] == ["ES256", "active", "1970-01-12T13:46:40Z", "1970-01-12T13:46:40Z"]
    assert pending[:4] == ["ES256", "pending", "1970-01-12T13:46:40Z", "-"]
    assert active[4] == "-"  # not retired
    assert active[5] == "retires"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", active[6])
    assert {row.index(" ES256 ") + 1 for row in rows} == {header.index("ALG")}  # aligned


def test_import_refuses_what_is_not_a_jwk_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_factory: StoreFactory
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"kty": "EC"}')
    status, _, err = run(capsys, "keys", "import", *store_factory.options(), str(bad))
    assert status == 1
    assert re.fullmatch(r"agentrouter-auth: error: \S*bad\.json: not a valid JWK: .*\n", err)
