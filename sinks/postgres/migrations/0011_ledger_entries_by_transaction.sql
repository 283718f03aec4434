-- The entries of given transactions: the ledger's audit records carry them
-- (sinks/postgres/ledger.py ledger_records). Without this index each batch scanned every
-- entry ever posted, and bets/s fell as the ledger grew.
CREATE INDEX ledger_entries_txn ON ledger_entries (txn_id);
