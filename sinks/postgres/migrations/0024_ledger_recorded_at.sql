-- "GGR today" (the operators' dashboard and metrics, sinks/postgres/ops.py) reads the
-- transactions recorded since midnight UTC. Without an index on recorded_at that is a scan
-- of the whole ledger, every day's, at every refresh. A BRIN index (block ranges:
-- recorded_at grows with the table's physical order, the ledger being append-only) finds
-- today's blocks and costs the writers almost nothing, where a b-tree would add an entry
-- to every posting on the hot path.
CREATE INDEX ledger_transactions_recorded_brin ON ledger_transactions
    USING brin (recorded_at) WITH (pages_per_range = 32, autosummarize = on);
