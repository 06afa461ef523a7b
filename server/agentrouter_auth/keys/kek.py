"""Key-encryption keys (KEKs) and the envelope that keeps private keys encrypted at rest.

A store that keeps private keys where others can copy them (a database, its dumps and backups)
stores each private JWK sealed with AES-256-GCM under a KEK read from a file, never in the
clear: a dump alone never yields a signing key.

A KEK file holds 32 random bytes in base64 on one line (`openssl rand -base64 32`) and must not
be readable or writable by group or others (mode 0600 or 0400). Several KEKs may be given: the
first seals, every one opens, so a KEK is rotated by putting a new one first, re-sealing every
row (`agentrouter-auth store rekey`), then dropping the old one. Each sealed value records the
id of the KEK that sealed it (the first 8 bytes of the KEK's SHA-256), so opening picks it.

The associated data binds a sealed value to its format version, its KEK, and the kid and alg of
its key: a value copied to another key's row, or edited, fails to open.

The same KEKs authenticate whole records (`mac`, `verify`): HMAC-SHA256 under a subkey derived
from the KEK with HKDF and a label of its own (never the AES key itself), so that write access
to where the records live is not enough to add, revive or age a key. The first KEK MACs; every
one verifies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agentrouter_auth.errors import AgentRouterAuthError

KEK_BYTES = 32
KEK_ID_BYTES = 8
NONCE_BYTES = 12
FORMAT = 1
"""The first byte of every sealed value: the layout `FORMAT || nonce || ciphertext+tag`."""
_LABEL = "agentrouter-auth private JWK"
_MAC_INFO = b"agentrouter-auth record MAC v1"
"""HKDF info of the MAC subkey: a key of its own, never the AES key."""


class KekError(AgentRouterAuthError, ValueError):
    """A KEK file cannot be used; the message names the file and says why."""


class EnvelopeError(AgentRouterAuthError, ValueError):
    """A sealed value cannot be opened; the message says why (the caller names the key)."""


@dataclass(frozen=True, slots=True)
class Kek:
    """A key-encryption key and the file it came from."""

    path: str
    secret: bytes = field(repr=False)

    @property
    def id(self) -> bytes:
        """What a sealed value records to name its KEK: the first 8 bytes of its SHA-256."""
        return hashlib.sha256(self.secret).digest()[:KEK_ID_BYTES]


def read_kek(path: str) -> Kek:
    """The KEK in `path`, refused with one line unless it is private and 32 bytes of base64."""
    try:
        # Symlinks are followed: a Kubernetes Secret links each file into its current version.
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer, for ever; what was
        # opened is checked through its descriptor, so nothing can be swapped in between.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise KekError(f"{path}: {_file_type(st.st_mode)}, not a regular file")
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise KekError(
                    f"{path}: a key-encryption key must not be readable or writable by group or "
                    f"others (mode {mode:04o}); chmod 600 it"
                )
        except BaseException:
            os.close(fd)
            raise
        with open(fd, "rb") as handle:
            raw = handle.read(4096)
    except OSError as err:
        raise KekError(f"{path}: unreadable: {err.strerror or err}") from err
    text = raw.strip()
    if b"\n" in text or b"\r" in text:
        raise KekError(f"{path}: a KEK file holds one line of base64, not {len(text.splitlines())}")
    try:
        secret = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KekError(
            f"{path}: not base64; make a KEK with `openssl rand -base64 32 > {path}`"
        ) from None
    if len(secret) != KEK_BYTES:
        raise KekError(
            f"{path}: decodes to {len(secret)} bytes; a KEK is {KEK_BYTES} random bytes "
            f"(`openssl rand -base64 32`)"
        )
    return Kek(path, secret)


_FILE_TYPES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _file_type(mode: int) -> str:
    return next((name for test, name in _FILE_TYPES if test(mode)), "a special file")


class Envelope:
    """Seals private keys under the first KEK; opens what any of them sealed."""

    def __init__(self, keks: Sequence[Kek]) -> None:
        if not keks:
            raise ValueError("an envelope needs at least one KEK")
        self.keks = tuple(keks)
        self._by_id: dict[bytes, Kek] = {}
        for kek in self.keks:
            self._by_id.setdefault(kek.id, kek)
        self._mac_keys = {kek_id: _mac_key(kek) for kek_id, kek in self._by_id.items()}

    @property
    def sealing(self) -> Kek:
        """The KEK new values are sealed with: the first given."""
        return self.keks[0]

    def seal(self, kid: str, alg: str, plaintext: bytes) -> tuple[bytes, bytes]:
        """`(kek id, sealed value)` of `plaintext`, bound to `kid` and `alg`."""
        kek = self.sealing
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(kek.secret).encrypt(nonce, plaintext, _associated(kek.id, kid, alg))
        return kek.id, bytes([FORMAT]) + nonce + sealed

    def open(self, kid: str, alg: str, kek_id: bytes, sealed: bytes) -> bytes:
        """The plaintext of a value `seal` made for `kid` and `alg`; EnvelopeError otherwise."""
        kek = self._by_id.get(bytes(kek_id))
        if kek is None:
            known = ", ".join(k.id.hex() for k in self.keks)
            raise EnvelopeError(
                f"sealed under KEK {bytes(kek_id).hex()}, which is not among the KEKs given "
                f"({known}): give its file with --kek-file"
            )
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[0] != FORMAT:
            raise EnvelopeError(f"not a format {FORMAT} sealed value")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        try:
            return AESGCM(kek.secret).decrypt(nonce, body, _associated(kek.id, kid, alg))
        except InvalidTag:
            raise EnvelopeError(
                f"does not decrypt under KEK {kek.id.hex()} ({kek.path}): the value was edited, "
                "or copied from another key's row"
            ) from None

    def mac(self, message: bytes) -> tuple[bytes, bytes]:
        """`(kek id, HMAC-SHA256 tag)` of `message` under the first KEK's MAC subkey."""
        kek = self.sealing
        return kek.id, _hmac(self._mac_keys[kek.id], message).finalize()

    def verify(self, kek_id: bytes, message: bytes, tag: bytes) -> None:
        """Return if `tag` is the MAC of `message` under KEK `kek_id`; EnvelopeError otherwise."""
        kek = self._by_id.get(bytes(kek_id))
        if kek is None:
            known = ", ".join(k.id.hex() for k in self.keks)
            raise EnvelopeError(
                f"MACed under KEK {bytes(kek_id).hex()}, which is not among the KEKs given "
                f"({known})"
            )
        try:
            _hmac(self._mac_keys[kek.id], message).verify(bytes(tag))
        except InvalidSignature:
            raise EnvelopeError(f"does not verify under KEK {kek.id.hex()} ({kek.path})") from None


def _mac_key(kek: Kek) -> bytes:
    """The MAC subkey of `kek`: HKDF-SHA256 with its own label."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(kek.secret)


def _hmac(key: bytes, message: bytes) -> hmac.HMAC:
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac


def _associated(kek_id: bytes, kid: str, alg: str) -> bytes:
    """What a sealed value is bound to (unambiguous: a JSON array)."""
    return json.dumps([_LABEL, FORMAT, kek_id.hex(), kid, alg]).encode()


def new_kek_text() -> str:
    """A new KEK file's content (for tests and tooling): 32 random bytes, base64, one line."""
    return base64.b64encode(os.urandom(KEK_BYTES)).decode() + "\n"
