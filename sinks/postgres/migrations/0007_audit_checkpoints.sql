-- Signed checkpoints of the audit trail: every chain's head (sequence and hash) at a
-- moment, in an exact JSON document signed with Ed25519. A chain rewritten afterwards,
-- even with every hash recomputed, no longer holds its checkpointed head; the signature
-- cannot be redone without the private key, which the database never sees.
CREATE TABLE audit_checkpoints (
    checkpoint_id  bigserial PRIMARY KEY,
    document       text NOT NULL,        -- the JSON signed: {"created_at", "heads": {...}}
    public_key     bytea NOT NULL,       -- raw Ed25519 public key (32 bytes)
    signature      bytea NOT NULL,       -- Ed25519 over the document's UTF-8 bytes
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();
