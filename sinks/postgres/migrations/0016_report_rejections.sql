-- Audit records the reporter could not turn into a report record (sinks/postgres/reports.py):
-- a shape it does not expect, a value the report record refuses. The pass sets them aside
-- here, with the error, and goes on: one record never stops every jurisdiction's stream.
-- Append-only, like the trail it comes from; an operator reads them (reason
-- processing_error) and the regulator is told out of band.
CREATE TABLE report_rejections (
    audit_chain  text NOT NULL,
    audit_seq    bigint NOT NULL,
    reason       text NOT NULL DEFAULT 'processing_error',
    error        text NOT NULL,
    rejected_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (audit_chain, audit_seq)
);
CREATE TRIGGER report_rejections_append_only BEFORE UPDATE OR DELETE ON report_rejections
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
