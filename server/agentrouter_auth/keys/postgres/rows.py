"""Rows of the PostgreSQL store: how a key is encoded in its row and checked back, the row's
integrity MAC, and the sealed ring state every row must agree with.

Every row is checked as a key file is, by the shared check of a stored key (`keys.check`), and
carries an HMAC under a KEK over all of its columns (`row_mac_message`): write access to the
database is not enough to publish a key, revive one or age one. A row MAC binds a row to itself
only, so the rows must also agree exactly with the sealed ring state (`RingState`): a
generation, every key's kid, state and row digest, and the ring's rotation policy, under an HMAC
of a KEK. A bad row is a KeyStoreError naming its kid.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jwcrypto import jwk
from jwcrypto.common import JWException
from psycopg.types.json import Jsonb

from agentrouter_auth.keys.check import check_public_members, check_stored_key
from agentrouter_auth.keys.kek import Envelope, EnvelopeError
from agentrouter_auth.keys.material import InvalidKeyError
from agentrouter_auth.keys.store import (
    Entry,
    KeySet,
    KeyStoreError,
    RecordedPolicy,
    StoredKey,
    check_one_active_per_alg,
)

MAC_FORMAT = 2
"""The version of the encoding a row's MAC covers (`row_mac_message`), which says when the row
was written: 2 under a sealed ring state, `ADOPTABLE_MAC_FORMAT` before one existed. Migration
2 adopts (seals as they stand) only rows of the second kind: a row of the first found with no
ring state was written back behind the store's back (attack F1), and only `store seal` takes it."""
ADOPTABLE_MAC_FORMAT = 1
"""The MAC format of a row written before the ring state existed (by an earlier version)."""
RING_STATE_FORMAT = 1
"""The version of the sealed ring state's document (`RingState.document`)."""


def row_mac_message(columns: Sequence[Any], mac_format: int = MAC_FORMAT) -> bytes:
    """What a row's MAC covers, canonically encoded (a JSON array; the public JWK with sorted
    members) of `columns`, the first ten of `schema.SELECT_KEYS` (kid … kek_id): every column
    but the MAC's own, the sealed private half by its KEK and SHA-256, and `mac_format`."""
    kid, alg, state, origin, created, activated, retired, public, sealed, kek_id = columns
    sealed_by = None if kek_id is None else bytes(kek_id).hex()
    sealed_hash = None if sealed is None else hashlib.sha256(bytes(sealed)).hexdigest()
    record = ["agentrouter-auth key row", mac_format, kid, alg, state, origin, created,
              activated, retired, public, sealed_by, sealed_hash]  # fmt: skip
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def row_digest(columns: Sequence[Any]) -> str:
    """The digest the ring state lists for a row: SHA-256 of its MAC message (every column but
    the MAC; a private half is sealed with a fresh nonce at every write, so a row written back
    from an earlier state differs even when its state and times do not). Always of the
    adoptable format's message, so ring states sealed before format 2 still list it."""
    return hashlib.sha256(row_mac_message(columns[:10], ADOPTABLE_MAC_FORMAT)).hexdigest()


@dataclass(frozen=True, slots=True)
class Listed:
    """A key as the ring state lists it."""

    kid: str
    state: str
    row: str
    """`row_digest` of its row."""


@dataclass(frozen=True, slots=True)
class RingState:
    """The sealed ring state: what the key rows must be, exactly, and the rotation policy."""

    generation: int
    keys: tuple[Listed, ...]
    policy: RecordedPolicy | None

    def document(self) -> str:
        """The canonical JSON the MAC covers (a JSON object, where a row's MAC message is an
        array, so neither can pass for the other)."""
        record = {
            "what": "agentrouter-auth ring state",
            "format": RING_STATE_FORMAT,
            "generation": self.generation,
            "keys": [[key.kid, key.state, key.row] for key in self.keys],
            "policy": None if self.policy is None else self.policy.to_json(),
        }
        return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def parse(cls, document: str) -> RingState:
        """The state a document describes; ValueError if it is not one."""
        record = json.loads(document)
        if not isinstance(record, dict) or record.get("format") != RING_STATE_FORMAT:
            raise ValueError(f"not a format {RING_STATE_FORMAT} ring state")
        generation, keys = record.get("generation"), record.get("keys")
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise ValueError("the generation is not a positive integer")
        if not isinstance(keys, list) or not all(
            isinstance(key, list) and len(key) == 3 and all(isinstance(v, str) for v in key)
            for key in keys
        ):
            raise ValueError("keys is not a list of [kid, state, digest]")
        policy = record.get("policy")
        recorded = None if policy is None else RecordedPolicy.from_json(policy)
        return cls(generation, tuple(Listed(*key) for key in keys), recorded)

    def differences(self, other: RingState) -> list[str]:
        """The kids whose listing differs between the two states: first those this state lists
        and `other` does not (what it would bring back), then the others; sorted."""
        mine = {key.kid: key for key in self.keys}
        theirs = {key.kid: key for key in other.keys}
        differ = {kid for kid in mine.keys() | theirs.keys() if mine.get(kid) != theirs.get(kid)}
        return sorted(differ, key=lambda kid: (kid in theirs, kid))


def listing_of(rows: Sequence[tuple[Any, ...]]) -> list[Listed]:
    """The ring state's listing of `rows` as they are."""
    return [Listed(str(row[0]), str(row[2]), row_digest(row)) for row in rows]


class RowCodec:
    """Keys to rows and back for one store: its KEKs (`envelope`) seal, open and MAC; its
    `description` names it in refusals."""

    def __init__(self, envelope: Envelope, description: str) -> None:
        self.envelope = envelope
        self.description = description

    def refuse(self, kid: object, reason: str) -> KeyStoreError:
        return KeyStoreError(self.description, f"key {kid}: {reason}")

    def key_set(self, rows: Sequence[tuple[Any, ...]]) -> KeySet:
        key_set = KeySet(tuple(self.stored(row) for row in rows))
        check_one_active_per_alg(key_set, self.description)
        return key_set

    def stored(self, row: tuple[Any, ...]) -> StoredKey:
        """A row as a checked key: the shared check of a stored key (`check_stored_key`), on
        the public JWK and then on the private half once opened, and the row's MAC."""
        kid, alg, state, origin, created, activated, retired, public, sealed, kek_id = row[:10]
        record = {"kid": kid, "alg": alg, "state": state, "origin": origin, "created": created,
                  "activated": activated, "retired": retired}  # fmt: skip
        try:
            entry = Entry.from_json(record)
        except ValueError as err:
            raise self.refuse(kid, f"corrupt row: {err}") from err
        if not isinstance(public, dict):
            raise self.refuse(kid, "the public JWK is not a JSON object")
        try:
            check_public_members(public)
            public_key = self._jwk(public, "the public JWK")
            check_stored_key(entry, public_key, record="the row", private=sealed is not None)
        except InvalidKeyError as err:
            raise self.refuse(kid, str(err)) from err
        key = public_key
        if sealed is not None:
            key = self._private(entry, public_key, bytes(kek_id or b""), sealed)
        self._verify_mac(kid, row)
        return StoredKey(entry, key)

    def _verify_mac(self, kid: object, row: tuple[Any, ...]) -> int:
        """Refuse a row whose MAC is missing or is not that of its values under a KEK given:
        one written by hand, edited, or copied from a database under another KEK. Return the
        MAC's format (`MAC_FORMAT`: written under a sealed ring state)."""
        mac_kek_id, mac = row[10], row[11]
        if mac_kek_id is None or mac is None:
            raise self.refuse(
                kid,
                "the row has no integrity MAC: it was not written by agentrouter-auth with the "
                "KEK (added by hand?); refused",
            )
        try:
            self.envelope.verify(bytes(mac_kek_id), row_mac_message(row[:10]), bytes(mac))
            return MAC_FORMAT
        except EnvelopeError:
            pass
        try:
            message = row_mac_message(row[:10], ADOPTABLE_MAC_FORMAT)
            self.envelope.verify(bytes(mac_kek_id), message, bytes(mac))
            return ADOPTABLE_MAC_FORMAT
        except EnvelopeError as err:
            raise self.refuse(
                kid,
                f"the row's integrity MAC {err}: the row was edited, added by hand, or copied "
                "from a database under another KEK; refused",
            ) from err

    def check_adoptable(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Refuse (naming its kid) a row written under a sealed ring state: with no ring state
        left to check it against, it was written back behind the store's back, and sealing it
        would revive whatever it holds (each row is checked by itself first, `key_set`)."""
        for row in rows:
            if self._verify_mac(row[0], row) == MAC_FORMAT:
                raise self.refuse(
                    row[0],
                    "its row was written under a sealed ring state, but the ring state is gone "
                    "and the schema is being migrated to it again (agentrouter_auth.ring_state "
                    "dropped, the schema rolled back?): such a row is not adopted as an earlier "
                    "version's would be; restore the database from a backup, or check the keys "
                    "and run `agentrouter-auth store seal` to accept them as they are",
                )

    def _private(self, entry: Entry, public_key: jwk.JWK, kek_id: bytes, sealed: bytes) -> jwk.JWK:
        """The sealed private key of a row, opened and checked against its public JWK."""
        kid = entry.kid
        try:
            plaintext = self.envelope.open(kid, entry.alg, kek_id, bytes(sealed))
        except EnvelopeError as err:
            raise self.refuse(kid, f"the private key {err}") from err
        try:
            members = json.loads(plaintext)
        except (ValueError, UnicodeDecodeError) as err:
            raise self.refuse(kid, "the private key is not a valid JWK (not JSON)") from err
        if not isinstance(members, dict):
            raise self.refuse(kid, "the private key is not a valid JWK (not an object)")
        try:
            private = self._jwk(members, "the private key")
            check_stored_key(entry, private, record="the row")
        except InvalidKeyError as err:
            raise self.refuse(kid, str(err)) from err
        if not private.has_private:
            raise self.refuse(kid, "the sealed private key has no private member")
        if private.export_public(as_dict=True) != public_key.export_public(as_dict=True):
            raise self.refuse(kid, "the private key's public members differ from the public JWK")
        return private

    def _jwk(self, members: dict[str, Any], what: str) -> jwk.JWK:
        """A JWK of `members`; InvalidKeyError if it is none."""
        try:
            return jwk.JWK(**members)
        except (ValueError, KeyError, TypeError, JWException) as err:
            raise InvalidKeyError(
                f"{what} is not a valid JWK ({type(err).__name__}: {err})"
            ) from err

    def encode(self, stored: StoredKey) -> tuple[dict[str, Any], str]:
        """The columns of a key's row (its private half sealed afresh, and the row's MAC), and
        the row's digest."""
        entry = stored.entry
        sealed: tuple[bytes | None, bytes | None] = (None, None)
        if stored.key.has_private:
            plaintext = stored.key.export(private_key=True).encode()
            sealed = self.envelope.seal(stored.kid, entry.alg, plaintext)
        public = stored.key.export_public(as_dict=True)
        values = (entry.kid, entry.alg, entry.state.value, entry.origin.value, entry.created,
                  entry.activated, entry.retired, public, sealed[1], sealed[0])  # fmt: skip
        mac_kek_id, mac = self.envelope.mac(row_mac_message(values))
        names = ("kid", "alg", "state", "origin", "created", "activated", "retired")
        columns: dict[str, Any] = dict(zip(names, values, strict=False))
        columns.update(public_jwk=Jsonb(public), private_jwk=sealed[1], kek_id=sealed[0],
                       mac_kek_id=mac_kek_id, mac=mac)  # fmt: skip
        return columns, row_digest(values)

    def open_state(self, sealed: tuple[Any, ...] | None) -> RingState:
        if sealed is None:
            raise KeyStoreError(
                self.description,
                "the row of agentrouter_auth.ring_state is missing (deleted by hand?): the key "
                "rows cannot be checked against it, so none is used; restore it from a backup, "
                "or check the keys and run `agentrouter-auth store seal` to accept them as they "
                "are",
            )
        generation, document, mac_kek_id, mac = sealed
        try:
            self.envelope.verify(bytes(mac_kek_id), str(document).encode(), bytes(mac))
        except EnvelopeError as err:
            raise KeyStoreError(
                self.description,
                f"the ring state's integrity MAC {err}: it was edited or written by hand, or "
                "copied from a database under another KEK; refused",
            ) from err
        try:
            state = RingState.parse(str(document))
        except ValueError as err:
            raise KeyStoreError(self.description, f"corrupt ring state: {err}") from err
        if state.generation != generation:
            raise KeyStoreError(
                self.description,
                f"corrupt ring state: generation {generation} but its document says "
                f"{state.generation}",
            )
        return state

    def check_rows(self, rows: Sequence[tuple[Any, ...]], state: RingState) -> None:
        """Refuse rows that are not exactly those the state lists: an extra row first (it would
        publish a key), then a missing one, then one that differs."""
        found = {str(row[0]): row for row in rows}
        listed = {key.kid: key for key in state.keys}
        at = f"the ring state (generation {state.generation})"
        for kid in sorted(found.keys() - listed.keys()):
            raise self.refuse(
                kid,
                f"its row is not in {at}: written back from an earlier state, or added by hand; "
                "refused",
            )
        for kid in sorted(listed.keys() - found.keys()):
            raise self.refuse(
                kid,
                f"{at} lists it as {listed[kid].state}, but its row is missing (deleted by "
                "hand?); restore the row from a backup",
            )
        for kid, row in sorted(found.items()):
            if row_digest(row) != listed[kid].row:
                raise self.refuse(
                    kid,
                    f"its row ({row[2]}) is not the one {at} lists ({listed[kid].state}): "
                    "written back from an earlier state; refused",
                )

    def seal_state(
        self, generation: int, keys: Sequence[Listed], policy: RecordedPolicy | None
    ) -> tuple[RingState, list[Any]]:
        """The ring state listing `keys` at `generation`, and the parameters of `WRITE_STATE`
        that store it sealed (its document and MAC)."""
        state = RingState(generation, tuple(sorted(keys, key=lambda key: key.kid)), policy)
        document = state.document()
        mac_kek_id, mac = self.envelope.mac(document.encode())
        return state, [generation, document, mac_kek_id, mac]
