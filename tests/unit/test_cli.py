"""Every `serve` option shows its environment variable in --help, and the variable works."""

from __future__ import annotations

import pytest

from agentrouter_auth.cli import SERVE_OPTIONS, build_parser


def test_every_serve_option_documents_its_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for dest in SERVE_OPTIONS:
        assert f"--{dest.replace('_', '-')}" in text
        assert f"AGENTROUTER_AUTH_{dest.upper()}" in text


@pytest.mark.parametrize(
    ("dest", "from_env", "from_flag"),
    [("grpc_addr", "127.0.0.1:7000", "127.0.0.1:7001"), ("publish_ahead", "2d", "3d"),
     ("log_format", "text", "json"), ("workers", "3", "4"), ("access_log", "on", "off"),
     ("tls_cert", "/etc/tls/cert.pem", "/srv/cert.pem")],
)  # fmt: skip
def test_environment_sets_the_default_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch, dest: str, from_env: str, from_flag: str
) -> None:
    monkeypatch.setenv(f"AGENTROUTER_AUTH_{dest.upper()}", from_env)
    assert str(getattr(build_parser().parse_args(["serve"]), dest)) == from_env
    flag = f"--{dest.replace('_', '-')}"
    assert str(getattr(build_parser().parse_args(["serve", flag, from_flag]), dest)) == from_flag
