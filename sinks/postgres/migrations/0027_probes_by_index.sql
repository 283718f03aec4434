-- Plans that stay right as the tables grow: every probe of a big table by a batch's keys
-- is an index lookup per key, never a scan of the table.
--
-- A statement that looks up a batch's keys in ledger_transactions or ledger_accounts was
-- written as a join (NOT EXISTS, LEFT JOIN). The planner estimates every batch (a
-- jsonb_array_elements) at 100 rows, and a plan cached while the table was small (a fresh
-- database, the first minutes of a stack, any table that grew faster than autovacuum's
-- statistics) hashed the whole table once per call: measured with auto_explain on a
-- bench schema of 22,000 transactions, a batch of 2 bets scanned all of them three times
-- (ledger_post's duplicate probe, the entries' check, bets_record's stake check), 12 ms
-- of a 24 ms placement, and it grew with the table. Now:
--  * each probe is a correlated lookup with LIMIT 1 (a subquery the planner can neither
--    hash nor flatten into a join): one unique-index probe per key, whatever the
--    statistics say;
--  * the functions run with enable_seqscan off, so a plan made while a table held a page
--    or two still probes the index, not the table (a scan stays possible where no index
--    serves: the setting only prices it out).
-- Same arguments, results, checks, errors, owners and settings as 0017, 0018 and 0026.

-- The entries' statement-level check (0002): the same three rules, each key looked up.
CREATE OR REPLACE FUNCTION ledger_entries_checked() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT e.txn_id, e.currency, sum(e.amount) AS total INTO bad
      FROM new_entries e GROUP BY 1, 2 HAVING sum(e.amount) <> 0 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance in %: %',
            bad.txn_id, bad.currency, bad.total USING ERRCODE = 'check_violation';
    END IF;
    PERFORM 1 FROM new_entries e
     WHERE (SELECT a.currency FROM ledger_accounts a WHERE a.account_id = e.account_id LIMIT 1)
           IS DISTINCT FROM e.currency
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a ledger entry names a missing account or one in another currency'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    PERFORM 1 FROM (SELECT DISTINCT e.txn_id FROM new_entries e) e
     WHERE (SELECT t.txn_id FROM ledger_transactions t WHERE t.txn_id = e.txn_id LIMIT 1) IS NULL
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'a ledger entry names a missing transaction'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
ALTER FUNCTION ledger_entries_checked() SET enable_seqscan = off;

-- ledger_post (0017), the probes by key.
CREATE OR REPLACE FUNCTION ledger_post(ops jsonb)
RETURNS TABLE (ord int, idempotency_key text, status text, reason text, duplicate boolean,
               txn_id bigint, cash_after numeric, pending_after numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    op          jsonb;
    ids         jsonb;
    prev        ledger_transactions;
    ref         ledger_transactions;
    k           text;
    kind        text;
    player      text;
    cur         text;
    amt         numeric;
    pay         numeric;
    cash_id     bigint;
    pend_id     bigint;
    resv_id     bigint;
    debt_id     bigint;
    owed        numeric;
    take        numeric;
    rec         numeric;
    acct        bigint[];
    delta       numeric[];
    done_acct   bigint[];
    done_delta  numeric[];
    i           int;
    j           int;
    new_balance numeric;
    why         text;
    new_txn     bigint;
    e_txn       bigint[] := '{}';
    e_acct      bigint[] := '{}';
    e_cur       text[] := '{}';
    e_amt       numeric[] := '{}';
    c_after     numeric;
    p_after     numeric;
    n           int;
    f_ord       int[];
    f_key       text[];
    f_txn       bigint[];
    f_cash      numeric[];
    f_pend      numeric[];
    w_count     int;
    g_owner     text[];
    g_cash      bigint[];
    g_pend      bigint[];
    g_resv      bigint[];
    g_cash_bal  numeric[];
    g_pend_bal  numeric[];
    g_resv_bal  numeric[];
    g_debt_bal  numeric[];
    attempt     int;
    -- The transactions' id sequence, looked up once (per row it cost a catalog search).
    txn_seq     regclass := pg_get_serial_sequence('ledger_transactions', 'txn_id')::regclass;
    d_ord       int[];
    d_key       text[];
    d_status    text[];
    d_reason    text[];
    d_txn       bigint[];
    d_cash      numeric[];
    d_pend      numeric[];
BEGIN
    PERFORM set_config('croupier.ledger_posting', 'on', true);

    -- Lock the batch's player accounts in one order (so concurrent batches cannot deadlock
    -- on them and every balance read below is current) and read them in the same
    -- statement: one row per wallet (player and currency) of the batch, in (player,
    -- currency) order, with its four accounts. A wallet missing an account (a new player,
    -- a new currency) or a currency without its house accounts is created first (only
    -- the missing ones are inserted; a wallet opened before 0014 gets its debt account
    -- here), then the lock and the read run again.
    FOR attempt IN 1 .. 2 LOOP
        WITH w AS MATERIALIZED (
            SELECT DISTINCT o->>'player' AS p, o->>'currency' AS c FROM jsonb_array_elements(ops) o
        ),
        locked AS MATERIALIZED (
            SELECT a.account_id, a.owner, a.kind, a.currency::text AS cur, a.balance
              FROM ledger_accounts a
             WHERE a.owner = ANY (ARRAY(SELECT DISTINCT w.p FROM w))
               AND a.kind IN ('cash', 'pending', 'withdrawal_reserve', 'debt')
             ORDER BY a.account_id FOR UPDATE
        ),
        wallets AS (
            SELECT l.owner, l.cur,
                   max(l.account_id) FILTER (WHERE l.kind = 'cash') AS cash_id,
                   max(l.account_id) FILTER (WHERE l.kind = 'pending') AS pend_id,
                   max(l.account_id) FILTER (WHERE l.kind = 'withdrawal_reserve') AS resv_id,
                   max(l.balance) FILTER (WHERE l.kind = 'cash') AS cash_bal,
                   max(l.balance) FILTER (WHERE l.kind = 'pending') AS pend_bal,
                   max(l.balance) FILTER (WHERE l.kind = 'withdrawal_reserve') AS resv_bal,
                   max(l.balance) FILTER (WHERE l.kind = 'debt') AS debt_bal
              FROM locked l
             WHERE (l.owner, l.cur) IN (SELECT w.p, w.c FROM w)
             GROUP BY l.owner, l.cur
            HAVING count(*) = 4
             ORDER BY l.owner, l.cur
        )
        SELECT (SELECT count(*) FROM w)::int
                 + CASE WHEN (SELECT count(*) FROM (SELECT DISTINCT w.c FROM w) wc
                               WHERE (SELECT h.account_id FROM ledger_accounts h
                                       WHERE h.owner = 'house' AND h.kind = 'house_casino'
                                         AND h.currency = wc.c LIMIT 1) IS NULL) > 0
                        THEN 1 ELSE 0 END,
               array_agg(v.owner), array_agg(v.cash_id), array_agg(v.pend_id),
               array_agg(v.resv_id), array_agg(v.cash_bal), array_agg(v.pend_bal),
               array_agg(v.resv_bal), array_agg(v.debt_bal)
          INTO w_count, g_owner, g_cash, g_pend, g_resv, g_cash_bal, g_pend_bal, g_resv_bal,
               g_debt_bal
          FROM wallets v;
        EXIT WHEN w_count = coalesce(cardinality(g_owner), 0);
        IF attempt = 2 THEN
            RAISE EXCEPTION 'ledger_post: the batch''s accounts could not be created';
        END IF;
        INSERT INTO ledger_accounts (owner, kind, currency, balance)
        SELECT w.p, k2, w.c, 0::numeric
          FROM (SELECT DISTINCT o->>'player' AS p, o->>'currency' AS c
                  FROM jsonb_array_elements(ops) o) w
         CROSS JOIN unnest(ARRAY['cash', 'pending', 'withdrawal_reserve', 'debt']) k2
         WHERE (SELECT a.account_id FROM ledger_accounts a
                 WHERE a.owner = w.p AND a.kind = k2 AND a.currency = w.c LIMIT 1) IS NULL
        UNION ALL
        SELECT 'house', k2, w.c, NULL::numeric
          FROM (SELECT DISTINCT o->>'currency' AS c FROM jsonb_array_elements(ops) o) w
         CROSS JOIN unnest(ARRAY['house_stakes', 'house_payouts', 'house_payments',
                                 'house_casino']) k2
         WHERE (SELECT a.account_id FROM ledger_accounts a
                 WHERE a.owner = 'house' AND a.kind = 'house_casino' AND a.currency = w.c
                 LIMIT 1) IS NULL
        ON CONFLICT DO NOTHING;
    END LOOP;

    -- The fast path, one statement: one row per operation carries its accounts (by its
    -- wallet's position g in the arrays above), its moves and the running balances after
    -- it. A player in debt never takes it: the exact path applies the recovery rule.
    WITH batch AS MATERIALIZED (
        SELECT (t.n - 1)::int AS ord, t.o->>'key' AS key, t.o->>'op' AS op,
               t.o->>'player' AS player, t.o->>'currency' AS cur,
               (t.o->>'amount')::numeric AS amt, t.o->>'hash' AS hash,
               t.o->>'result' AS result, (t.o->>'at')::timestamptz AS at,
               count(*) OVER (PARTITION BY t.o->>'key') = 1
                 AND t.o->>'op' IN ('deposit', 'withdrawal_reserve', 'stake', 'casino_debit',
                                    'casino_credit')
                 AND (SELECT x.txn_id FROM ledger_transactions x
                       WHERE x.idempotency_key = t.o->>'key' LIMIT 1) IS NULL AS simple
          FROM jsonb_array_elements(ops) WITH ORDINALITY AS t(o, n)
    ),
    priced AS (
        SELECT b.*, m.*, h.account_id AS house_id
          FROM batch b
         CROSS JOIN LATERAL (SELECT
               CASE b.op WHEN 'deposit' THEN b.amt WHEN 'casino_credit' THEN b.amt
                         ELSE -b.amt END AS cash_d,
               CASE b.op WHEN 'stake' THEN b.amt ELSE 0 END AS pend_d,
               CASE b.op WHEN 'withdrawal_reserve' THEN b.amt ELSE 0 END AS resv_d,
               CASE b.op WHEN 'deposit' THEN -b.amt WHEN 'casino_debit' THEN b.amt
                         WHEN 'casino_credit' THEN -b.amt ELSE 0 END AS house_d,
               CASE b.op WHEN 'deposit' THEN 'house_payments' ELSE 'house_casino' END
                 AS house_kind) m
          JOIN ledger_accounts h ON h.owner = 'house' AND h.kind = m.house_kind
                                AND h.currency = b.cur
    ),
    running AS (
        -- g: the wallet's position, (player, currency) ranked as the arrays are ordered;
        -- one sort, by (player, currency, ord), serves every window here and below.
        SELECT p.*, dense_rank() OVER (ORDER BY p.player, p.cur)::int AS g,
               sum(p.cash_d) OVER w AS cash_moved,
               sum(p.pend_d) OVER w AS pend_moved,
               sum(p.resv_d) OVER w AS resv_moved,
               lead(p.ord) OVER w IS NULL AS last_of_wallet
          FROM priced p
        WINDOW w AS (PARTITION BY p.player, p.cur ORDER BY p.ord)
    ),
    balanced AS (
        SELECT r.*, g_cash[r.g] AS cash_id, g_pend[r.g] AS pend_id, g_resv[r.g] AS resv_id,
               g_cash_bal[r.g] + r.cash_moved AS cash_after,
               g_pend_bal[r.g] + r.pend_moved AS pending_after,
               g_resv_bal[r.g] + r.resv_moved AS reserve_after,
               r.simple AND g_debt_bal[r.g] >= 0 AS simple_here
          FROM running r
    ),
    checked AS (
        SELECT c.*, bool_and(c.simple_here) OVER pw AS all_simple,
               min(least(c.cash_after, c.pending_after, c.reserve_after)) OVER pw AS low
          FROM balanced c
        WINDOW pw AS (PARTITION BY c.player)
    ),
    fast AS MATERIALIZED (
        SELECT ch.*, nextval(txn_seq) AS txn_id
          FROM checked ch WHERE ch.all_simple AND ch.low >= 0
    ),
    moved AS (
        UPDATE ledger_accounts a SET balance = v.bal
          FROM (SELECT u.id, u.bal
                  FROM fast f
                 CROSS JOIN LATERAL (VALUES (f.cash_id, f.cash_after, g_cash_bal[f.g]),
                                            (f.pend_id, f.pending_after, g_pend_bal[f.g]),
                                            (f.resv_id, f.reserve_after, g_resv_bal[f.g]))
                         u(id, bal, was)
                 WHERE f.last_of_wallet AND u.bal IS DISTINCT FROM u.was) v
         WHERE a.account_id = v.id
    ),
    posted AS (
        INSERT INTO ledger_transactions (txn_id, idempotency_key, operation, player_id, currency,
                amount, result, status, request_hash, cash_after, pending_after, occurred_at)
        SELECT f.txn_id, f.key, f.op, f.player, f.cur, f.amt, f.result, 'applied', f.hash,
               f.cash_after, f.pending_after, f.at
          FROM fast f
    ),
    entries AS (
        INSERT INTO ledger_entries (txn_id, account_id, currency, amount)
        SELECT f.txn_id, l.acct, f.cur, l.amt
          FROM fast f
         CROSS JOIN LATERAL (VALUES (f.cash_id, f.cash_d), (f.pend_id, f.pend_d),
                                    (f.resv_id, f.resv_d), (f.house_id, f.house_d)) l(acct, amt)
         WHERE l.amt <> 0
    )
    SELECT coalesce(array_agg(f.ord), '{}'), array_agg(f.key), array_agg(f.txn_id),
           array_agg(f.cash_after), array_agg(f.pending_after)
      INTO f_ord, f_key, f_txn, f_cash, f_pend
      FROM fast f;

    RETURN QUERY SELECT u.o, u.k, 'applied'::text, NULL::text, false, u.t, u.c, u.p
                   FROM unnest(f_ord, f_key, f_txn, f_cash, f_pend) AS u(o, k, t, c, p);
    IF coalesce(array_length(f_ord, 1), 0) = jsonb_array_length(ops) THEN
        RETURN;
    END IF;

    -- Keys seen before this call (a replay, a producer's retry) are answered in one
    -- statement with their first result, or as a conflict when the request differs: what
    -- the exact path answers for them, which moves nothing. A key the fast path has just
    -- posted is unique in the batch, so every other op found here is a true duplicate.
    SELECT coalesce(array_agg(d.o), '{}'), array_agg(d.k), array_agg(d.s), array_agg(d.r),
           array_agg(d.t), array_agg(d.c), array_agg(d.p)
      INTO d_ord, d_key, d_status, d_reason, d_txn, d_cash, d_pend
      FROM (SELECT (t.n - 1)::int AS o, x.idempotency_key AS k,
                   CASE WHEN x.request_hash <> t.op->>'hash' THEN 'conflict' ELSE x.status END AS s,
                   CASE WHEN x.request_hash <> t.op->>'hash' THEN 'duplicate_conflict'
                        ELSE x.reason END AS r,
                   x.txn_id AS t, x.cash_after AS c, x.pending_after AS p
              FROM jsonb_array_elements(ops) WITH ORDINALITY AS t(op, n)
             CROSS JOIN LATERAL (SELECT y.* FROM ledger_transactions y
                                  WHERE y.idempotency_key = t.op->>'key' LIMIT 1) x
             WHERE (t.n - 1)::int <> ALL (f_ord)) d;
    RETURN QUERY SELECT u.o, u.k, u.s, u.r, true, u.t, u.c, u.p
                   FROM unnest(d_ord, d_key, d_status, d_reason, d_txn, d_cash, d_pend)
                     AS u(o, k, s, r, t, c, p);
    f_ord := f_ord || d_ord;
    IF cardinality(f_ord) = jsonb_array_length(ops) THEN
        RETURN;
    END IF;

    WITH wanted AS (SELECT DISTINCT o->>'player' AS p, o->>'currency' AS c
                      FROM jsonb_array_elements(ops) o)
    SELECT jsonb_object_agg(a.owner || '|' || a.kind || '|' || a.currency, a.account_id)
      INTO ids
      FROM (SELECT a.* FROM ledger_accounts a JOIN wanted w ON a.owner = w.p AND a.currency = w.c
            UNION ALL
            SELECT a.* FROM ledger_accounts a
             WHERE a.owner = 'house' AND a.currency IN (SELECT c FROM wanted)) a;

    FOR op, n IN SELECT t.value, (t.ordinality - 1)::int
                   FROM jsonb_array_elements(ops) WITH ORDINALITY t
                  WHERE (t.ordinality - 1)::int <> ALL (f_ord) LOOP
        k := op->>'key';
        kind := op->>'op';
        player := op->>'player';
        cur := op->>'currency';
        amt := (op->>'amount')::numeric;
        pay := (op->>'payout')::numeric;
        cash_id := (ids->>(player || '|cash|' || cur))::bigint;
        pend_id := (ids->>(player || '|pending|' || cur))::bigint;
        resv_id := (ids->>(player || '|withdrawal_reserve|' || cur))::bigint;
        debt_id := (ids->>(player || '|debt|' || cur))::bigint;
        -- What the player owes now (the debt account's balance is zero or below).
        SELECT -a.balance INTO owed FROM ledger_accounts a WHERE a.account_id = debt_id;

        SELECT * INTO prev FROM ledger_transactions t WHERE t.idempotency_key = k;
        IF FOUND THEN
            IF prev.request_hash <> op->>'hash' THEN
                RETURN QUERY SELECT n, k, 'conflict'::text, 'duplicate_conflict'::text, true,
                                    prev.txn_id, prev.cash_after, prev.pending_after;
            ELSE
                RETURN QUERY SELECT n, k, prev.status, prev.reason, true,
                                    prev.txn_id, prev.cash_after, prev.pending_after;
            END IF;
            CONTINUE;
        END IF;

        why := NULL;
        ref := NULL;
        acct := '{}';
        delta := '{}';
        IF op->>'reference' IS NOT NULL THEN
            SELECT * INTO ref FROM ledger_transactions t WHERE t.idempotency_key = op->>'reference';
            IF NOT FOUND OR ref.status <> 'applied' THEN
                why := 'unknown_reference';
            ELSIF ref.player_id <> player OR ref.currency <> cur THEN
                why := 'reference_mismatch';
            END IF;
        END IF;

        IF why IS NULL THEN
            CASE kind
            WHEN 'deposit' THEN
                rec := least(owed, amt);  -- a debt is paid first
                acct := ARRAY[cash_id, debt_id, (ids->>('house|house_payments|' || cur))::bigint];
                delta := ARRAY[amt - rec, rec, -amt];
            WHEN 'withdrawal_reserve' THEN
                acct := ARRAY[cash_id, resv_id];
                delta := ARRAY[-amt, amt];
            WHEN 'withdrawal_confirm', 'withdrawal_release' THEN
                IF ref.txn_id IS NULL OR ref.operation <> 'withdrawal_reserve' THEN
                    why := 'unknown_reference';
                ELSIF EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.reference_id = ref.txn_id
                                 AND t.status = 'applied'
                                 AND t.operation IN ('withdrawal_confirm', 'withdrawal_release')) THEN
                    why := 'already_closed';
                ELSE
                    amt := ref.amount;
                    IF kind = 'withdrawal_confirm' THEN
                        acct := ARRAY[resv_id, (ids->>('house|house_payments|' || cur))::bigint];
                        delta := ARRAY[-amt, amt];
                    ELSE
                        rec := least(owed, amt);  -- released money pays a debt first
                        acct := ARRAY[resv_id, cash_id, debt_id];
                        delta := ARRAY[-amt, amt - rec, rec];
                    END IF;
                END IF;
            WHEN 'stake' THEN
                acct := ARRAY[cash_id, pend_id];
                delta := ARRAY[-amt, amt];
            WHEN 'settle' THEN
                IF pay IS NULL THEN
                    why := 'invalid';
                ELSIF ref.txn_id IS NULL OR ref.operation <> 'stake' THEN
                    why := 'unknown_reference';
                ELSIF EXISTS (SELECT 1 FROM ledger_transactions s
                               WHERE s.reference_id = ref.txn_id AND s.operation = 'settle'
                                 AND s.status = 'applied'
                                 AND NOT EXISTS (SELECT 1 FROM ledger_transactions u
                                                  WHERE u.reference_id = s.txn_id
                                                    AND u.operation = 'unsettle'
                                                    AND u.status = 'applied')) THEN
                    why := 'already_settled';
                ELSE
                    amt := ref.amount;
                    rec := least(owed, pay);  -- a payout pays a debt first
                    acct := ARRAY[pend_id, (ids->>('house|house_stakes|' || cur))::bigint,
                                  (ids->>('house|house_payouts|' || cur))::bigint, cash_id,
                                  debt_id];
                    delta := ARRAY[-amt, amt, -pay, pay - rec, rec];
                END IF;
            WHEN 'unsettle' THEN
                IF ref.txn_id IS NULL OR ref.operation <> 'settle' THEN
                    why := 'unknown_reference';
                ELSIF EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.reference_id = ref.txn_id
                                 AND t.status = 'applied' AND t.operation = 'unsettle') THEN
                    why := 'already_closed';
                ELSE
                    amt := ref.amount;
                    pay := ref.payout;
                    -- A correction is never refused for want of cash: what the cash cannot
                    -- give back becomes the player's debt.
                    SELECT a.balance INTO take FROM ledger_accounts a WHERE a.account_id = cash_id;
                    take := least(take, pay);
                    acct := ARRAY[cash_id, debt_id, (ids->>('house|house_payouts|' || cur))::bigint,
                                  (ids->>('house|house_stakes|' || cur))::bigint, pend_id];
                    delta := ARRAY[-take, take - pay, pay, -amt, amt];
                END IF;
            WHEN 'casino_debit' THEN
                acct := ARRAY[cash_id, (ids->>('house|house_casino|' || cur))::bigint];
                delta := ARRAY[-amt, amt];
            WHEN 'casino_credit' THEN
                acct := ARRAY[(ids->>('house|house_casino|' || cur))::bigint, cash_id];
                delta := ARRAY[-amt, amt];
            WHEN 'casino_rollback' THEN
                IF ref.txn_id IS NULL OR ref.operation <> 'casino_debit' THEN
                    why := 'unknown_reference';
                ELSIF EXISTS (SELECT 1 FROM ledger_transactions t WHERE t.reference_id = ref.txn_id
                                 AND t.status = 'applied' AND t.operation = 'casino_rollback') THEN
                    why := 'already_closed';
                ELSE
                    amt := ref.amount;
                    acct := ARRAY[(ids->>('house|house_casino|' || cur))::bigint, cash_id];
                    delta := ARRAY[-amt, amt];
                END IF;
            ELSE
                why := 'invalid';
            END CASE;
        END IF;

        -- Move the players' balances, in account order (so concurrent posters lock rows in
        -- one order); a debit that would go below zero (a debt account: above zero) undoes
        -- this operation's earlier moves.
        done_acct := '{}';
        done_delta := '{}';
        IF why IS NULL THEN
            FOR i IN SELECT g FROM generate_subscripts(acct, 1) g ORDER BY acct[g] LOOP
                CONTINUE WHEN delta[i] = 0
                           OR acct[i] NOT IN (cash_id, pend_id, resv_id, debt_id);
                UPDATE ledger_accounts a SET balance = a.balance + delta[i]
                 WHERE a.account_id = acct[i]
                   AND CASE WHEN acct[i] = debt_id THEN a.balance + delta[i] <= 0
                            ELSE a.balance + delta[i] >= 0 END
                RETURNING a.balance INTO new_balance;
                IF NOT FOUND THEN
                    why := CASE WHEN acct[i] = cash_id THEN 'insufficient_funds'
                                ELSE 'inconsistent_balance' END;
                    FOR j IN 1 .. coalesce(array_length(done_acct, 1), 0) LOOP
                        UPDATE ledger_accounts a SET balance = a.balance - done_delta[j]
                         WHERE a.account_id = done_acct[j];
                    END LOOP;
                    EXIT;
                END IF;
                done_acct := done_acct || acct[i];
                done_delta := done_delta || delta[i];
            END LOOP;
        END IF;

        SELECT max(a.balance) FILTER (WHERE a.account_id = cash_id),
               max(a.balance) FILTER (WHERE a.account_id = pend_id)
          INTO c_after, p_after
          FROM ledger_accounts a WHERE a.account_id IN (cash_id, pend_id);

        INSERT INTO ledger_transactions AS t (idempotency_key, operation, player_id, currency,
                amount, payout, result, reference_id, status, reason, request_hash,
                cash_after, pending_after, occurred_at)
        VALUES (k, kind, player, cur, amt, pay, op->>'result', ref.txn_id,
                CASE WHEN why IS NULL THEN 'applied' ELSE 'rejected' END, why, op->>'hash',
                c_after, p_after, (op->>'at')::timestamptz)
        RETURNING t.txn_id INTO new_txn;

        IF why IS NULL THEN
            FOR i IN 1 .. coalesce(array_length(acct, 1), 0) LOOP
                CONTINUE WHEN delta[i] = 0;
                e_txn := e_txn || new_txn;
                e_acct := e_acct || acct[i];
                e_cur := e_cur || cur;
                e_amt := e_amt || delta[i];
            END LOOP;
        END IF;
        RETURN QUERY SELECT n, k, CASE WHEN why IS NULL THEN 'applied' ELSE 'rejected' END, why,
                            false, new_txn, c_after, p_after;
    END LOOP;

    -- All entries of the batch in one statement: the balance trigger checks them once.
    INSERT INTO ledger_entries (txn_id, account_id, currency, amount)
    SELECT * FROM unnest(e_txn, e_acct, e_cur, e_amt);
END $$;

-- bets_record (0026), the stake's probe by key.
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
          LEFT JOIN LATERAL (SELECT x.txn_id, x.operation, x.player_id, x.currency, x.amount
                               FROM ledger_transactions x
                              WHERE x.idempotency_key = 'bet:' || b.bet_id
                                AND x.status = 'applied' LIMIT 1) t ON true
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
DECLARE
    s text := current_schema();
BEGIN
    -- CREATE OR REPLACE keeps a function's owner and grants, not its other properties.
    EXECUTE format('ALTER FUNCTION ledger_post(jsonb) SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', s);
    ALTER FUNCTION ledger_post(jsonb) SET enable_seqscan = off;
    EXECUTE format('ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', s);
    ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SET plan_cache_mode = force_custom_plan;
    ALTER FUNCTION bets_record(jsonb, jsonb, jsonb) SET enable_seqscan = off;
END $$;
