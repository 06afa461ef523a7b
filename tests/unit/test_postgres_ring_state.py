"""The sealed ring state of the PostgreSQL store against a real server: key rows written back from
an earlier state, deleted or added behind the store's back are refused naming the kid; a process
never accepts the generation going backwards; a database of the previous version is adopted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrouter_auth.keys.kek import read_kek
from agentrouter_auth.keys.location import redacted
from agentrouter_auth.keys.policy import Policy
from agentrouter_auth.keys.postgres import (
    ADOPTABLE_MAC_FORMAT,
    VERIFY_EVERY,
    PostgresStore,
    latest_version,
    row_mac_message,
    schema,
)
from agentrouter_auth.keys.ring import KeyRing
from agentrouter_auth.keys.store import KeyStoreError, State
from tests.support import PostgresServer

T0 = 1_700_000_000
POLICY = Policy(rotation_period=400, publish_ahead=100, retain_after=4000, max_token_ttl=60,
                clock_skew=0, cache_max_age=10, stale_while_revalidate=0)  # fmt: skip


WRITE_BACK = (
    "DELETE FROM agentrouter_auth.keys; DELETE FROM agentrouter_auth.ring_state; "
    "INSERT INTO agentrouter_auth.keys SELECT * FROM stash_keys; "
    "INSERT INTO agentrouter_auth.ring_state SELECT * FROM stash_state"
)
"""Write back every key row and the ring state saved in stash tables."""


class Clock:
    """A settable clock for the ring's lifecycle steps."""

    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


def _store(dsn: str, kek_file: Path) -> PostgresStore:
    return PostgresStore(dsn, [read_kek(str(kek_file))], description=redacted(dsn))


@pytest.fixture
def stores(pg_dsn: str, kek_file: Path) -> Iterator[list[PostgresStore]]:
    """Opened stores (each a process's view of the database), closed at the end."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


def _open(stores: list[PostgresStore], dsn: str, kek_file: Path) -> PostgresStore:
    store = _store(dsn, kek_file)
    stores.append(store)
    return store


def _sql(postgres: PostgresServer, dsn: str, statement: str) -> None:
    postgres.execute(statement, dbname=dsn.rsplit("/", 1)[1])


def _as_previous_version(postgres: PostgresServer, dsn: str, store: PostgresStore) -> None:
    """Leave what the previous version would have: its schema (version 1), and its rows, each
    MACed in the format of a row written before the ring state existed."""
    _sql(postgres, dsn, "DROP TABLE agentrouter_auth.ring_state; DELETE FROM "
                        "agentrouter_auth.schema_migrations WHERE version > 1")  # fmt: skip
    dbname = dsn.rsplit("/", 1)[1]
    for row in postgres.execute(schema.SELECT_KEYS, dbname=dbname):
        mac_kek_id, mac = store.envelope.mac(row_mac_message(row[:10], ADOPTABLE_MAC_FORMAT))
        postgres.execute(
            "UPDATE agentrouter_auth.keys SET mac_kek_id = %s, mac = %s WHERE kid = %s",
            [mac_kek_id, mac, row[0]],
            dbname=dbname,
        )


def _kids(store: PostgresStore) -> dict[str, State]:
    return {stored.kid: stored.entry.state for stored in store.read().keys}


def test_a_removed_keys_row_written_back_is_refused_naming_it(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    """The issue's attack: save the row, remove the key, make a successor, swap the rows."""
    store = _open(stores, pg_dsn, kek_file)
    ring = KeyRing(store, POLICY)
    (removed,) = [change.kid for change in ring.init(["ES256"])]
    _sql(postgres, pg_dsn, "CREATE TABLE stash AS SELECT * FROM agentrouter_auth.keys")
    ring.remove(removed, force=True)
    (successor,) = [change.kid for change in ring.init(["ES256"])]
    good = ring.load()
    _sql(postgres, pg_dsn, f"DELETE FROM agentrouter_auth.keys WHERE kid = '{successor}'")
    _sql(postgres, pg_dsn, "INSERT INTO agentrouter_auth.keys SELECT * FROM stash")
    for reader in (store, _open(stores, pg_dsn, kek_file)):  # this process, and a fresh one
        with pytest.raises(KeyStoreError) as refused:
            reader.read()
        assert f"key {removed}: its row is not in the ring state" in str(refused.value), (
            f"the removed key's row written back was accepted: {_kids(reader)}"
        )
    assert ring.refresh() is False
    assert ring.snapshot() is good
    assert ring.snapshot().kids == (successor,)
    assert not ring.status().healthy
    with pytest.raises(KeyStoreError, match=f"key {removed}"):
        ring.rotate()  # no change is built on rows that disagree with the ring state
    with pytest.raises(KeyStoreError, match=f"key {removed}"):
        KeyRing(_open(stores, pg_dsn, kek_file), POLICY).load()  # `token sign` loads so


def test_an_older_copy_of_the_same_kids_row_is_refused_naming_it(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    clock = Clock()
    store = _open(stores, pg_dsn, kek_file)
    ring = KeyRing(store, POLICY, clock=clock)
    ring.init(["ES256"])
    (successor,) = [change.kid for change in ring.rotate()]
    _sql(postgres, pg_dsn, "CREATE TABLE stash AS SELECT * FROM agentrouter_auth.keys")
    clock.now += POLICY.publish_ahead
    ring.step()  # the successor signs, its predecessor retires
    assert _kids(store)[successor] is State.ACTIVE
    _sql(postgres, pg_dsn, f"DELETE FROM agentrouter_auth.keys WHERE kid = '{successor}'")
    _sql(postgres, pg_dsn, f"INSERT INTO agentrouter_auth.keys SELECT * FROM stash "
                           f"WHERE kid = '{successor}'")  # fmt: skip
    with pytest.raises(KeyStoreError) as refused:
        _open(stores, pg_dsn, kek_file).read()
    assert f"key {successor}: its row (pending) is not the one the ring state" in str(
        refused.value
    ), "an older copy of a row was accepted"


def test_a_row_deleted_by_hand_is_refused_naming_it(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    store = _open(stores, pg_dsn, kek_file)
    ring = KeyRing(store, POLICY)
    ring.init(["ES256", "EdDSA"])
    good = ring.load()
    active = store.read().active("ES256")
    assert active is not None
    _sql(postgres, pg_dsn, f"DELETE FROM agentrouter_auth.keys WHERE kid = '{active.kid}'")
    with pytest.raises(KeyStoreError) as refused:
        _open(stores, pg_dsn, kek_file).read()
    assert f"key {active.kid}: the ring state (generation" in str(refused.value)
    assert "lists it as active, but its row is missing" in str(refused.value)
    assert ring.refresh() is False
    assert ring.snapshot() is good  # the last good set, both keys, stays served
    assert not ring.status().healthy


def test_a_whole_earlier_state_is_refused_by_a_process_that_saw_a_newer_one(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    store = _open(stores, pg_dsn, kek_file)
    ring = KeyRing(store, POLICY)
    (old,) = [change.kid for change in ring.init(["ES256"])]
    _sql(postgres, pg_dsn, "CREATE TABLE stash_keys AS SELECT * FROM agentrouter_auth.keys")
    _sql(postgres, pg_dsn, "CREATE TABLE stash_state AS SELECT * FROM agentrouter_auth.ring_state")
    ring.remove(old, force=True)
    (new,) = [change.kid for change in ring.init(["ES256"])]
    good = ring.load()
    _sql(postgres, pg_dsn, WRITE_BACK)
    with pytest.raises(KeyStoreError) as refused:
        store.read()
    assert f"key {old}: the ring state is at generation 2, older than generation 4" in str(
        refused.value
    ), "a whole earlier state written back was accepted by a process that saw a newer one"
    assert ring.refresh() is False
    assert ring.snapshot() is good
    assert ring.snapshot().kids == (new,)
    assert not ring.status().healthy
    with pytest.raises(KeyStoreError, match="older than generation 4"):
        ring.rotate()
    # A process that never saw the newer state cannot know: it accepts the earlier one.
    assert _kids(_open(stores, pg_dsn, kek_file)) == {old: State.ACTIVE}


def test_another_state_at_the_same_generation_is_refused(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    """A restore forked: someone wrote a change on top of an earlier state, reaching the same
    generation as the one this process loaded, with other keys."""
    store = _open(stores, pg_dsn, kek_file)
    ring = KeyRing(store, POLICY)
    ring.init(["ES256"])
    _sql(postgres, pg_dsn, "CREATE TABLE stash_keys AS SELECT * FROM agentrouter_auth.keys")
    _sql(postgres, pg_dsn, "CREATE TABLE stash_state AS SELECT * FROM agentrouter_auth.ring_state")
    (first,) = [change.kid for change in ring.rotate()]
    ring.load()
    _sql(postgres, pg_dsn, WRITE_BACK)
    other = KeyRing(_open(stores, pg_dsn, kek_file), POLICY)
    (forked,) = [change.kid for change in other.rotate()]
    assert forked != first
    with pytest.raises(KeyStoreError, match="but another state than the one this process"):
        store.read()


def test_a_ring_state_deleted_or_edited_is_refused_and_store_seal_accepts_the_rows(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    store = _open(stores, pg_dsn, kek_file)
    KeyRing(store, POLICY).init(["ES256"])
    _sql(postgres, pg_dsn, "UPDATE agentrouter_auth.ring_state SET document = "
                           "replace(document, '\"generation\":2', '\"generation\":9')")  # fmt: skip
    with pytest.raises(KeyStoreError, match="the ring state's integrity MAC does not verify"):
        _open(stores, pg_dsn, kek_file).read()
    _sql(postgres, pg_dsn, "DELETE FROM agentrouter_auth.ring_state")
    with pytest.raises(KeyStoreError, match="the row of agentrouter_auth.ring_state is missing"):
        _open(stores, pg_dsn, kek_file).read()
    before, after = _open(stores, pg_dsn, kek_file).seal()
    assert before is None
    assert [key.kid for key in after.keys] == list(_kids(_open(stores, pg_dsn, kek_file)))


def test_a_database_of_the_previous_version_is_adopted_as_it_stands(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    store = _open(stores, pg_dsn, kek_file)
    KeyRing(store, POLICY).init(["ES256", "EdDSA"])
    kids = _kids(store)
    _as_previous_version(postgres, pg_dsn, store)
    upgraded = _open(stores, pg_dsn, kek_file)
    assert upgraded.schema_version() == 1
    assert _kids(upgraded) == kids  # migrated at first use, the rows sealed as they are
    assert upgraded.schema_version() == latest_version()
    state = upgraded.ring_state()
    assert (state.generation, sorted(key.kid for key in state.keys)) == (1, sorted(kids))
    # From then on, a row deleted behind the store's back is refused.
    gone = sorted(kids)[0]
    _sql(postgres, pg_dsn, f"DELETE FROM agentrouter_auth.keys WHERE kid = '{gone}'")
    with pytest.raises(KeyStoreError, match=f"key {gone}: the ring state"):
        _open(stores, pg_dsn, kek_file).read()


def test_a_damaged_row_stops_the_adoption_naming_its_kid(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    store = _open(stores, pg_dsn, kek_file)
    KeyRing(store, POLICY).init(["ES256"])
    (kid,) = _kids(store)
    _as_previous_version(postgres, pg_dsn, store)
    _sql(postgres, pg_dsn, "UPDATE agentrouter_auth.keys SET created = created + 1")
    upgraded = _open(stores, pg_dsn, kek_file)
    with pytest.raises(KeyStoreError, match=f"key {kid}: the row's integrity MAC"):
        upgraded.read()
    assert upgraded.schema_version() == 1  # nothing was sealed: the migration rolled back


ROLL_BACK = (
    "DROP TABLE agentrouter_auth.ring_state; DELETE FROM agentrouter_auth.schema_migrations "
    "WHERE version > 1; DELETE FROM agentrouter_auth.keys; "
    "INSERT INTO agentrouter_auth.keys SELECT * FROM stash_keys"
)
"""The schema rolled back to version 1 and earlier key rows written back (attack F1): the next
process applies migration 2 again, which adopts the rows it finds."""


def test_a_rolled_back_schema_does_not_adopt_rows_written_under_a_ring_state(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    ring = KeyRing(_open(stores, pg_dsn, kek_file), POLICY, rotating=True)
    (removed,) = [change.kid for change in ring.init(["ES256"])]
    ring.check_writable()  # records the rotation policy
    _sql(postgres, pg_dsn, "CREATE TABLE stash_keys AS SELECT * FROM agentrouter_auth.keys")
    ring.remove(removed, force=True)
    ring.init(["ES256"])
    _sql(postgres, pg_dsn, ROLL_BACK)
    upgraded = _open(stores, pg_dsn, kek_file)
    with pytest.raises(KeyStoreError) as refused:
        upgraded.read()
    assert f"key {removed}: its row was written under a sealed ring state" in str(refused.value), (
        "a rolled-back schema sealed rows written after the ring state existed"
    )
    assert "agentrouter-auth store seal" in str(refused.value)
    assert upgraded.schema_version() == 1  # nothing was sealed
    # The operator accepts the rows as they are, on purpose.
    before, after = _open(stores, pg_dsn, kek_file).seal()
    assert before is not None
    assert before.generation == 1
    assert (after.generation, [key.kid for key in after.keys]) == (2, [removed])
    assert _kids(_open(stores, pg_dsn, kek_file)) == {removed: State.ACTIVE}


DISABLE_TRIGGERS = (
    "ALTER TABLE agentrouter_auth.keys DISABLE TRIGGER keys_changed; "
    "ALTER TABLE agentrouter_auth.ring_state DISABLE TRIGGER ring_state_changed"
)
"""Attack F3: nothing bumps the ring row's generation or notifies any more."""


def test_with_the_triggers_disabled_a_change_is_still_seen_at_the_next_reload(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    ring = KeyRing(_open(stores, pg_dsn, kek_file), POLICY)
    (removed,) = [change.kid for change in ring.init(["ES256"])]
    ring.load()
    _sql(postgres, pg_dsn, DISABLE_TRIGGERS)
    other = KeyRing(_open(stores, pg_dsn, kek_file), POLICY)
    other.remove(removed, force=True)
    (added,) = [change.kid for change in other.init(["ES256"])]
    assert ring.refresh() is True, "a change made with the triggers disabled was not seen"
    assert ring.snapshot().kids == (added,)


def test_with_the_triggers_disabled_a_row_edited_by_hand_is_caught_by_a_periodic_full_read(
    postgres: PostgresServer, pg_dsn: str, kek_file: Path, stores: list[PostgresStore]
) -> None:
    ring = KeyRing(_open(stores, pg_dsn, kek_file), POLICY)
    (kid,) = [change.kid for change in ring.init(["ES256"])]
    good = ring.load()
    _sql(postgres, pg_dsn, DISABLE_TRIGGERS)
    _sql(postgres, pg_dsn, "UPDATE agentrouter_auth.keys SET created = created - 1")
    for _ in range(VERIFY_EVERY):
        ring.refresh()
    error = ring.status().error
    assert error is not None, "a row edited by hand went unnoticed"
    assert f"key {kid}: the row's integrity MAC does not verify" in error
    assert ring.snapshot() is good
