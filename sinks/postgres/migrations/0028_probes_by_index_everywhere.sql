-- The rest of the functions that check a batch against a big table probe it by key, as
-- 0027 made the ledger's and the placement's: the casino's and the payments' checks
-- against the ledger, the regulator reports' check that each record's audit record
-- exists, and the gateway's ticket and transaction claims. Each was a join (NOT EXISTS,
-- LEFT JOIN, IN) that a plan made while the table was small, or for the 100 rows the
-- planner assumes of any batch, could answer by reading the whole table once per batch.
-- Each is now a lookup per key (LIMIT 1: neither hashed nor turned into a join) and the
-- functions run with enable_seqscan off. Same arguments, results, checks, errors and
-- owners as 0021, 0023 and 0025.
--
-- With every probe by key whatever the statistics, the placement's and these functions'
-- plans may be cached again: 0021 (and 0026 for bets_record) made them plan every call
-- (plan_cache_mode = force_custom_plan) because a plan cached on a nearly empty table
-- went on scanning it whole. bench/place.py, batches of 4 bets, interleaved: PostgreSQL
-- CPU 708-775 ms per 1,000 bets with bets_record's plans cached against 775-867 planned
-- every call.

-- casino_record (0021).
CREATE OR REPLACE FUNCTION casino_record(opened jsonb, txs jsonb, calls jsonb, at timestamptz,
                              credited text, closed text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    IF closed <> '' THEN
        UPDATE casino_rounds
           SET credited_at = coalesce(credited_at, at), closed_at = coalesce(closed_at, at)
         WHERE round_id = ANY (string_to_array(closed, ','));
    END IF;
    IF credited <> '' THEN
        UPDATE casino_rounds SET credited_at = coalesce(credited_at, at)
         WHERE round_id = ANY (string_to_array(credited, ','));
    END IF;
    INSERT INTO casino_rounds (round_id, player_id, game_id, currency, opened_at,
                               credited_at, closed_at)
    SELECT r->>0, r->>1, r->>2, r->>3, (r->>4)::timestamptz, (r->>5)::timestamptz,
           (r->>6)::timestamptz
      FROM jsonb_array_elements(opened) AS r;
    WITH x AS MATERIALIZED (
        SELECT r->>0 AS transaction_id, r->>1 AS type, r->>2 AS player_id,
               r->>3 AS round_id, r->>4 AS game_id, (r->>5)::numeric AS amount,
               r->>6 AS currency, r->>7 AS reference_id, r->>8 AS request_hash,
               r->>9 AS status, r->>10 AS error, (r->>11)::boolean AS moved,
               r->>12 AS rng_build, r->>13 AS answer, (r->>14)::timestamptz AS decided_at,
               r->>15 AS topic, (r->>16)::integer AS part, (r->>17)::bigint AS off
          FROM jsonb_array_elements(txs) AS r
    ),
    stored AS (
        INSERT INTO casino_transactions (transaction_id, type, player_id, round_id, game_id,
                                         amount, currency, reference_id, request_hash,
                                         status, error, moved, rng_build, answer,
                                         decided_at, source_topic, source_partition,
                                         source_offset)
        SELECT x.transaction_id, x.type, x.player_id, x.round_id, x.game_id, x.amount,
               x.currency, x.reference_id, x.request_hash, x.status, x.error, x.moved,
               x.rng_build, x.answer, x.decided_at, x.topic, x.part, x.off
          FROM x
    )
    SELECT x.transaction_id INTO bad FROM x
     WHERE x.moved AND (
               SELECT t.txn_id FROM ledger_transactions t
                WHERE t.idempotency_key = 'casino-' || x.type || ':' || x.transaction_id
                  AND t.status = 'applied' AND t.player_id = x.player_id
                  AND (x.type = 'rollback' OR t.amount = x.amount) LIMIT 1) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'casino transaction % says it moved money the ledger did not move',
                        bad USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO casino_calls (source_topic, source_partition, source_offset, transaction_id,
                              player_id, outcome, answer, standing_version)
    SELECT r->>0, (r->>1)::integer, (r->>2)::bigint, r->>3, r->>4, r->>5, r->>6,
           (r->>7)::bigint
      FROM jsonb_array_elements(calls) AS r;
END $$;

-- payments_record (0021).
CREATE OR REPLACE FUNCTION payments_record(decisions jsonb, events jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    WITH d AS MATERIALIZED (
        SELECT r->>0 AS payment_id, r->>1 AS phase, r->>2 AS type, r->>3 AS player_id,
               r->>4 AS request_hash, r->>5 AS status, r->>6 AS reason, r->>7 AS currency,
               r->>8 AS decision, (r->>9)::timestamptz AS decided_at, r->>10 AS topic,
               (r->>11)::integer AS part, (r->>12)::bigint AS off,
               CASE WHEN r->>1 = 'close' THEN 'withdrawal-close:'
                    WHEN r->>2 = 'deposit' THEN 'deposit:'
                    ELSE 'withdrawal:' END || (r->>0) AS ledger_key
          FROM jsonb_array_elements(decisions) AS r
    ),
    stored AS (
        INSERT INTO payment_decisions (payment_id, phase, type, player_id, request_hash,
                                       status, reason, currency, decision, decided_at,
                                       source_topic, source_partition, source_offset)
        SELECT d.payment_id, d.phase, d.type, d.player_id, d.request_hash, d.status,
               d.reason, d.currency, d.decision, d.decided_at, d.topic, d.part, d.off
          FROM d
    )
    SELECT d.payment_id INTO bad FROM d
      LEFT JOIN LATERAL (SELECT x.txn_id, x.player_id FROM ledger_transactions x
                          WHERE x.idempotency_key = d.ledger_key AND x.status = 'applied'
                          LIMIT 1) t ON true
     WHERE (d.status = 'accepted' AND (t.txn_id IS NULL OR t.player_id <> d.player_id))
        OR (d.status = 'rejected' AND d.phase = 'open' AND t.txn_id IS NOT NULL)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'payment % is not as the ledger holds it: an accepted payment needs '
                        'its move, a rejected one none', bad USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO payment_events (source_topic, source_partition, source_offset, payment_id,
                                player_id, type, outcome, decision, standing_version)
    SELECT r->>0, (r->>1)::integer, (r->>2)::bigint, r->>3, r->>4, r->>5, r->>6, r->>7,
           (r->>8)::bigint
      FROM jsonb_array_elements(events) AS r;
END $$;

-- report_append (0021).
CREATE OR REPLACE FUNCTION report_append(records jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    WITH r AS MATERIALIZED (
        SELECT x.n, x.v->>0 AS j, (x.v->>1)::bigint AS seq, x.v->>2 AS entity_id,
               x.v->>3 AS body, decode(x.v->>4, 'hex') AS prev,
               decode(x.v->>5, 'hex') AS sig, decode(x.v->>6, 'hex') AS pub,
               x.v->>7 AS chain, (x.v->>8)::bigint AS audit_seq
          FROM jsonb_array_elements(records) WITH ORDINALITY AS x(v, n)
    ),
    checked AS (
        SELECT l.j, l.seq
          FROM (SELECT r.*, lag(r.sig) OVER w AS before_sig, lag(r.seq) OVER w AS before_seq
                  FROM r WINDOW w AS (PARTITION BY r.j ORDER BY r.n)) l
          LEFT JOIN report_heads h ON h.jurisdiction = l.j
         WHERE l.seq IS DISTINCT FROM coalesce(l.before_seq, h.seq, 0) + 1
            OR l.prev IS DISTINCT FROM coalesce(l.before_sig, h.signature,
                                                decode(repeat('00', 64), 'hex'))
            OR length(l.sig) IS DISTINCT FROM 64
            OR (SELECT a.seq FROM audit_records a
                 WHERE a.chain = l.chain AND a.seq = l.audit_seq LIMIT 1) IS NULL
    ),
    stored AS (
        INSERT INTO report_records (jurisdiction, seq, entity_id, record_json,
                                    prev_signature, signature, public_key, audit_chain,
                                    audit_seq)
        SELECT r.j, r.seq, r.entity_id, r.body, r.prev, r.sig, r.pub, r.chain, r.audit_seq
          FROM r WHERE NOT EXISTS (SELECT 1 FROM checked)
    ),
    moved AS (
        INSERT INTO report_heads AS h (jurisdiction, seq, signature)
        SELECT DISTINCT ON (r.j) r.j, r.seq, r.sig
          FROM r WHERE NOT EXISTS (SELECT 1 FROM checked)
         ORDER BY r.j, r.n DESC
        ON CONFLICT (jurisdiction) DO UPDATE
           SET seq = EXCLUDED.seq, signature = EXCLUDED.signature
    )
    SELECT c.j, c.seq INTO bad FROM checked c LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'report record %/% does not extend its chain (sequence, previous '
                        'signature, signature, or the audit record it comes from)',
                        bad.j, bad.seq USING ERRCODE = 'check_violation';
    END IF;
END $$;

-- report_reject (0021).
CREATE OR REPLACE FUNCTION report_reject(rejected jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT r->>0 AS chain, (r->>1)::bigint AS seq INTO bad
      FROM jsonb_array_elements(rejected) AS r
     WHERE (SELECT a.seq FROM audit_records a
             WHERE a.chain = r->>0 AND a.seq = (r->>1)::bigint LIMIT 1) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit record %/% is not in the trail', bad.chain, bad.seq
              USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO report_rejections (audit_chain, audit_seq, error)
    SELECT r->>0, (r->>1)::bigint, r->>2 FROM jsonb_array_elements(rejected) AS r
    ON CONFLICT DO NOTHING;
END $$;

-- The gateway's claims (0023, 0025).
CREATE OR REPLACE FUNCTION gateway_tickets_claim(claims jsonb)
RETURNS TABLE (bet text, holder text, holder_player text)
LANGUAGE sql AS $$
    INSERT INTO gateway_tickets (bet_id, key_name, player_id)
    SELECT r->>0, r->>1, r->>2 FROM jsonb_array_elements(claims) AS r ORDER BY r->>0
    ON CONFLICT (bet_id) DO NOTHING;
    SELECT t.bet_id, t.key_name, t.player_id
      FROM (SELECT DISTINCT r->>0 AS id FROM jsonb_array_elements(claims) AS r) c
     CROSS JOIN LATERAL (SELECT g.bet_id, g.key_name, g.player_id FROM gateway_tickets g
                          WHERE g.bet_id = c.id LIMIT 1) t;
$$;

CREATE OR REPLACE FUNCTION gateway_transactions_claim(claims jsonb)
RETURNS TABLE (claim bigint, holder text, round_holder text, reference_holder text,
               fresh boolean)
LANGUAGE plpgsql AS $$
DECLARE
    inserted text[];
BEGIN
    WITH ins AS (
        INSERT INTO gateway_transactions (transaction_id, partner, player_id, round_id)
        SELECT r->>0, r->>1, r->>2, r->>3 FROM jsonb_array_elements(claims) AS r
         ORDER BY r->>0
        ON CONFLICT (transaction_id) DO NOTHING
        RETURNING transaction_id
    )
    SELECT coalesce(array_agg(ins.transaction_id), '{}') INTO inserted FROM ins;
    RETURN QUERY
    SELECT r.i, t.partner,
           (SELECT o.partner FROM gateway_transactions o WHERE o.round_id = r.c->>3
             ORDER BY o.claimed_at, o.transaction_id LIMIT 1),
           (SELECT f.partner FROM gateway_transactions f WHERE f.transaction_id = r.c->>4
             LIMIT 1),
           t.transaction_id = ANY(inserted) AND t.partner = r.c->>1
      FROM jsonb_array_elements(claims) WITH ORDINALITY AS r(c, i)
     CROSS JOIN LATERAL (SELECT g.transaction_id, g.partner FROM gateway_transactions g
                          WHERE g.transaction_id = r.c->>0 LIMIT 1) t;
END $$;

DO $$
DECLARE
    f text;
BEGIN
    -- CREATE OR REPLACE keeps a function's owner and grants, not its other properties.
    FOREACH f IN ARRAY ARRAY['casino_record(jsonb, jsonb, jsonb, timestamptz, text, text)',
                             'payments_record(jsonb, jsonb)', 'report_append(jsonb)',
                             'report_reject(jsonb)', 'gateway_tickets_claim(jsonb)',
                             'gateway_transactions_claim(jsonb)'] LOOP
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                       'SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
        EXECUTE format('ALTER FUNCTION %s SET enable_seqscan = off', f);
    END LOOP;
    -- Plans may be cached again (see above; 0021 planned every call): for a
    -- batch of four bets, bets_record's planning was a tenth of PostgreSQL's time.
    FOREACH f IN ARRAY ARRAY['bets_record(jsonb, jsonb, jsonb)',
                             'casino_record(jsonb, jsonb, jsonb, timestamptz, text, text)',
                             'payments_record(jsonb, jsonb)', 'report_append(jsonb)',
                             'report_reject(jsonb)'] LOOP
        EXECUTE format('ALTER FUNCTION %s RESET plan_cache_mode', f);
    END LOOP;
END $$;
