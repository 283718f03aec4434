-- Regulator streams (streams/reports.py, sinks/postgres/reports.py). Every audit record
-- about a player becomes one report record in the chain of the player's jurisdiction:
-- numbered from 1 without a gap and MACed with HMAC-SHA256 over the previous MAC and the
-- record's exact JSON (schemas/reports.py). Append-only, like the trail it comes from.
CREATE TABLE report_records (
    jurisdiction  text NOT NULL,
    seq           bigint NOT NULL CHECK (seq >= 1),
    entity_id     text NOT NULL,
    record_json   text NOT NULL,
    prev_mac      bytea NOT NULL,
    mac           bytea NOT NULL,
    audit_chain   text NOT NULL,
    audit_seq     bigint NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (jurisdiction, seq),
    UNIQUE (audit_chain, audit_seq, jurisdiction)
);
CREATE TRIGGER report_records_append_only BEFORE UPDATE OR DELETE ON report_records
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER report_records_no_truncate BEFORE TRUNCATE ON report_records
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();

-- Each jurisdiction's last record (the chain's head), locked while a pass appends.
CREATE TABLE report_heads (
    jurisdiction  text PRIMARY KEY,
    seq           bigint NOT NULL,
    mac           bytea NOT NULL
);

-- How far the reporter has read each audit chain, and published each report chain.
CREATE TABLE report_progress (
    chain  text PRIMARY KEY,
    seq    bigint NOT NULL CHECK (seq >= 0)
);
CREATE TABLE report_published (
    jurisdiction  text PRIMARY KEY,
    seq           bigint NOT NULL CHECK (seq >= 0)
);
