-- The audit trail gets an owner of its own: croupier_audit, a role nobody logs in as. It
-- owns audit_records, audit_heads and audit_checkpoints and the three functions through
-- which the application writes them (SECURITY DEFINER, search_path fixed to this schema):
--
--   audit_lock_heads(chains)   locks the heads of chains, in chain order, for an append
--                              later in the transaction (SELECT ... FOR UPDATE needs UPDATE
--                              rights the application no longer has); returns them;
--   audit_append(records)      appends records (a JSON array of rows), in order: each
--                              chain's records must follow its head (sequence + 1, previous
--                              hash = the head's hash, the genesis of 32 zero bytes for a
--                              new chain) and one another; then the heads move to the last
--                              records. Anything else is refused. The hash itself (SHA-256
--                              of the previous hash and the body) is not recomputed here: a
--                              writer can compute a right one for any body anyway, and
--                              `audit verify` recomputes them all; recomputing them cost a
--                              quarter of the append;
--   audit_add_checkpoint(...)  stores a signed checkpoint whose every head is a record the
--                              trail holds (the signature is checked by `audit verify`: the
--                              database has no Ed25519).
--
-- The application role keeps SELECT on the three tables and nothing else on them
-- (migrate.grant_app_role), so a record can neither be changed nor added off the chain,
-- and a head cannot be moved back or forward by hand.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'croupier_audit') THEN
        CREATE ROLE croupier_audit NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN NULL;  -- another database's migrator made it first
END $$;

CREATE FUNCTION audit_lock_heads(chains text[])
RETURNS TABLE (chain text, seq bigint, hash bytea)
LANGUAGE sql AS $$
    SELECT h.chain, h.seq, h.hash FROM audit_heads h
     WHERE h.chain = ANY (chains) ORDER BY h.chain FOR UPDATE
$$;

-- records: [[chain, seq, entity, entity_id, action, source_topic, source_partition,
--            source_offset, body, prev_hash (hex), hash (hex)], ...] in chain order. One
-- JSON parameter a batch: psycopg sends it several times cheaper than eleven arrays; as
-- jsonb it is parsed once (json would be parsed again for every field taken).
CREATE FUNCTION audit_append(records jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    -- Every part of one statement sees the heads as they were before it: the check reads
    -- them, the last part moves them; nothing is written when a record does not hold. Two writers of one chain (each should hold its head,
    -- audit_lock_heads) cannot both append: the second's first sequence number is taken.
    WITH r AS MATERIALIZED (
        SELECT x.n, x.v->>0 AS chain, (x.v->>1)::bigint AS seq, x.v->>2 AS entity,
               x.v->>3 AS entity_id, x.v->>4 AS action, x.v->>5 AS topic,
               (x.v->>6)::int AS part, (x.v->>7)::bigint AS off, x.v->>8 AS body,
               decode(x.v->>9, 'hex') AS prev, decode(x.v->>10, 'hex') AS hash
          FROM jsonb_array_elements(records) WITH ORDINALITY AS x(v, n)
    ),
    checked AS (
        SELECT l.chain, l.seq
          FROM (SELECT r.*, lag(r.hash) OVER w AS before_hash, lag(r.seq) OVER w AS before_seq
                  FROM r WINDOW w AS (PARTITION BY r.chain ORDER BY r.n)) l
          LEFT JOIN audit_heads h ON h.chain = l.chain
         WHERE l.seq IS DISTINCT FROM coalesce(l.before_seq, h.seq, 0) + 1
            OR l.prev IS DISTINCT FROM coalesce(l.before_hash, h.hash,
                                                decode(repeat('00', 32), 'hex'))
            OR length(l.hash) IS DISTINCT FROM 32
    ),
    stored AS (
        INSERT INTO audit_records (chain, seq, entity, entity_id, action, source_topic,
                                   source_partition, source_offset, body, prev_hash, hash)
        SELECT r.chain, r.seq, r.entity, r.entity_id, r.action, r.topic, r.part, r.off,
               r.body, r.prev, r.hash
          FROM r WHERE NOT EXISTS (SELECT 1 FROM checked)
    ),
    moved AS (
        INSERT INTO audit_heads AS h (chain, seq, hash)
        SELECT DISTINCT ON (r.chain) r.chain, r.seq, r.hash
          FROM r WHERE NOT EXISTS (SELECT 1 FROM checked)
         ORDER BY r.chain, r.n DESC
        ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash
    )
    SELECT c.chain, c.seq INTO bad FROM checked c LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit record %/% does not extend its chain (sequence, previous hash '
                        'or hash)', bad.chain, bad.seq USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION audit_add_checkpoint(document text, public_key bytea, signature bytea)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    doc     jsonb := document::jsonb;
    missing text;
    id      bigint;
BEGIN
    IF length(public_key) <> 32 OR length(signature) <> 64
       OR jsonb_typeof(doc->'heads') IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'not a checkpoint: an Ed25519 key (32 bytes), a signature (64) and '
                        'a document with heads are needed' USING ERRCODE = 'check_violation';
    END IF;
    SELECT x.key INTO missing
      FROM jsonb_each(doc->'heads') x
     WHERE NOT EXISTS (SELECT 1 FROM audit_records a
                        WHERE a.chain = x.key AND a.seq = (x.value->>'seq')::bigint
                          AND a.hash = decode(x.value->>'hash', 'hex'))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'checkpoint names a head of chain % that the trail does not hold',
            missing USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_checkpoints AS c (document, public_key, signature)
    VALUES (document, public_key, signature) RETURNING c.checkpoint_id INTO id;
    RETURN id;
END $$;

DO $$
DECLARE
    s text := current_schema();
    f text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT croupier_audit TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO croupier_audit', s);
    ALTER TABLE audit_records OWNER TO croupier_audit;
    ALTER TABLE audit_heads OWNER TO croupier_audit;
    ALTER TABLE audit_checkpoints OWNER TO croupier_audit;  -- with its sequence
    FOREACH f IN ARRAY ARRAY['audit_lock_heads(text[])',
                             'audit_append(jsonb)',
                             'audit_add_checkpoint(text, bytea, bytea)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO croupier_audit', f);
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                       'SET search_path = pg_catalog, %I, pg_temp', f, s);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM croupier_audit', s);
END $$;
