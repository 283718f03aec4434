-- bets_load() makes a placement's reads and locks one statement, where the placement sent
-- nine in one pipeline: the batch's bet ids already stored; a shared advisory lock per
-- market of every priced bet (sorted: the fence settlements take exclusively) and which
-- of those markets are settled or cancelled; player protection's reads (every standing,
-- the rows of players with a money limit locked in player order and read again under the
-- lock, then their activity and sessions); the batch's audit chain heads, locked; and the
-- batch's progress. Same statements, same order, same locks as before
-- (sinks/postgres/sportsbook.py, sinks/postgres/protection.py): each statement of a
-- VOLATILE function takes its own snapshot, so the activity is still read after the
-- locks, as committed when they were granted.
--
-- Why: at 1,000 bets/s a batch holds a dozen bets, and each statement cost the worker
-- about 0.25 ms of Python in psycopg (queueing, adapting, reading results) and PostgreSQL
-- its per-statement overhead; the statements, not the rows, were most of both
-- (BENCHMARKS.md, sixth session).
--
-- SECURITY INVOKER: it runs with the application's own rights, which already read these
-- tables, lock these rows, take the heads through audit_lock_heads() and write
-- consumer_progress. The result is one jsonb of positional arrays; amounts as text, so
-- they stay exact.
CREATE FUNCTION bets_load(p_bets text[], p_events text[], p_markets text[],
                          p_players text[], p_money jsonb[], p_session jsonb[],
                          p_since timestamptz, p_chains text[], p_group text,
                          p_topics text[], p_parts integer[], p_offsets bigint[])
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    known    jsonb;
    closed   jsonb := '[]';
    every    jsonb := '[]';
    locked   jsonb := '[]';
    activity jsonb := '[]';
    sessions jsonb := '[]';
    heads    jsonb := '[]';
BEGIN
    SELECT coalesce(jsonb_agg(jsonb_build_array(b.bet_id, b.request_hash, b.source_topic,
                                                b.source_partition, b.source_offset,
                                                b.decision, b.player_id)), '[]')
      INTO known
      FROM bets b WHERE b.bet_id = ANY (p_bets);

    IF cardinality(p_events) > 0 THEN
        PERFORM count(pg_advisory_xact_lock_shared(hashtextextended(t.e || chr(31) || t.m, 0)))
           FROM unnest(p_events, p_markets) AS t(e, m);
        SELECT coalesce(jsonb_agg(jsonb_build_array(s.event_id, s.market_id)), '[]')
          INTO closed
          FROM market_states s
          JOIN unnest(p_events, p_markets) AS t(e, m) ON s.event_id = t.e AND s.market_id = t.m
         WHERE s.results IS NOT NULL OR s.cancelled;
    END IF;

    IF cardinality(p_players) > 0 THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array(p.player_id, p.standing::text)), '[]')
          INTO every
          FROM players p WHERE p.player_id = ANY (p_players);
        SELECT coalesce(jsonb_agg(jsonb_build_array(x.player_id, x.standing)), '[]')
          INTO locked
          FROM (SELECT p.player_id, p.standing::text AS standing FROM players p
                 WHERE p.player_id = ANY (p_players) AND p.standing -> 'limits' @> ANY (p_money)
                 ORDER BY p.player_id FOR NO KEY UPDATE) x;
        SELECT coalesce(jsonb_agg(jsonb_build_array(a.player_id, a.occurred_at, a.loss::text,
                                                    a.deposit::text)), '[]')
          INTO activity
          FROM (SELECT t.player_id, t.occurred_at,
                       CASE t.operation
                            WHEN 'stake' THEN t.amount
                            WHEN 'casino_debit' THEN t.amount
                            WHEN 'settle' THEN -t.payout
                            WHEN 'casino_credit' THEN -t.amount
                            WHEN 'unsettle' THEN r.payout
                            WHEN 'casino_rollback' THEN -r.amount
                       END AS loss,
                       CASE WHEN t.operation = 'deposit' THEN t.amount END AS deposit
                  FROM ledger_transactions t
                  LEFT JOIN ledger_transactions r ON r.txn_id = t.reference_id
                 WHERE t.player_id = ANY (ARRAY(
                           SELECT p.player_id FROM players p
                            WHERE p.player_id = ANY (p_players)
                              AND p.standing -> 'limits' @> ANY (p_money)))
                   AND t.occurred_at > p_since
                   AND t.status = 'applied'
                   AND t.operation IN ('deposit', 'stake', 'settle', 'unsettle', 'casino_debit',
                                       'casino_credit', 'casino_rollback')) a;
        SELECT coalesce(jsonb_agg(jsonb_build_array(s.player_id, s.started_at, s.ended_at)),
                        '[]')
          INTO sessions
          FROM player_sessions s
         WHERE s.player_id = ANY (ARRAY(
                   SELECT p.player_id FROM players p
                    WHERE p.player_id = ANY (p_players)
                      AND p.standing -> 'limits' @> ANY (p_session)))
           AND (s.ended_at IS NULL OR s.ended_at > p_since);
    END IF;

    IF cardinality(p_chains) > 0 THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array(h.chain, h.seq, encode(h.hash, 'hex'))),
                        '[]')
          INTO heads
          FROM audit_lock_heads(p_chains) h;
    END IF;

    IF cardinality(p_topics) > 0 THEN
        INSERT INTO consumer_progress (consumer_group, topic, partition, next_offset)
        SELECT p_group, u.t, u.p, u.o FROM unnest(p_topics, p_parts, p_offsets) AS u(t, p, o)
        ON CONFLICT (consumer_group, topic, partition) DO UPDATE
           SET next_offset = GREATEST(consumer_progress.next_offset, EXCLUDED.next_offset),
               updated_at = now();
    END IF;

    RETURN jsonb_build_array(known, closed, every, locked, activity, sessions, heads);
END $$;

REVOKE ALL ON FUNCTION bets_load(text[], text[], text[], text[], jsonb[], jsonb[], timestamptz,
                                 text[], text, text[], integer[], bigint[]) FROM PUBLIC;
