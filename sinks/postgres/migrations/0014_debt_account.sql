-- The debt account: corrections always land.
--
-- A settlement's rollback (``unsettle``) takes the payout back from the player's cash. When
-- the player has spent it, the part the cash cannot give back becomes the player's debt on
-- an account of its own, kind `debt` per player and currency: the house's receivable from
-- that player. Its entries are signed like every other entry (the rollback's shortfall is
-- a negative entry), so its balance, the sum of its entries, is zero or below: what the
-- player owes, negated. Cash never goes below zero; the books stay balanced.
--
-- Recovery, house-wide: money that comes back to the player's cash pays the debt first,
-- in the same ledger transaction: a deposit, a sportsbook payout (a win, a void's returned
-- stake, a dead heat's share) and a released withdrawal. Casino credits and rollbacks do
-- not: the casino rules answer the aggregator with the balance they foresee.
--
-- ledger_post() is replaced with the same signature and results; what changed:
--  * every wallet has a `debt` account (created with the others, backfilled below);
--  * `unsettle` is never refused for want of cash (the shortfall goes to debt);
--  * `deposit`, `settle` and `withdrawal_release` pay a debt down first;
--  * a player in debt takes the exact path, which knows the rule above.

ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('cash', 'pending', 'withdrawal_reserve', 'debt', 'house_stakes',
                    'house_payouts', 'house_payments', 'house_casino'));
-- A debt account holds zero or less (what the player owes, negated); every other stored
-- balance zero or more.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_balance_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_balance_check
    CHECK (CASE WHEN kind = 'debt' THEN balance <= 0 ELSE balance >= 0 END);

-- Every wallet opened before this migration gets its debt account, empty.
INSERT INTO ledger_accounts (owner, kind, currency, balance)
SELECT owner, 'debt', currency, 0 FROM ledger_accounts WHERE kind = 'cash'
ON CONFLICT DO NOTHING;

-- Post a batch of operations, each all-or-nothing and idempotent by key, in one call: see
-- 0002_ledger.sql for the contract (unchanged) and the two paths.
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
BEGIN
    PERFORM set_config('croupier.ledger_posting', 'on', true);

    -- Every account the batch may touch exists (players' four, the house's four per
    -- currency); only the missing ones are inserted (a wallet opened before 0014 gets its
    -- debt account here if the migration's backfill missed it).
    INSERT INTO ledger_accounts (owner, kind, currency, balance)
    SELECT w.p, k2, w.c, 0::numeric
      FROM (SELECT DISTINCT o->>'player' AS p, o->>'currency' AS c
              FROM jsonb_array_elements(ops) o) w
     CROSS JOIN unnest(ARRAY['cash', 'pending', 'withdrawal_reserve', 'debt']) k2
     WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a
                        WHERE a.owner = w.p AND a.kind = 'debt' AND a.currency = w.c)
    UNION ALL
    SELECT 'house', k2, w.c, NULL::numeric
      FROM (SELECT DISTINCT o->>'currency' AS c FROM jsonb_array_elements(ops) o) w
     CROSS JOIN unnest(ARRAY['house_stakes', 'house_payouts', 'house_payments',
                             'house_casino']) k2
     WHERE NOT EXISTS (SELECT 1 FROM ledger_accounts a
                        WHERE a.owner = 'house' AND a.kind = 'house_casino' AND a.currency = w.c)
    ON CONFLICT DO NOTHING;

    -- Lock the batch's player accounts in one order, so concurrent batches cannot deadlock
    -- on them and every balance read below is current.
    PERFORM 1 FROM ledger_accounts a
      WHERE a.owner = ANY (ARRAY(SELECT DISTINCT o->>'player' FROM jsonb_array_elements(ops) o))
        AND a.kind IN ('cash', 'pending', 'withdrawal_reserve', 'debt')
      ORDER BY a.account_id FOR UPDATE;

    -- The fast path, one statement: one row per operation carries its accounts, its moves
    -- and the running balances after it; no join between intermediate results. A player in
    -- debt never takes it: the exact path applies the recovery rule (debt is rare).
    WITH batch AS MATERIALIZED (
        SELECT (t.n - 1)::int AS ord, t.o->>'key' AS key, t.o->>'op' AS op,
               t.o->>'player' AS player, t.o->>'currency' AS cur,
               (t.o->>'amount')::numeric AS amt, t.o->>'hash' AS hash,
               t.o->>'result' AS result, (t.o->>'at')::timestamptz AS at,
               count(*) OVER (PARTITION BY t.o->>'key') = 1
                 AND t.o->>'op' IN ('deposit', 'withdrawal_reserve', 'stake', 'casino_debit',
                                    'casino_credit')
                 AND NOT EXISTS (SELECT 1 FROM ledger_transactions x
                                  WHERE x.idempotency_key = t.o->>'key')
                 AND NOT EXISTS (SELECT 1 FROM ledger_accounts d
                                  WHERE d.owner = t.o->>'player' AND d.kind = 'debt'
                                    AND d.currency = t.o->>'currency' AND d.balance < 0)
                   AS simple
          FROM jsonb_array_elements(ops) WITH ORDINALITY AS t(o, n)
    ),
    moves AS MATERIALIZED (
        SELECT b.*,
               CASE b.op WHEN 'deposit' THEN b.amt WHEN 'casino_credit' THEN b.amt
                         ELSE -b.amt END AS cash_d,
               CASE b.op WHEN 'stake' THEN b.amt ELSE 0 END AS pend_d,
               CASE b.op WHEN 'withdrawal_reserve' THEN b.amt ELSE 0 END AS resv_d,
               CASE b.op WHEN 'deposit' THEN -b.amt WHEN 'casino_debit' THEN b.amt
                         WHEN 'casino_credit' THEN -b.amt ELSE 0 END AS house_d,
               CASE b.op WHEN 'deposit' THEN 'house_payments' ELSE 'house_casino' END AS house_kind
          FROM batch b
    ),
    priced AS MATERIALIZED (
        SELECT m.*, c.account_id AS cash_id, p.account_id AS pend_id, r.account_id AS resv_id,
               h.account_id AS house_id,
               c.balance + sum(m.cash_d) OVER w AS cash_after,
               p.balance + sum(m.pend_d) OVER w AS pending_after,
               r.balance + sum(m.resv_d) OVER w AS reserve_after,
               bool_and(m.simple) OVER (PARTITION BY m.player) AS all_simple
          FROM moves m
          JOIN ledger_accounts c ON c.owner = m.player AND c.kind = 'cash' AND c.currency = m.cur
          JOIN ledger_accounts p ON p.owner = m.player AND p.kind = 'pending' AND p.currency = m.cur
          JOIN ledger_accounts r
            ON r.owner = m.player AND r.kind = 'withdrawal_reserve' AND r.currency = m.cur
          JOIN ledger_accounts h ON h.owner = 'house' AND h.kind = m.house_kind AND h.currency = m.cur
        WINDOW w AS (PARTITION BY m.player, m.cur ORDER BY m.ord)
    ),
    checked AS (
        SELECT pr.*, min(least(pr.cash_after, pr.pending_after, pr.reserve_after))
                       OVER (PARTITION BY pr.player) AS low
          FROM priced pr
    ),
    fast AS MATERIALIZED (
        SELECT ch.*, nextval(pg_get_serial_sequence('ledger_transactions', 'txn_id')) AS txn_id
          FROM checked ch WHERE ch.all_simple AND ch.low >= 0
    ),
    moved AS (
        UPDATE ledger_accounts a SET balance = v.bal
          FROM (SELECT unnest(ARRAY[f.cash_id, f.pend_id, f.resv_id]) AS id,
                       unnest(ARRAY[f.cash_after, f.pending_after, f.reserve_after]) AS bal
                  FROM (SELECT DISTINCT ON (f0.player, f0.cur) f0.*
                          FROM fast f0 ORDER BY f0.player, f0.cur, f0.ord DESC) f) v
         WHERE a.account_id = v.id AND a.balance IS DISTINCT FROM v.bal
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
    SELECT coalesce(array_agg(f.ord ORDER BY f.ord), '{}'), array_agg(f.key ORDER BY f.ord),
           array_agg(f.txn_id ORDER BY f.ord), array_agg(f.cash_after ORDER BY f.ord),
           array_agg(f.pending_after ORDER BY f.ord)
      INTO f_ord, f_key, f_txn, f_cash, f_pend
      FROM fast f;

    RETURN QUERY SELECT u.o, u.k, 'applied'::text, NULL::text, false, u.t, u.c, u.p
                   FROM unnest(f_ord, f_key, f_txn, f_cash, f_pend) AS u(o, k, t, c, p);
    IF coalesce(array_length(f_ord, 1), 0) = jsonb_array_length(ops) THEN
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
