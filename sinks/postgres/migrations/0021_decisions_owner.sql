-- The decisions and the regulator's report chains get owners of their own, as the ledger
-- (0018) and the trail (0019) did: the application keeps SELECT on them and writes them
-- only through the SECURITY DEFINER functions below (search_path fixed to this schema),
-- which check what no grant can.
--
-- croupier_decisions, a role nobody logs in as, owns what the house decided: bets, their
-- legs and producers' retries of them, settlements and the settlement messages, casino
-- rounds, transactions and calls, payment decisions and payment events.
--
--   bets_record(bets, legs, duplicates)  stores a placement batch's decisions. An accepted
--       (open) bet must hold its stake in the ledger (an applied 'stake' under key
--       bet:<id>, same player, currency and amount) and one leg for each selection of its
--       request, as the request names them; a rejected bet must hold no stake; a bet is
--       stored open or rejected, never settled; legs only with their own bet, in the same
--       call.
--   bets_lock(ids)                        locks bets for a settlement (FOR UPDATE needs an
--       UPDATE right the application no longer has) and returns them.
--   bets_settle(bets, settlements)        moves bets to their settlement in force and stores
--       the settlements published. A settled bet's settlement, and every settlement
--       stored, must be in the ledger (applied, key settlement:<id>, the bet's player); a
--       bet's settlement count never goes back; a rejected bet is never touched.
--   legs_set_results / legs_clear_results / legs_set_cancelled
--                                         a market's results, their rollback, and a
--       bet_cancel, applied to its legs (the only leg columns that ever change); each
--       returns the bets it touched.
--   market_message_record(...)            the settlement message and what it changed.
--   casino_lock_rounds(rounds, txs)       locks the rounds a casino batch touches.
--   casino_record(opened, txs, calls, at, credited, closed)
--                                         stores a casino batch: a transaction that moved
--       money must hold its applied ledger move (key casino-<type>:<id>, same player and
--       amount); rounds are only opened here, and credited and closed once.
--   payments_record(decisions, events)    an accepted payment must hold its applied ledger
--       move (deposit:, withdrawal: or withdrawal-close:<payment_id>); a rejected open
--       must hold none.
--
-- croupier_audit, the trail's owner, takes the report chains derived from it:
--
--   report_lock_heads()                   locks every jurisdiction's head for a pass.
--   report_append(records)                appends signed report records: each follows its
--       chain's head (sequence + 1, previous signature = the head's, 64 zero bytes for a
--       new chain) and names an audit record the trail holds; then the heads move. The
--       Ed25519 signature itself is checked by the regulator and `regulator follow` (the
--       database has no Ed25519).
--   report_reject(rejected)               sets aside audit records the reporter cannot
--       turn into report records; each must be a record the trail holds.
--
-- Each function plans its statements for every call (plan_cache_mode =
-- force_custom_plan): a plan cached while a flow's tables were nearly empty (a fresh
-- schema, before autovacuum's first ANALYZE) would go on scanning the ledger or the
-- trail whole for every check once they hold millions of rows; a plan made now looks
-- each key up in its index. Measured (BENCHMARKS.md): the cached plans cost the bets
-- flow a third more PostgreSQL time and doubled its latency at 200 bets/s.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'croupier_decisions') THEN
        CREATE ROLE croupier_decisions NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN NULL;  -- another database's migrator made it first
END $$;

-- bets: [[bet_id, player_id, currency, stake, odds, placed_at, status, reason,
--          request_hash, request, decision, decided_at, source_topic, source_partition,
--          source_offset, standing_version], ...]
-- legs: [[bet_id, leg, event_id, market_id, outcome_id, odds, placed_at], ...]
-- duplicates: [[source_topic, source_partition, source_offset, bet_id], ...]
CREATE FUNCTION bets_record(bets jsonb, legs jsonb, duplicates jsonb)
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
               r->>8 AS request_hash, (r->>9)::jsonb AS request, r->>10 AS decision,
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
         CROSS JOIN LATERAL jsonb_array_elements((b->>9)::jsonb->'selections')
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

CREATE FUNCTION bets_lock(ids text[])
RETURNS TABLE (bet_id text, player_id text, currency char(3), stake numeric,
               settlement_id text, result text, payout numeric, settle_seq integer)
LANGUAGE sql AS $$
    SELECT b.bet_id, b.player_id, b.currency, b.stake, b.settlement_id, b.result, b.payout,
           b.settle_seq
      FROM bets b WHERE b.bet_id = ANY (ids) AND b.status <> 'rejected'
     ORDER BY b.bet_id FOR UPDATE
$$;

-- bets: [[bet_id, status, settlement_id, result, payout, settle_seq], ...]
-- settlements: [[settlement_id, bet_id, player_id, kind, result, payout, message,
--                source_topic, source_partition, source_offset], ...]
CREATE FUNCTION bets_settle(bets jsonb, settlements jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad  text;
    want integer := jsonb_array_length(bets);
    done integer;
BEGIN
    WITH n AS (
        SELECT r->>0 AS bet_id, r->>1 AS status, r->>2 AS settlement_id, r->>3 AS result,
               (r->>4)::numeric AS payout, (r->>5)::integer AS settle_seq
          FROM jsonb_array_elements(bets) AS r
    )
    UPDATE bets b SET status = n.status, settlement_id = n.settlement_id, result = n.result,
                      payout = n.payout, settle_seq = n.settle_seq
      FROM n
     WHERE b.bet_id = n.bet_id AND b.status <> 'rejected' AND n.status IN ('open', 'settled')
       AND n.settle_seq >= b.settle_seq
       AND (n.settlement_id IS NULL OR EXISTS (
                SELECT 1 FROM ledger_transactions t
                 WHERE t.idempotency_key = 'settlement:' || n.settlement_id
                   AND t.status = 'applied' AND t.operation = 'settle'
                   AND t.player_id = b.player_id
                   AND t.payout IS NOT DISTINCT FROM n.payout));
    GET DIAGNOSTICS done = ROW_COUNT;
    IF done <> want THEN
        RAISE EXCEPTION 'a settlement of % bets does not hold: a bet rejected, a settlement '
                        'count going back, or a settlement the ledger does not hold',
                        want - done USING ERRCODE = 'check_violation';
    END IF;

    WITH s AS MATERIALIZED (
        SELECT r->>0 AS settlement_id, r->>1 AS bet_id, r->>2 AS player_id, r->>3 AS kind,
               r->>4 AS result, (r->>5)::numeric AS payout, r->>6 AS message,
               r->>7 AS topic, (r->>8)::integer AS part, (r->>9)::bigint AS off
          FROM jsonb_array_elements(settlements) AS r
    ),
    stored AS (
        INSERT INTO settlements (settlement_id, bet_id, player_id, kind, result, payout,
                                 message, source_topic, source_partition, source_offset)
        SELECT s.settlement_id, s.bet_id, s.player_id, s.kind, s.result, s.payout,
               s.message, s.topic, s.part, s.off
          FROM s
    )
    SELECT s.settlement_id INTO bad FROM s
     WHERE NOT EXISTS (SELECT 1 FROM ledger_transactions t
                        WHERE t.idempotency_key = 'settlement:' || s.settlement_id
                          AND t.status = 'applied' AND t.player_id = s.player_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'settlement % is not in the ledger', bad
              USING ERRCODE = 'check_violation';
    END IF;
END $$;

CREATE FUNCTION legs_set_results(event text, market text, results jsonb)
RETURNS SETOF text
LANGUAGE sql AS $$
    UPDATE bet_legs l SET result = r.result, dead_heat_factor = r.dead_heat_factor::numeric
      FROM jsonb_each(results) AS j(outcome_id, v),
           jsonb_to_record(j.v) AS r(result text, dead_heat_factor text)
     WHERE l.event_id = event AND l.market_id = market AND l.outcome_id = j.outcome_id
 RETURNING l.bet_id
$$;

CREATE FUNCTION legs_clear_results(event text, market text)
RETURNS SETOF text
LANGUAGE sql AS $$
    UPDATE bet_legs l SET result = NULL, dead_heat_factor = NULL
     WHERE l.event_id = event AND l.market_id = market AND l.result IS NOT NULL
 RETURNING l.bet_id
$$;

CREATE FUNCTION legs_set_cancelled(event text, market text, cancel boolean,
                                   start_at timestamptz, end_at timestamptz)
RETURNS SETOF text
LANGUAGE sql AS $$
    UPDATE bet_legs l SET cancelled = cancel
     WHERE l.event_id = event AND l.market_id = market AND l.cancelled <> cancel
       AND l.placed_at >= coalesce(start_at, '-infinity'::timestamptz)
       AND l.placed_at < coalesce(end_at, 'infinity'::timestamptz)
 RETURNING l.bet_id
$$;

CREATE FUNCTION market_message_record(topic text, part integer, off bigint, event text,
                                      kind text, payload jsonb, changed jsonb)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO market_messages (source_topic, source_partition, source_offset, event_id,
                                 type, payload, changed)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
$$;

-- rounds, txs: ids joined by commas (an id has no comma)
CREATE FUNCTION casino_lock_rounds(rounds text, txs text)
RETURNS TABLE (round_id text, player_id text, game_id text, currency char(3),
               opened_at timestamptz, credited boolean, closed boolean)
LANGUAGE sql AS $$
    SELECT r.round_id, r.player_id, r.game_id, r.currency, r.opened_at,
           r.credited_at IS NOT NULL, r.closed_at IS NOT NULL
      FROM casino_rounds r
     WHERE r.round_id = ANY (string_to_array(rounds, ',') || ARRAY(
             SELECT t.round_id FROM casino_transactions t
              WHERE t.transaction_id = ANY (string_to_array(txs, ','))))
     ORDER BY r.round_id FOR UPDATE
$$;

-- opened: [[round_id, player_id, game_id, currency, opened_at, credited_at, closed_at], ...]
-- txs: [[transaction_id, type, player_id, round_id, game_id, amount, currency,
--        reference_id, request_hash, status, error, moved, rng_build, answer, decided_at,
--        source_topic, source_partition, source_offset], ...]
-- calls: [[source_topic, source_partition, source_offset, transaction_id, player_id,
--          outcome, answer, standing_version], ...]
-- credited, closed: round ids joined by commas, credited (and closed) at ``at``
CREATE FUNCTION casino_record(opened jsonb, txs jsonb, calls jsonb, at timestamptz,
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
     WHERE x.moved AND NOT EXISTS (
               SELECT 1 FROM ledger_transactions t
                WHERE t.idempotency_key = 'casino-' || x.type || ':' || x.transaction_id
                  AND t.status = 'applied' AND t.player_id = x.player_id
                  AND (x.type = 'rollback' OR t.amount = x.amount))
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

-- decisions: [[payment_id, phase, type, player_id, request_hash, status, reason, currency,
--              decision, decided_at, source_topic, source_partition, source_offset], ...]
-- events: [[source_topic, source_partition, source_offset, payment_id, player_id, type,
--           outcome, decision, standing_version], ...]
CREATE FUNCTION payments_record(decisions jsonb, events jsonb)
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
      LEFT JOIN ledger_transactions t
        ON t.idempotency_key = d.ledger_key AND t.status = 'applied'
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

CREATE FUNCTION report_lock_heads()
RETURNS TABLE (jurisdiction text, seq bigint, signature bytea)
LANGUAGE sql AS $$
    SELECT h.jurisdiction, h.seq, h.signature FROM report_heads h
     ORDER BY h.jurisdiction FOR UPDATE
$$;

-- records: [[jurisdiction, seq, entity_id, record_json, prev_signature (hex),
--            signature (hex), public_key (hex), audit_chain, audit_seq], ...], each
-- jurisdiction's in order.
CREATE FUNCTION report_append(records jsonb)
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
            OR NOT EXISTS (SELECT 1 FROM audit_records a
                            WHERE a.chain = l.chain AND a.seq = l.audit_seq)
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

-- rejected: [[audit_chain, audit_seq, error], ...]
CREATE FUNCTION report_reject(rejected jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT r->>0 AS chain, (r->>1)::bigint AS seq INTO bad
      FROM jsonb_array_elements(rejected) AS r
     WHERE NOT EXISTS (SELECT 1 FROM audit_records a
                        WHERE a.chain = r->>0 AND a.seq = (r->>1)::bigint)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit record %/% is not in the trail', bad.chain, bad.seq
              USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO report_rejections (audit_chain, audit_seq, error)
    SELECT r->>0, (r->>1)::bigint, r->>2 FROM jsonb_array_elements(rejected) AS r
    ON CONFLICT DO NOTHING;
END $$;

DO $$
DECLARE
    s text := current_schema();
    t text;
    f text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT croupier_decisions TO %I', current_user);
        EXECUTE format('GRANT croupier_audit TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO croupier_decisions', s);
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO croupier_audit', s);
    -- The decisions' checks read the ledger; the reports' read the trail (its owner's).
    GRANT SELECT ON ledger_transactions TO croupier_decisions;
    FOREACH t IN ARRAY ARRAY['bets', 'bet_legs', 'bet_duplicates', 'settlements',
                             'market_messages', 'casino_rounds', 'casino_transactions',
                             'casino_calls', 'payment_decisions', 'payment_events'] LOOP
        EXECUTE format('ALTER TABLE %I OWNER TO croupier_decisions', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['report_records', 'report_heads', 'report_rejections'] LOOP
        EXECUTE format('ALTER TABLE %I OWNER TO croupier_audit', t);
    END LOOP;
    FOREACH f IN ARRAY ARRAY['bets_record(jsonb, jsonb, jsonb)', 'bets_lock(text[])',
                             'bets_settle(jsonb, jsonb)',
                             'legs_set_results(text, text, jsonb)',
                             'legs_clear_results(text, text)',
                             'legs_set_cancelled(text, text, boolean, timestamptz, timestamptz)',
                             'market_message_record(text, integer, bigint, text, text, jsonb, jsonb)',
                             'casino_lock_rounds(text, text)',
                             'casino_record(jsonb, jsonb, jsonb, timestamptz, text, text)',
                             'payments_record(jsonb, jsonb)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO croupier_decisions', f);
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                       'SET search_path = pg_catalog, %I, pg_temp', f, s);
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_custom_plan', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    FOREACH f IN ARRAY ARRAY['report_lock_heads()', 'report_append(jsonb)',
                             'report_reject(jsonb)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO croupier_audit', f);
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                       'SET search_path = pg_catalog, %I, pg_temp', f, s);
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_custom_plan', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM croupier_decisions', s);
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM croupier_audit', s);
END $$;
