-- Player protection: the whole standing (exclusion, limits, open session, geolocation) in
-- PostgreSQL, every session's span (session-time limits count them), the reality checks
-- sent, and the index that lets a decision sum a player's recent ledger activity.

-- The full standing, as rules.compliance judges it (schemas/players.py PlayerState). The
-- columns of 0001 stay as they were (queries use them); the JSON is the whole truth.
ALTER TABLE players ADD COLUMN standing jsonb;
UPDATE players SET standing = jsonb_build_object(
    'player_id', player_id, 'jurisdiction', jurisdiction, 'currency', currency,
    'birth_date', birth_date, 'registered_at', registered_at, 'version', version,
    'last_event', last_event, 'updated_at', updated_at,
    'source_partition', source_partition, 'source_offset', source_offset);
ALTER TABLE players ALTER COLUMN standing SET NOT NULL;

-- Every session a player opened; ended_at is null while it is open. A session id the
-- front end reuses later is another session (another start).
CREATE TABLE player_sessions (
    player_id   text NOT NULL,
    session_id  text NOT NULL,
    started_at  timestamptz NOT NULL,
    ip          text,
    ended_at    timestamptz,
    end_reason  text CHECK (end_reason IN ('player', 'session_limit', 'replaced')),
    PRIMARY KEY (player_id, session_id, started_at),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);
CREATE INDEX player_sessions_open ON player_sessions (started_at) WHERE ended_at IS NULL;

-- Every reality check sent, one per session and interval: a repeat is refused here.
CREATE TABLE reality_checks (
    player_id        text NOT NULL,
    session_id       text NOT NULL,
    started_at       timestamptz NOT NULL,            -- the session's start
    sequence         integer NOT NULL CHECK (sequence >= 1),
    elapsed_seconds  integer NOT NULL,
    net_position     numeric NOT NULL,
    currency         char(3) NOT NULL,
    message          text NOT NULL,                   -- the JSON published
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (player_id, session_id, started_at, sequence)
);
CREATE TRIGGER reality_checks_append_only BEFORE UPDATE OR DELETE ON reality_checks
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- A decision records the standing version it was judged against (audit, and the proof
-- that no decision after an exclusion saw an older standing).
ALTER TABLE bets ADD COLUMN standing_version bigint;
ALTER TABLE payment_events ADD COLUMN standing_version bigint;

-- Limits sum a player's applied operations of the last month.
CREATE INDEX ledger_transactions_player_time ON ledger_transactions (player_id, occurred_at)
    WHERE status = 'applied';
