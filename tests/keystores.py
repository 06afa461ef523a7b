"""One test, every key store: `StoreFactory` makes stores of one kind (a directory, or a
PostgreSQL database on the suite's own server) behind the same `KeyStore` protocol, and knows
how to seed them, plant hostile content in them, and name them on a command line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jwcrypto import jwk

from agentrouter_auth.keys.directory import MANIFEST
from agentrouter_auth.keys.kek import Envelope, Kek, read_kek
from agentrouter_auth.keys.postgres import PostgresStore
from agentrouter_auth.keys.registry import open_store
from agentrouter_auth.keys.store import KeyStore
from tests.support import PostgresServer, seed, write_kek

KINDS = ("directory", "postgresql")
PRIVATE = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class StoreFactory:
    """Stores of one kind at one location: calling it opens another store there (another
    process or replica would); `fresh()` gives a factory for another, empty location."""

    def __init__(self, kind: str, tmp: Path, postgres: PostgresServer | None = None) -> None:
        self.kind = kind
        self.tmp = tmp
        self.postgres = postgres
        self.kek_files: tuple[Path, ...] = ()
        self.databases: list[str] = []
        self._opened: list[KeyStore] = []
        self._fresh: list[StoreFactory] = []
        self._migrated = False
        tmp.mkdir(parents=True, exist_ok=True)
        if kind == "directory":
            self.location = str(tmp / "keys")
        else:
            assert postgres is not None
            self.location = postgres.create_database()
            self.databases.append(self.dbname)
            self.kek_files = (write_kek(tmp / "kek"),)

    @property
    def dbname(self) -> str:
        """The database of a PostgreSQL factory."""
        return self.location.rsplit("/", 1)[1]

    @property
    def keks(self) -> tuple[Kek, ...]:
        """The KEKs read from `kek_files`."""
        return tuple(read_kek(str(path)) for path in self.kek_files)

    def __call__(self) -> KeyStore:
        """A new store object on this location (closed when the test ends)."""
        store = open_store(self.location, keks=self.keks)
        self._opened.append(store)
        return store

    def options(self) -> list[str]:
        """The command-line options that name this store."""
        kek_args = [arg for path in self.kek_files for arg in ("--kek-file", str(path))]
        return ["--key-store", self.location, *kek_args]

    def fresh(self) -> StoreFactory:
        """Another empty store of the same kind (and the same KEKs)."""
        other = StoreFactory(self.kind, self.tmp / f"fresh-{len(self._fresh)}", self.postgres)
        if self.kek_files:
            other.kek_files = self.kek_files
        self._fresh.append(other)
        return other

    def clear(self) -> None:
        """Remove every key, bypassing the store (its schema stays)."""
        if self.kind == "directory":
            shutil.rmtree(self.location, ignore_errors=True)
        elif self.postgres is not None:
            self.postgres.execute(
                "DO $$ BEGIN IF to_regclass('agentrouter_auth.keys') IS NOT NULL THEN "
                "TRUNCATE agentrouter_auth.keys; END IF; END $$",
                dbname=self.dbname,
            )
            ((sealed,),) = self.postgres.execute(
                "SELECT to_regclass('agentrouter_auth.ring_state') IS NOT NULL", dbname=self.dbname
            )
            if sealed:  # the ring state lists no key again, as in a new database
                store = PostgresStore(self.location, self.keks, description=self.location)
                store.seal()
                store.close()

    def close(self) -> None:
        """Close every store opened and drop every database made."""
        for store in self._opened:
            store.close()
        for other in self._fresh:
            other.close()
        if self.postgres is not None:
            if not self.postgres.running:  # a test stopped the server: leave it running
                self.postgres.start()
            for name in self.databases:
                self.postgres.drop_database(name)

    # -- content -----------------------------------------------------------------------------

    def seed(self, keys: Sequence[jwk.JWK], created: int = 1_000_000) -> KeyStore:
        """Add keys: the first of each algorithm active (unless one is), the others pending."""
        return seed(self(), keys, created)

    def where(self, kid: str) -> str:
        """How a refusal names the key `kid`: its file, or its row."""
        return f"{kid}.jwk.json" if self.kind == "directory" else f"key {kid}"

    def plant(self, kid: str, alg: str, content: str | dict[str, Any]) -> None:
        """Put `content` (a JWK's members, or any text) in the store as the published key
        `kid`, bypassing every check, as someone with write access to the store could.

        Directory: the key file holds `content`. PostgreSQL: the public column holds the
        members that are not the key's own private values (a private member with any other
        value stays there, as planted), and the sealed column holds all of `content` when it
        carries private values, or when it is not a JSON object at all."""
        text = content if isinstance(content, str) else json.dumps(content)
        if self.kind == "directory":
            self._plant_file(kid, alg, text)
        else:
            self._plant_row(kid, alg, text)

    def _plant_file(self, kid: str, alg: str, text: str) -> None:
        path = Path(self.location)
        path.mkdir(mode=0o700, exist_ok=True)
        key_file = path / f"{kid}.jwk.json"
        key_file.write_bytes(text.encode("utf-8", "surrogateescape"))
        key_file.chmod(0o600)
        manifest = path / MANIFEST
        document: dict[str, Any] = (
            json.loads(manifest.read_text()) if manifest.exists() else {"format": 1, "keys": []}
        )
        document["keys"].append(
            {"kid": kid, "alg": alg, "state": "published", "origin": "imported", "created": 1}
        )
        manifest.write_text(json.dumps(document))
        manifest.chmod(0o600)

    def _plant_row(self, kid: str, alg: str, text: str) -> None:
        assert self.postgres is not None
        if not self._migrated:
            store = PostgresStore(self.location, self.keks, description=self.location)
            store.migrate()
            store.close()
            self._migrated = True
        try:
            members = json.loads(text)
        except ValueError:
            members = None
        raw = text.encode("utf-8", "surrogateescape")
        public: dict[str, Any] = {}
        sealed: bytes | None = raw
        if isinstance(members, dict) and "\\u0000" not in json.dumps(members):
            # (jsonb cannot hold U+0000: such content can only be planted in the sealed column)
            secrets = _private_values(members)
            public = {m: v for m, v in members.items() if secrets.get(m, object()) != v}
            sealed = raw if secrets else None
        kek_id, value = (None, None)
        if sealed is not None:
            kek_id, value = Envelope(self.keks).seal(kid, alg, sealed)
        self.postgres.execute(
            "INSERT INTO agentrouter_auth.keys (kid, alg, state, origin, created, public_jwk, "
            "private_jwk, kek_id) VALUES (%s, %s, 'published', 'imported', 1, %s, %s, %s)",
            [kid, alg, json.dumps(public), value, kek_id],
            dbname=self.dbname,
        )

    def stored_text(self) -> list[str]:
        """Everything the store keeps at rest, as text: every file, or every row (JSON)."""
        if self.kind == "directory":
            return [
                p.read_text(errors="replace") for p in Path(self.location).iterdir() if p.is_file()
            ]
        assert self.postgres is not None
        rows = self.postgres.execute(
            "SELECT to_jsonb(k)::text FROM agentrouter_auth.keys k", dbname=self.dbname
        )
        return [row[0] for row in rows]


def _private_values(members: dict[str, Any]) -> dict[str, Any]:
    """The members of `members` that hold a key's real private values (a JWK's own ones)."""
    try:
        key = jwk.JWK(**members)
    except Exception:
        return {}
    if not key.has_private:
        return {}
    real = json.loads(key.export(private_key=True))
    return {m: v for m, v in real.items() if m in PRIVATE and members.get(m) == v}
