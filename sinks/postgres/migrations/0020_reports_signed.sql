-- The reports.<J> stream is signed with the operator's Ed25519 report key instead of
-- MACed under a key shared with the regulator (schemas/reports.py, stream v2): each
-- record keeps its signature (64 bytes), the previous record's (64 zero bytes for the
-- first) and the signer's public key (32 bytes). The checks hold for every record
-- written from now on (NOT VALID: records an older version MAC-chained are history,
-- append-only, and are left as they are; the reporter refuses to extend such a chain).
ALTER TABLE report_records RENAME COLUMN prev_mac TO prev_signature;
ALTER TABLE report_records RENAME COLUMN mac TO signature;
ALTER TABLE report_records ADD COLUMN public_key bytea;
ALTER TABLE report_records ADD CONSTRAINT report_records_signed
    CHECK (length(prev_signature) = 64 AND length(signature) = 64
           AND public_key IS NOT NULL AND length(public_key) = 32) NOT VALID;

ALTER TABLE report_heads RENAME COLUMN mac TO signature;
ALTER TABLE report_heads ADD CONSTRAINT report_heads_signed
    CHECK (length(signature) = 64) NOT VALID;
