-- bets_record() takes each bet's request as JSON inside the batch's parameter (an object),
-- where 0021 took it as a string of JSON: the string was parsed once more for every bet, to
-- store the request and again to check its legs, after the parameter itself was parsed.
-- A request given as a string (a worker of the previous version during a rolling
-- upgrade) is still read as before. Everything else is 0021's, unchanged: same checks,
-- same owner (CREATE OR REPLACE keeps it and the grants; the settings are set again
-- below, as 0021 sets them, since a replaced function keeps only what its CREATE says).
--
-- bets: [[bet_id, player_id, currency, stake, odds, placed_at, status, reason,
--          request_hash, request (object, or a string of JSON), decision, decided_at,
--          source_topic, source_partition, source_offset, standing_version], ...]
-- legs: [[bet_id, leg, event_id, market_id, outcome_id, odds, placed_at], ...]
-- duplicates: [[source_topic, source_partition, source_offset, bet_id], ...]
CREATE OR REPLACE FUNCTION bets_record(bets jsonb, legs jsonb, duplicates jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    -- One statement checks and stores (nothing is stored when a bet does not hold).
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
    checked AS (
        SELECT b.bet_id FROM b
          LEFT JOIN ledger_transactions t
            ON t.idempotency_key = 'bet:' || b.bet_id AND t.status = 'applied'
         WHERE b.status IS NULL OR b.status NOT IN ('open', 'rejected')
            OR (b.status = 'rejected') <> (t.txn_id IS NULL)
            OR (b.status = 'open'
                AND (t.operation, t.player_id, t.currency, t.amount)
                    IS DISTINCT FROM ('stake', b.player_id, b.currency::char(3), b.stake))
    ),
    stored AS (
        INSERT INTO bets (bet_id, player_id, currency, stake, odds, placed_at, status,
                          reason, request_hash, request, decision, decided_at, source_topic,
                          source_partition, source_offset, standing_version)
        SELECT b.bet_id, b.player_id, b.currency, b.stake, b.odds, b.placed_at, b.status,
               b.reason, b.request_hash, b.request, b.decision, b.decided_at, b.topic,
               b.part, b.off, b.standing_version
          FROM b WHERE NOT EXISTS (SELECT 1 FROM checked)
    )
    SELECT c.bet_id INTO bad FROM checked c LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bet % is not as the ledger holds it: an accepted bet needs its '
                        'stake, a rejected one none', bad USING ERRCODE = 'check_violation';
    END IF;

    -- Each open bet of this call has exactly its request's selections as legs, and no leg
    -- belongs to a bet of another call.
    WITH l AS MATERIALIZED (
        SELECT r->>0 AS bet_id, (r->>1)::integer AS leg, r->>2 AS e, r->>3 AS m,
               r->>4 AS o, (r->>5)::numeric AS odds, (r->>6)::timestamptz AS placed_at
          FROM jsonb_array_elements(legs) AS r
    ),
    want AS (
        SELECT b->>0 AS bet_id, s.n - 1 AS leg, s.v->>'event_id' AS e,
               s.v->>'market_id' AS m, s.v->>'outcome_id' AS o
          FROM jsonb_array_elements(bets) AS b
         CROSS JOIN LATERAL jsonb_array_elements(
                   CASE jsonb_typeof(b->9) WHEN 'string' THEN (b->>9)::jsonb ELSE b->9 END
                   ->'selections')
               WITH ORDINALITY AS s(v, n)
         WHERE b->>6 = 'open'
    ),
    checked AS (
        SELECT coalesce(w.bet_id, l.bet_id) AS bet_id
          FROM want w FULL JOIN l ON l.bet_id = w.bet_id AND l.leg = w.leg
         WHERE (w.e, w.m, w.o) IS DISTINCT FROM (l.e, l.m, l.o)
    ),
    stored AS (
        INSERT INTO bet_legs (bet_id, leg, event_id, market_id, outcome_id, odds, placed_at)
        SELECT l.bet_id, l.leg, l.e, l.m, l.o, l.odds, l.placed_at
          FROM l WHERE NOT EXISTS (SELECT 1 FROM checked)
    )
    SELECT c.bet_id INTO bad FROM checked c LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the legs of bet % are not its selections', bad
              USING ERRCODE = 'check_violation';
    END IF;

    INSERT INTO bet_duplicates (source_topic, source_partition, source_offset, bet_id)
    SELECT r->>0, (r->>1)::integer, (r->>2)::bigint, r->>3
      FROM jsonb_array_elements(duplicates) AS r
    ON CONFLICT DO NOTHING;
END $$;

DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', current_schema());
    ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SET plan_cache_mode = force_custom_plan;
    REVOKE ALL ON FUNCTION bets_record(jsonb, jsonb, jsonb) FROM PUBLIC;
END $$;
