-- bets_load (0029) runs with enable_seqscan off, as the functions of 0027 and 0028 do. Its
-- plans are cached per session, and the known ids' probe (bets.bet_id = ANY(...)) planned
-- while bets held a page or two scanned the whole table for every batch once it had grown:
-- test_probes_by_index.py counted 12,184 rows read by sequential scans of bets over eight
-- batches of two. The setting only prices a scan out: a plan still probes the index.
ALTER FUNCTION bets_load(text[], text[], text[], text[], jsonb[], jsonb[], timestamptz, text[],
                         text, text[], integer[], bigint[]) SET enable_seqscan = off;
