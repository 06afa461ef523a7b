-- The sealed ring state: the commit point of the key ring, as the manifest is for a key
-- directory. One row: a generation, raised by one with every change agentrouter-auth makes, and
-- a document listing every key's kid, state and a SHA-256 digest of its row, plus the ring's
-- rotation policy once one is recorded; MACed under a subkey of a KEK (see
-- agentrouter_auth.keys.postgres.RingState). agentrouter-auth refuses key rows that do not agree
-- with it exactly (a row deleted, added, or written back from an earlier state), and a running
-- process refuses a generation lower than one it has loaded.
--
-- Applied by agentrouter-auth, which in the same transaction, under the ring's lock, seals the
-- rows it finds (each checked against its own MAC first) as generation 1: a database written by
-- the previous version is adopted as it stands.

CREATE TABLE agentrouter_auth.ring_state (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- The document's own generation, repeated here to be read by eye.
    generation bigint NOT NULL,
    -- Canonical JSON: the exact text the MAC covers.
    document   text NOT NULL,
    mac_kek_id bytea NOT NULL,
    mac        bytea NOT NULL
);

-- A change to the ring state, by agentrouter-auth or by hand, bumps agentrouter_auth.ring's
-- generation and notifies like a change to a key (once per transaction), so replicas look.
CREATE TRIGGER ring_state_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON agentrouter_auth.ring_state
    FOR EACH STATEMENT EXECUTE FUNCTION agentrouter_auth.keys_changed();
