-- casino_named(): a casino batch's two reads of casino_transactions in one statement that
-- probes the table by its indexes, whatever plan a session has cached.
--
-- The casino sink sent them from Python: the transactions the batch names
-- (transaction_id = ANY(...)) and the rollbacks that name them (reference_id = ANY(...)).
-- psycopg prepares a statement on its sixth call, and PostgreSQL keeps a generic plan
-- after five more. Planned while casino_transactions held a page or two, that plan read
-- the whole table for every batch once it had grown: on a fresh stack, bench/gateway.py
-- at 500 wallet calls/s, 1,131 sequential scans read 2.5 million rows in ten seconds,
-- 3.8 ms a batch and a third of PostgreSQL's statement time. test_probes_by_index.py
-- now makes enough small batches to reach the generic plan, and counted 39,904 rows.
--
-- Like bets_load (0029, 0030) it runs with the application's rights (SECURITY INVOKER:
-- the application reads casino_transactions already) and with enable_seqscan off, which
-- prices a scan out and leaves the indexes to every plan.
--
-- ids: transaction ids joined by commas (an id has no comma). One row per transaction
-- named (named = true) and one per rollback with status ok that references one of them
-- (named = false); a rollback that is both comes twice.
CREATE FUNCTION casino_named(ids text)
RETURNS TABLE (named boolean, transaction_id text, type text, player_id text,
               round_id text, amount numeric, request_hash text, status text, moved boolean,
               reference_id text, answer text, currency char(3))
LANGUAGE sql STABLE AS $$
    SELECT true, t.transaction_id, t.type, t.player_id, t.round_id, t.amount,
           t.request_hash, t.status, t.moved, t.reference_id, t.answer, t.currency
      FROM casino_transactions t
     WHERE t.transaction_id = ANY (string_to_array(ids, ','))
    UNION ALL
    SELECT false, t.transaction_id, t.type, t.player_id, t.round_id, t.amount,
           t.request_hash, t.status, t.moved, t.reference_id, t.answer, t.currency
      FROM casino_transactions t
     WHERE t.reference_id = ANY (string_to_array(ids, ','))
       AND t.type = 'rollback' AND t.status = 'ok'
$$;

ALTER FUNCTION casino_named(text) SET enable_seqscan = off;
REVOKE ALL ON FUNCTION casino_named(text) FROM PUBLIC;
