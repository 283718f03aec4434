-- The HTTP gateway's own state, shared by every gateway process and kept across restarts:
--
--   gateway_tickets         which front end's API key (by its name) posted which bet id,
--       for which player. Written BEFORE the bet goes to Kafka; the first key to post a
--       bet id holds it for good. GET /bets/{id} and the SSE stream answer only its holder.
--   gateway_webhooks_seen   the payment webhooks' (provider, signature) pairs seen, with the
--       webhook's own timestamp: a signature seen again is a replay, whichever gateway
--       process gets it and however often they restarted. Rows whose timestamp is more
--       than two hours old are pruned now and then (the replay window is at most one hour,
--       so no gateway could accept such a signature anyway).
--   gateway_tokens          Hub88 session tokens the operator issued to a player
--       (`croupier gateway token issue PLAYER`): SHA-256 of the token (256 random bits),
--       the player and the expiry.
--
-- croupier_gateway, a role nobody logs in as, owns the three tables. The application keeps
-- SELECT on them and writes them only through these SECURITY DEFINER functions (search_path
-- fixed to this schema); it can neither update nor delete a row:
--
--   gateway_tickets_claim(claims)  claims bet ids ([[bet_id, key_name, player_id], ...],
--       many posts in one call) and returns each id's holder (bet_id, key_name, player_id):
--       the caller's own when the id was free or already its. Inserted in bet id order, so
--       two gateways' batches never deadlock.
--   gateway_seen(provider, signature, stamped_at) records a webhook signature; false when it
--       was there already (a replay).
--   gateway_token_issue(token_hash, player_id, expires_at) stores an issued token.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'croupier_gateway') THEN
        CREATE ROLE croupier_gateway NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN NULL;  -- another database's migrator made it first
END $$;

CREATE TABLE gateway_tickets (
    bet_id text PRIMARY KEY CHECK (char_length(bet_id) BETWEEN 1 AND 128),
    key_name text NOT NULL CHECK (char_length(key_name) BETWEEN 1 AND 64),
    player_id text NOT NULL CHECK (char_length(player_id) BETWEEN 1 AND 128),
    posted_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gateway_webhooks_seen (
    provider text NOT NULL CHECK (char_length(provider) BETWEEN 1 AND 64),
    signature text NOT NULL CHECK (signature ~ '^[0-9a-f]{64}$'),
    stamped_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, signature)
);
CREATE INDEX gateway_webhooks_seen_stamped ON gateway_webhooks_seen (stamped_at);

CREATE TABLE gateway_tokens (
    token_hash text PRIMARY KEY CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    player_id text NOT NULL CHECK (char_length(player_id) BETWEEN 1 AND 128),
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE FUNCTION gateway_tickets_claim(claims jsonb)
RETURNS TABLE (bet text, holder text, holder_player text)
LANGUAGE sql AS $$
    INSERT INTO gateway_tickets (bet_id, key_name, player_id)
    SELECT r->>0, r->>1, r->>2 FROM jsonb_array_elements(claims) AS r ORDER BY r->>0
    ON CONFLICT (bet_id) DO NOTHING;
    SELECT t.bet_id, t.key_name, t.player_id FROM gateway_tickets t
     WHERE t.bet_id IN (SELECT r->>0 FROM jsonb_array_elements(claims) AS r);
$$;

CREATE FUNCTION gateway_seen(source text, sig text, stamped timestamptz)
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF random() < 0.01 THEN  -- now and then: what no gateway could accept again
        DELETE FROM gateway_webhooks_seen WHERE stamped_at < now() - interval '2 hours';
    END IF;
    INSERT INTO gateway_webhooks_seen (provider, signature, stamped_at)
    VALUES (source, sig, stamped)
    ON CONFLICT (provider, signature) DO NOTHING;
    RETURN FOUND;
END $$;

CREATE FUNCTION gateway_token_issue(digest text, player text, expires timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF expires <= now() OR expires > now() + interval '30 days' THEN
        RAISE EXCEPTION 'a token expires after now and within 30 days'
              USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO gateway_tokens (token_hash, player_id, expires_at) VALUES (digest, player, expires);
END $$;

DO $$
DECLARE
    s text := current_schema();
    t text;
    f text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT croupier_gateway TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO croupier_gateway', s);
    FOREACH t IN ARRAY ARRAY['gateway_tickets', 'gateway_webhooks_seen', 'gateway_tokens'] LOOP
        EXECUTE format('ALTER TABLE %I OWNER TO croupier_gateway', t);
    END LOOP;
    FOREACH f IN ARRAY ARRAY['gateway_tickets_claim(jsonb)',
                             'gateway_seen(text, text, timestamptz)',
                             'gateway_token_issue(text, text, timestamptz)'] LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO croupier_gateway', f);
        EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER '
                       'SET search_path = pg_catalog, %I, pg_temp', f, s);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM croupier_gateway', s);
END $$;
