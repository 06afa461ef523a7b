"""Moving a key ring from one store to another (a directory to PostgreSQL, and back).

Every key goes with its entry unchanged: kid, algorithm, state, origin and times, so the
lifecycle carries on in the destination exactly where it stood in the source. The source is
read as the ring reads it (every key checked); the destination is written in one transaction.
"""

from __future__ import annotations

from agentrouter_auth.keys.store import KeyStore, KeyStoreError
from agentrouter_auth.keys.transitions import Change, diff


def copy_keys(source: KeyStore, target: KeyStore, *, replace: bool = False) -> list[Change]:
    """Copy every key of `source` into `target`; return the changes made to `target`.

    A destination that holds keys is refused unless `replace`: then it ends up holding exactly
    the source's keys (its own keys that the source lacks are deleted), so copying back after a
    migration restores the source's state rather than merging two rings.
    """
    if source.description == target.description:
        raise KeyStoreError(target.description, "is the source: copy to another store")
    key_set = source.read()
    if not key_set.keys:
        raise KeyStoreError(source.description, "holds no keys to copy")
    with target.transaction() as tx:
        held = tx.current.keys
        if held and not replace:
            raise KeyStoreError(
                target.description,
                f"holds {len(held)} key(s): keys copy fills an empty store; --replace makes it "
                "hold exactly the copied keys (deleting its others)",
            )
        wanted = {stored.kid for stored in key_set.keys}
        for stored in held:
            if stored.kid not in wanted:
                tx.delete(stored.kid)
        for stored in key_set.keys:
            tx.add(stored.key, stored.entry)
        if key_set.policy is not None:  # the ring's rotation policy goes with it
            tx.record_policy(key_set.policy)
        return diff(tx.current, tx.result())
