-- The key ring of agentrouter-auth: one row per key, and one row whose generation changes with
-- every transaction that changes a key (a replica polls it, or LISTENs for its NOTIFY).
-- Applied by agentrouter-auth itself (`store migrate`, or at start), which records the version
-- in agentrouter_auth.schema_migrations in the same transaction.

CREATE SCHEMA IF NOT EXISTS agentrouter_auth;

CREATE TABLE agentrouter_auth.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE agentrouter_auth.keys (
    -- The key's RFC 7638 thumbprint (base64url).
    kid         text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,128}$'),
    alg         text NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'active', 'retired', 'published')),
    origin      text NOT NULL CHECK (origin IN ('generated', 'imported')),
    -- Unix seconds.
    created     bigint NOT NULL,
    activated   bigint,
    retired     bigint,
    -- The public JWK (never a private member).
    public_jwk  jsonb NOT NULL CHECK (jsonb_typeof(public_jwk) = 'object'),
    -- The private JWK sealed with AES-256-GCM under a key-encryption key (format byte, nonce,
    -- ciphertext and tag), and the id of that KEK; both NULL for an imported public key.
    private_jwk bytea,
    kek_id      bytea,
    -- HMAC-SHA256 of every other column (see agentrouter_auth.keys.postgres.row_mac_message)
    -- under a subkey of a KEK, and the id of that KEK. agentrouter-auth refuses a row whose MAC
    -- is missing or wrong, so write access to this table does not publish or revive a key.
    -- Nullable on purpose: the store, not a constraint, is what refuses a row without one.
    mac_kek_id  bytea,
    mac         bytea,
    CHECK ((private_jwk IS NULL) = (kek_id IS NULL))
);

-- At most one signing key per algorithm.
CREATE UNIQUE INDEX keys_one_active_per_alg ON agentrouter_auth.keys (alg) WHERE state = 'active';

CREATE TABLE agentrouter_auth.ring (
    one        boolean PRIMARY KEY DEFAULT true CHECK (one),
    -- Bumped once by every transaction that changes a key.
    generation bigint NOT NULL DEFAULT 0,
    -- A random value set with each bump, so a database restored to an older generation and
    -- changed again is not mistaken for the set already loaded.
    stamp      uuid NOT NULL DEFAULT gen_random_uuid(),
    -- The transaction that made the last bump (one bump per transaction).
    xact       bigint
);
INSERT INTO agentrouter_auth.ring DEFAULT VALUES;

-- Any change to the keys, by agentrouter-auth or by hand, bumps the generation once per
-- transaction and notifies the channel agentrouter_auth_keys with the new generation; the
-- notification is delivered when (and only if) the transaction commits. A ring row deleted by
-- hand is made again (its new stamp tells it apart from the one it replaces).
CREATE FUNCTION agentrouter_auth.keys_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bumped bigint;
BEGIN
    INSERT INTO agentrouter_auth.ring AS ring (generation, xact) VALUES (1, txid_current())
    ON CONFLICT (one) DO UPDATE
       SET generation = ring.generation + 1, stamp = gen_random_uuid(), xact = txid_current()
     WHERE ring.xact IS DISTINCT FROM txid_current()
    RETURNING generation INTO bumped;
    IF bumped IS NOT NULL THEN
        PERFORM pg_notify('agentrouter_auth_keys', bumped::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER keys_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON agentrouter_auth.keys
    FOR EACH STATEMENT EXECUTE FUNCTION agentrouter_auth.keys_changed();
