"""One error root: every error class of the server derives from `AgentRouterAuthError`, and the
CLI reports any of them in one line without keeping a list of types."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import agentrouter_auth
from agentrouter_auth import cli
from agentrouter_auth.errors import AgentRouterAuthError


def _modules() -> list[str]:
    prefix = f"{agentrouter_auth.__name__}."
    walk = pkgutil.walk_packages(agentrouter_auth.__path__, prefix)
    return sorted(info.name for info in walk if not info.name.endswith(".__main__"))


def _error_classes() -> list[type[BaseException]]:
    found = []
    for name in _modules():
        for value in vars(importlib.import_module(name)).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and not value.__name__.startswith("_")  # private control flow, never reported
            ):
                found.append(value)
    return found


def test_every_public_error_class_of_the_server_derives_from_the_one_root() -> None:
    errors = _error_classes()
    assert len(errors) >= 15, f"the walk found too few error classes: {errors}"
    assert [e.__qualname__ for e in errors if not issubclass(e, AgentRouterAuthError)] == []


def test_the_cli_names_no_error_type_but_the_root() -> None:
    assert not hasattr(cli, "ERRORS"), "the CLI keeps a list of error types again"


class _NewError(AgentRouterAuthError, ValueError):
    """An error type the CLI has never heard of."""


def test_a_new_error_type_is_reported_in_one_line_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    def handler(*_args: object) -> int:
        raise _NewError("the thing\nwent wrong")

    monkeypatch.setitem(cli.HANDLERS, "keys list", handler)
    status = cli.main(["keys", "list", "--keys-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 1
    assert err == "agentrouter-auth: error: the thing went wrong\n"
