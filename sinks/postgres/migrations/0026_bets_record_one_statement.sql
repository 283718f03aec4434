-- bets_record() checks and stores a placement batch in one statement, where 0022 took two:
-- the legs' check reads each request's selections from the bets already read (0022 read
-- the batch's parameter and every request in it a second time for the legs), and the
-- bets and their legs are inserted together once both checks hold. Same arguments, same
-- checks, same errors (the bets' check is reported first), same owner and settings.
--
-- The legs' foreign key to their bet goes: bets_record, their only writer (the
-- application has no INSERT on bet_legs since 0021), stores a leg only with its own open
-- bet, in the same statement, and checks that the legs are exactly the request's
-- selections; and a bet is never deleted (0021: the application has no DELETE on bets).
-- The key's check cost a lookup and a row lock on the bet for every leg of every bet.
ALTER TABLE bet_legs DROP CONSTRAINT IF EXISTS bet_legs_bet_id_fkey;

CREATE OR REPLACE FUNCTION bets_record(bets jsonb, legs jsonb, duplicates jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad  text;
    what int;
BEGIN
    WITH b AS MATERIALIZED (
        SELECT r->>0 AS bet_id, r->>1 AS player_id, r->>2 AS currency,
               (r->>3)::numeric AS stake, (r->>4)::numeric AS odds,
               (r->>5)::timestamptz AS placed_at, r->>6 AS status, r->>7 AS reason,
               r->>8 AS request_hash,
               CASE jsonb_typeof(r->9) WHEN 'string' THEN (r->>9)::jsonb ELSE r->9 END
                 AS request,
               r->>10 AS decision,
               (r->>11)::timestamptz AS decided_at, r->>12 AS topic,
               (r->>13)::integer AS part, (r->>14)::bigint AS off,
               (r->>15)::bigint AS standing_version
          FROM jsonb_array_elements(bets) AS r
    ),
    l AS MATERIALIZED (
        SELECT r->>0 AS bet_id, (r->>1)::integer AS leg, r->>2 AS e, r->>3 AS m,
               r->>4 AS o, (r->>5)::numeric AS odds, (r->>6)::timestamptz AS placed_at
          FROM jsonb_array_elements(legs) AS r
    ),
    want AS (
        SELECT b.bet_id, s.n - 1 AS leg, s.v->>'event_id' AS e, s.v->>'market_id' AS m,
               s.v->>'outcome_id' AS o
          FROM b CROSS JOIN LATERAL jsonb_array_elements(b.request->'selections')
               WITH ORDINALITY AS s(v, n)
         WHERE b.status = 'open'
    ),
    -- What does not hold: 1, a bet not as the ledger holds it (an accepted bet needs its
    -- stake, a rejected one none); 2, legs that are not their open bet's selections, or a
    -- leg of a bet not in this call.
    wrong AS MATERIALIZED (
        SELECT b.bet_id, 1 AS what FROM b
          LEFT JOIN ledger_transactions t
            ON t.idempotency_key = 'bet:' || b.bet_id AND t.status = 'applied'
         WHERE b.status IS NULL OR b.status NOT IN ('open', 'rejected')
            OR (b.status = 'rejected') <> (t.txn_id IS NULL)
            OR (b.status = 'open'
                AND (t.operation, t.player_id, t.currency, t.amount)
                    IS DISTINCT FROM ('stake', b.player_id, b.currency::char(3), b.stake))
        UNION ALL
        SELECT coalesce(w.bet_id, l.bet_id), 2
          FROM want w FULL JOIN l ON l.bet_id = w.bet_id AND l.leg = w.leg
         WHERE (w.e, w.m, w.o) IS DISTINCT FROM (l.e, l.m, l.o)
    ),
    stored AS (
        INSERT INTO bets (bet_id, player_id, currency, stake, odds, placed_at, status,
                          reason, request_hash, request, decision, decided_at, source_topic,
                          source_partition, source_offset, standing_version)
        SELECT b.bet_id, b.player_id, b.currency, b.stake, b.odds, b.placed_at, b.status,
               b.reason, b.request_hash, b.request, b.decision, b.decided_at, b.topic,
               b.part, b.off, b.standing_version
          FROM b WHERE NOT EXISTS (SELECT 1 FROM wrong)
    ),
    stored_legs AS (
        INSERT INTO bet_legs (bet_id, leg, event_id, market_id, outcome_id, odds, placed_at)
        SELECT l.bet_id, l.leg, l.e, l.m, l.o, l.odds, l.placed_at
          FROM l WHERE NOT EXISTS (SELECT 1 FROM wrong)
    )
    SELECT w.bet_id, w.what INTO bad, what FROM wrong w ORDER BY w.what LIMIT 1;
    IF FOUND THEN
        IF what = 1 THEN
            RAISE EXCEPTION 'bet % is not as the ledger holds it: an accepted bet needs its '
                            'stake, a rejected one none', bad USING ERRCODE = 'check_violation';
        END IF;
        RAISE EXCEPTION 'the legs of bet % are not its selections', bad
              USING ERRCODE = 'check_violation';
    END IF;

    IF jsonb_array_length(duplicates) > 0 THEN
        INSERT INTO bet_duplicates (source_topic, source_partition, source_offset, bet_id)
        SELECT r->>0, (r->>1)::integer, (r->>2)::bigint, r->>3
          FROM jsonb_array_elements(duplicates) AS r
        ON CONFLICT DO NOTHING;
    END IF;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', current_schema());
    ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SET plan_cache_mode = force_custom_plan;
    REVOKE ALL ON FUNCTION bets_record(jsonb, jsonb, jsonb) FROM PUBLIC;
END $$;
