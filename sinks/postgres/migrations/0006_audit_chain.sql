-- The audit trail in PostgreSQL: append-only records, hash-chained per chain. A chain is
-- one source partition (``<topic>/<partition>``), so flows never serialize on one row:
-- only one consumer writes a partition at a time, and it appends in offset order.
-- Each record's hash is SHA-256(previous hash || the record's exact JSON), the first
-- record's previous hash 32 zero bytes. audit_heads holds each chain's last record, so a
-- removed tail shows too. `croupier audit verify` recomputes everything.

CREATE TABLE audit_records (
    chain            text NOT NULL,
    seq              bigint NOT NULL CHECK (seq >= 1),
    entity           text NOT NULL,
    entity_id        text NOT NULL,
    action           text NOT NULL,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    body             text NOT NULL,                   -- the record's JSON, exactly as hashed
    prev_hash        bytea NOT NULL,
    hash             bytea NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, seq),
    -- One record per state change per input: a replayed batch cannot audit twice.
    UNIQUE (source_topic, source_partition, source_offset, entity, entity_id, action)
);
CREATE INDEX audit_records_entity ON audit_records (entity, entity_id);

CREATE TABLE audit_heads (
    chain  text PRIMARY KEY,
    seq    bigint NOT NULL,
    hash   bytea NOT NULL
);

CREATE TRIGGER audit_records_append_only BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
