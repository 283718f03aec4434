-- The audit relay (streams/audit.py) publishes every committed audit record to the
-- `audit` topic, chain by chain in sequence order; this is how far it got per chain. A
-- crash between the publish and this row's update publishes those records again (the
-- same bytes): at least once, never a record that was not committed.
CREATE TABLE audit_published (
    chain  text PRIMARY KEY,
    seq    bigint NOT NULL CHECK (seq >= 0)
);
