"""The command line: every option of the table in every command's --help with its variable and
default, flags over variables, and whatever a command raises reaching the user as one line."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime, timedelta
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentrouter_auth import cli, config
from agentrouter_auth.keys.store import KeyStoreError


@pytest.mark.parametrize("command", [command.name for command in cli.COMMANDS])
def test_every_option_documents_its_environment_variable_and_default(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args([*command.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())
    options = config.options_for(command)
    assert any(option.name == "key_store" for option in options)
    for option in options:
        default = option.default_for(command) or "unset"
        assert f"(env {option.env}; default {default})" in text, option.flag
        for alias in option.aliases:
            assert f"{config.flag_of(alias)} " in text
            assert config.env_of(alias) in text
    serve_only = [option for option in config.OPTIONS if not option.takes(command)]
    assert all(f"{option.flag} " not in text for option in serve_only)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for localhost, made now (never committed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("dest", "from_env", "from_flag"),
    [("grpc_addr", "127.0.0.1:7000", "127.0.0.1:7001"), ("publish_ahead", "2d", "3d"),
     ("log_format", "text", "json"), ("workers", "3", "4"), ("access_log", "on", "off"),
     ("tls_cert", "env.pem", "flag.pem"), ("key_store", "/srv/from-env", "file:///srv/flag")],
)  # fmt: skip
def test_environment_sets_the_default_and_the_flag_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dest: str, from_env: str, from_flag: str
) -> None:
    if dest == "tls_cert":  # two copies of one certificate, so each goes with the key
        cert, key = _self_signed(tmp_path)
        monkeypatch.setenv("AGENTROUTER_AUTH_TLS_KEY", str(key))
        for name in (from_env, from_flag):
            (tmp_path / name).write_bytes(cert.read_bytes())
        from_env, from_flag = str(tmp_path / from_env), str(tmp_path / from_flag)

    def built(*argv: str) -> str:
        """The option's value in the `serve` configuration, as text."""
        args = cli.build_parser().parse_args(["serve", *argv])
        settings = config.serve_config(vars(args), os.environ)
        return config.to_environment(settings)[config.env_of(dest)]

    monkeypatch.setenv(config.env_of(dest), from_env)
    assert built() == from_env
    assert built(config.flag_of(dest), from_flag) == from_flag


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

    monkeypatch.setitem(cli.HANDLERS, "keys list", fail)
    assert cli.main(["keys", "list", "--keys-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == expected + "\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["keys", "list", "--key-store", "/a", "--keys-dir", "/b"],
         "agentrouter-auth: error: --key-store and --keys-dir are given different values: "
         "give one"),
        (["keys", "list", "--key-store", "mysql://db/keys"],
         "agentrouter-auth: error: --key-store: mysql://db/keys: unknown key store scheme "
         "'mysql': use a directory path or one of file:, postgres:, postgresql:"),
        (["serve", "--keys-dir", "/nonexistent/keys"],
         "agentrouter-auth: error: no keys in /nonexistent/keys: create one with "
         "`agentrouter-auth keys init --key-store /nonexistent/keys`"),
    ],
)  # fmt: skip
def test_a_store_that_cannot_be_chosen_or_is_empty_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert cli.main(argv) == 1
    assert capsys.readouterr().err == expected + "\n"


def test_a_bad_variable_is_named_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AGENTROUTER_AUTH_ROTATION_PERIOD", "soon")
    assert cli.main(["keys", "list", "--key-store", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(
        "agentrouter-auth: error: AGENTROUTER_AUTH_ROTATION_PERIOD: 'soon' is not a duration"
    )


def test_the_console_script_runs_main() -> None:
    (script,) = entry_points(group="console_scripts", name="agentrouter-auth")
    assert script.load() is cli.main
