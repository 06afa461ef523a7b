"""The last line of defence: whatever a command raises reaches the user as one line."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agentrouter_auth import cli
from agentrouter_auth.keys.store import KeyStoreError


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (OSError(errno.EIO, os.strerror(errno.EIO), "/keys/x.jwk.json"),
         "agentrouter-auth: error: /keys/x.jwk.json: Input/output error"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
         "agentrouter-auth: error: No space left on device"),
        (RuntimeError("first line\nsecond line"),
         "agentrouter-auth: error: unexpected RuntimeError (please report it): first line "
         "second line"),
        (KeyStoreError("/keys", "a reason\nover two lines"),
         "agentrouter-auth: error: /keys: a reason over two lines"),
    ],
    ids=["oserror-with-file", "oserror", "unexpected", "multi-line-message"],
)  # fmt: skip
def test_any_error_is_one_line_and_exit_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    raised: Exception,
    expected: str,
) -> None:
    def fail(*_: object) -> int:
        raise raised

    monkeypatch.setitem(cli._HANDLERS, ("keys", "list"), fail)
    assert cli.main(["keys", "list", "--keys-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == expected + "\n"
