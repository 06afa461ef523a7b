"""Key-encryption keys: a KEK file is refused in one line unless it is private and 32 bytes of
base64; the envelope opens only what was sealed for the same kid, alg and KEK."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import stat
from pathlib import Path

import pytest

from agentrouter_auth.config import ConfigError, command_config, from_environment, to_environment
from agentrouter_auth.keys.kek import Envelope, EnvelopeError, KekError, read_kek
from tests.integration.serverproc import AGENTROUTER_AUTH, refused_in_one_line
from tests.support import write_kek


def test_a_sealed_key_opens_only_for_its_kid_alg_and_an_unchanged_value(tmp_path: Path) -> None:
    kek = read_kek(str(write_kek(tmp_path / "kek")))
    envelope = Envelope([kek])
    kek_id, sealed = envelope.seal("kid-a", "ES256", b'{"d": "secret"}')
    assert kek_id == kek.id
    assert len(kek_id) == 8
    assert b"secret" not in sealed
    assert envelope.open("kid-a", "ES256", kek_id, sealed) == b'{"d": "secret"}'
    assert envelope.seal("kid-a", "ES256", b"x")[1] != envelope.seal("kid-a", "ES256", b"x")[1]
    edited = bytearray(sealed)
    edited[-1] ^= 1
    for kid, alg, value in (("kid-b", "ES256", sealed), ("kid-a", "EdDSA", sealed),
                            ("kid-a", "ES256", bytes(edited))):  # fmt: skip
        with pytest.raises(EnvelopeError, match=f"does not decrypt under KEK {kek.id.hex()}"):
            envelope.open(kid, alg, kek_id, value)
    with pytest.raises(EnvelopeError, match="not a format 1 sealed value"):
        envelope.open("kid-a", "ES256", kek_id, b"\x02" + sealed[1:])


def test_the_first_kek_seals_and_every_kek_opens(tmp_path: Path) -> None:
    old = read_kek(str(write_kek(tmp_path / "old")))
    new = read_kek(str(write_kek(tmp_path / "new")))
    kek_id, sealed = Envelope([old]).seal("k", "EdDSA", b"private")
    both = Envelope([new, old])
    assert both.open("k", "EdDSA", kek_id, sealed) == b"private"
    assert both.seal("k", "EdDSA", b"private")[0] == new.id
    with pytest.raises(EnvelopeError, match=f"sealed under KEK {old.id.hex()}, which is not among"):
        Envelope([new]).open("k", "EdDSA", kek_id, sealed)


def _kek_text(size: int) -> str:
    return base64.b64encode(os.urandom(size)).decode() + "\n"


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        (None, 0o644, "must not be readable or writable by group or others (mode 0644); chmod 600"),
        (None, 0o640, "(mode 0640)"),
        (None, 0o604, "(mode 0604)"),
        (None, 0o620, "(mode 0620)"),
        (_kek_text(31), 0o600, "decodes to 31 bytes; a KEK is 32 random bytes"),
        (_kek_text(33), 0o600, "decodes to 33 bytes"),
        ("", 0o600, "decodes to 0 bytes"),
        ("not base64 at all!\n", 0o600, "not base64; make a KEK with `openssl rand -base64 32"),
        (_kek_text(16) + _kek_text(16), 0o600, "holds one line of base64, not 2"),
    ],
)  # fmt: skip
def test_a_kek_file_is_refused_in_one_line_naming_it(
    tmp_path: Path, content: str | None, mode: int, reason: str
) -> None:
    path = write_kek(tmp_path / "kek", mode=mode)
    if content is not None:
        path.write_text(content)
    with pytest.raises(KekError) as failure:
        read_kek(str(path))
    assert str(failure.value).startswith(f"{path}: ")
    assert reason in str(failure.value)
    with pytest.raises(ConfigError, match=f"^--kek-file: {re.escape(str(path))}: ") as refused:
        command_config("keys list", {"kek_file": [str(path)]}, {})
    assert "\n" not in str(refused.value)


def test_modes_0600_and_0400_are_accepted_and_a_missing_file_is_named(tmp_path: Path) -> None:
    for mode in (0o600, 0o400):
        assert len(read_kek(str(write_kek(tmp_path / f"kek-{mode:o}", mode=mode))).secret) == 32
    with pytest.raises(KekError, match=r"absent: unreadable: No such file"):
        read_kek(str(tmp_path / "absent"))


def test_several_keks_by_flag_or_variable_reach_the_workers_in_order(tmp_path: Path) -> None:
    first, second = write_kek(tmp_path / "first"), write_kek(tmp_path / "second")
    by_flag = command_config("keys list", {"kek_file": [str(first), str(second)]}, {})
    by_env = command_config("keys list", {}, {"AGENTROUTER_AUTH_KEK_FILE": f"{first}:{second}"})
    assert [k.path for k in by_flag.keks] == [str(first), str(second)]
    assert by_env.keks == by_flag.keks
    assert command_config("keys list", {}, {}).keks == ()
    served = from_environment({"AGENTROUTER_AUTH_KEK_FILE": f"{first}:{second}"})
    exported = to_environment(served)
    assert exported["AGENTROUTER_AUTH_KEK_FILE"] == f"{first}:{second}"
    assert from_environment(exported).keks == served.keks
    with pytest.raises(ConfigError, match="names an empty path"):
        command_config("keys list", {}, {"AGENTROUTER_AUTH_KEK_FILE": f"{first}:"})


def test_a_mac_verifies_only_for_its_message_under_a_kek_given(tmp_path: Path) -> None:
    old = read_kek(str(write_kek(tmp_path / "old")))
    new = read_kek(str(write_kek(tmp_path / "new")))
    kek_id, tag = Envelope([old]).mac(b"row")
    assert kek_id == old.id
    assert len(tag) == 32
    both = Envelope([new, old])
    both.verify(kek_id, b"row", tag)  # every KEK verifies
    assert both.mac(b"row")[0] == new.id  # the first MACs
    with pytest.raises(EnvelopeError, match=f"does not verify under KEK {old.id.hex()}"):
        both.verify(kek_id, b"row!", tag)
    with pytest.raises(EnvelopeError, match=f"MACed under KEK {old.id.hex()}, which is not among"):
        Envelope([new]).verify(kek_id, b"row", tag)
    # The MAC key is derived from the KEK, not the KEK (the AES key) itself.
    assert tag != hmac.new(old.secret, b"row", hashlib.sha256).digest()


@pytest.mark.parametrize("command", [["keys", "list"], ["serve"]])
def test_a_kek_file_that_is_a_fifo_is_refused_at_once_by_the_real_cli(
    tmp_path: Path, command: list[str]
) -> None:
    """Opening a FIFO for reading waits for a writer: the command would hang. Bounded by the
    subprocess timeout, so a regression fails instead of hanging the suite."""
    fifo = tmp_path / "kek"
    os.mkfifo(fifo, 0o600)
    argv = [*AGENTROUTER_AUTH, *command, "--key-store", str(tmp_path / "keys"),
            "--kek-file", str(fifo)]  # fmt: skip
    line = refused_in_one_line(argv, timeout=30)
    assert line == f"agentrouter-auth: error: --kek-file: {fifo}: a FIFO, not a regular file"
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # refused without being touched


def test_a_directory_or_a_device_is_refused_as_a_kek_file(tmp_path: Path) -> None:
    with pytest.raises(KekError, match=r": a directory, not a regular file$"):
        read_kek(str(tmp_path))
    with pytest.raises(KekError, match=r": a character device, not a regular file$"):
        read_kek("/dev/null")
