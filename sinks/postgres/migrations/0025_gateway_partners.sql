-- The gateway's partners scoped, its tokens revocable, its state pruned (issue 19):
--
--   gateway_tokens          gains `partner`: a session token is issued FOR one aggregator
--       (`croupier gateway token issue PLAYER --partner NAME`) and only that partner's
--       signed calls may use it. Tokens issued before this migration have no partner ('')
--       and are refused by every partner: issue them again.
--   gateway_transactions    which partner (by its key's name) first sent which casino
--       transaction id, for which player and round. Claimed BEFORE the call goes to Kafka;
--       another partner's call with that id, in a round another partner opened, or naming
--       a debit another partner sent, is refused (croupier/gateway/scoping.py).
--
-- New functions, owned by croupier_gateway, SECURITY DEFINER (search_path fixed):
--
--   gateway_transactions_claim(claims)  claims [[transaction_id, partner, player_id,
--       round_id, reference_id], ...] (many calls in one) and returns, per claim (its
--       ordinal, from 1), its transaction's holder, the partner that opened its round (the
--       earliest claim in that round), the holder of the transaction it references
--       (null when none is known), and whether this call inserted the claim (`fresh`: the
--       gateway then knows no earlier call of that id came through it, and publishes
--       without first reading the casino flow's store).
--   gateway_token_issue(token_hash, player_id, expires_at, partner)  replaces the
--       three-argument function of 0023.
--   gateway_token_revoke(token_hash, player_id)  deletes one token, or every token of a
--       player; returns how many.
--   gateway_prune(keep)  deletes what no one needs any more and returns the counts:
--       tickets posted more than `keep` ago whose bet is decided (a row in `bets`), and
--       those older than 30 days (or `keep`, when longer) that never were (a crash between
--       the claim and Kafka); transaction claims older than `keep`; tokens expired more
--       than `keep` ago; webhook signatures stamped more than two hours ago (the replay
--       window is at most one hour, so no gateway could accept them again). `keep` is at
--       least one day: the application cannot wipe the gateway's state at once.
--
-- croupier_gateway gets SELECT on `bets` (which tickets are decided) and nothing else.

ALTER TABLE gateway_tokens ADD COLUMN partner text NOT NULL DEFAULT ''
    CHECK (char_length(partner) <= 64);
ALTER TABLE gateway_tokens ALTER COLUMN partner DROP DEFAULT;
CREATE INDEX gateway_tokens_player ON gateway_tokens (player_id);
CREATE INDEX gateway_tokens_expires ON gateway_tokens (expires_at);
CREATE INDEX gateway_tickets_posted ON gateway_tickets (posted_at);

CREATE TABLE gateway_transactions (
    transaction_id text PRIMARY KEY CHECK (char_length(transaction_id) BETWEEN 1 AND 128),
    partner text NOT NULL CHECK (char_length(partner) BETWEEN 1 AND 64),
    player_id text NOT NULL CHECK (char_length(player_id) BETWEEN 1 AND 128),
    round_id text NOT NULL CHECK (char_length(round_id) BETWEEN 1 AND 128),
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX gateway_transactions_round ON gateway_transactions (round_id, claimed_at);
CREATE INDEX gateway_transactions_claimed ON gateway_transactions (claimed_at);

CREATE FUNCTION gateway_transactions_claim(claims jsonb)
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
           (SELECT f.partner FROM gateway_transactions f WHERE f.transaction_id = r.c->>4),
           t.transaction_id = ANY(inserted) AND t.partner = r.c->>1
      FROM jsonb_array_elements(claims) WITH ORDINALITY AS r(c, i)
      JOIN gateway_transactions t ON t.transaction_id = r.c->>0;
END $$;

DROP FUNCTION gateway_token_issue(text, text, timestamptz);

CREATE FUNCTION gateway_token_issue(digest text, player text, expires timestamptz, issued_for text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF expires <= now() OR expires > now() + interval '30 days' THEN
        RAISE EXCEPTION 'a token expires after now and within 30 days'
              USING ERRCODE = 'check_violation';
    END IF;
    IF issued_for IS NULL OR issued_for !~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$' THEN
        RAISE EXCEPTION 'a token is issued for a partner (letters, digits, ".", "_", "-")'
              USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO gateway_tokens (token_hash, player_id, expires_at, partner)
    VALUES (digest, player, expires, issued_for);
END $$;

CREATE FUNCTION gateway_token_revoke(digest text, player text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    DELETE FROM gateway_tokens WHERE token_hash = digest OR player_id = player;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

CREATE FUNCTION gateway_prune(keep interval)
RETURNS TABLE (tickets bigint, transactions bigint, tokens bigint, webhooks bigint)
LANGUAGE plpgsql AS $$
DECLARE
    horizon timestamptz := now() - keep;
BEGIN
    IF keep IS NULL OR keep < interval '1 day' THEN
        RAISE EXCEPTION 'the gateway keeps its state at least a day'
              USING ERRCODE = 'check_violation';
    END IF;
    DELETE FROM gateway_tickets t
     WHERE t.posted_at < horizon
       AND (EXISTS (SELECT FROM bets b WHERE b.bet_id = t.bet_id)
            OR t.posted_at < now() - greatest(keep, interval '30 days'));
    GET DIAGNOSTICS tickets = ROW_COUNT;
    DELETE FROM gateway_transactions WHERE claimed_at < horizon;
    GET DIAGNOSTICS transactions = ROW_COUNT;
    DELETE FROM gateway_tokens WHERE expires_at < horizon;
    GET DIAGNOSTICS tokens = ROW_COUNT;
    DELETE FROM gateway_webhooks_seen WHERE stamped_at < now() - interval '2 hours';
    GET DIAGNOSTICS webhooks = ROW_COUNT;
    RETURN NEXT;
END $$;

DO $$
DECLARE
    s text := current_schema();
    f text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT croupier_gateway TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO croupier_gateway', s);
    ALTER TABLE gateway_transactions OWNER TO croupier_gateway;
    GRANT SELECT ON bets TO croupier_gateway;
    FOREACH f IN ARRAY ARRAY['gateway_transactions_claim(jsonb)',
                             'gateway_token_issue(text, text, timestamptz, text)',
                             'gateway_token_revoke(text, text)',
                             'gateway_prune(interval)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO croupier_gateway', f);
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                       'SET search_path = pg_catalog, %I, pg_temp', f, s);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM croupier_gateway', s);
END $$;
