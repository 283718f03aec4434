-- The sportsbook and payments flows: the bet book, settlement state per market, every
-- settlement published, and each payment input's decision. Money itself moves only in the
-- ledger (0002); these tables say which bet or payment it moved for.

-- One row per decided bet id (accepted or rejected), with the exact decision published.
CREATE TABLE bets (
    bet_id           text PRIMARY KEY,
    player_id        text NOT NULL,
    currency         char(3) NOT NULL,
    stake            numeric NOT NULL CHECK (stake > 0),
    odds             numeric CHECK (odds > 1),        -- the accepted price (legs multiplied)
    placed_at        timestamptz NOT NULL,
    status           text NOT NULL CHECK (status IN ('rejected', 'open', 'settled')),
    reason           text,
    request_hash     text NOT NULL,
    request          jsonb NOT NULL,                  -- the bet as received
    decision         text NOT NULL,                   -- the JSON published on bet-decisions
    decided_at       timestamptz NOT NULL,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    -- the settlement in force (null while open or after a rollback)
    settlement_id    text,
    result           text,
    payout           numeric CHECK (payout >= 0),
    settle_seq       integer NOT NULL DEFAULT 0,      -- settlements and rollbacks so far
    UNIQUE (source_topic, source_partition, source_offset),
    CHECK ((status = 'rejected') = (reason IS NOT NULL)),
    CHECK ((status = 'rejected') = (odds IS NULL)),
    CHECK ((status = 'settled') = (settlement_id IS NOT NULL))
);
CREATE INDEX bets_player ON bets (player_id, placed_at);

-- The legs of accepted bets: the price taken, and the result once the market resolves.
CREATE TABLE bet_legs (
    bet_id           text NOT NULL REFERENCES bets,
    leg              integer NOT NULL,
    event_id         text NOT NULL,
    market_id        text NOT NULL,
    outcome_id       text NOT NULL,
    odds             numeric NOT NULL CHECK (odds > 1),
    placed_at        timestamptz NOT NULL,
    result           text CHECK (result IN ('win', 'lose', 'void', 'half_win', 'half_lose')),
    dead_heat_factor numeric,
    cancelled        boolean NOT NULL DEFAULT false,  -- voided by a bet_cancel
    PRIMARY KEY (bet_id, leg)
);
CREATE INDEX bet_legs_market ON bet_legs (event_id, market_id);

-- A market's settlement state. Settlement messages apply in feed-time order: one older
-- than the last applied, or a repeat of it, changes nothing.
CREATE TABLE market_states (
    event_id     text NOT NULL,
    market_id    text NOT NULL,
    results      jsonb,                               -- {outcome: {result, dead_heat_factor}}
    cancelled    boolean NOT NULL DEFAULT false,      -- the whole market is cancelled
    generation   integer NOT NULL,                    -- settlement messages applied
    last_at      timestamptz NOT NULL,
    last_type    text NOT NULL,
    PRIMARY KEY (event_id, market_id)
);

-- Every settlement-kind odds message processed (append-only): the replay's input.
CREATE TABLE market_messages (
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    event_id         text NOT NULL,
    type             text NOT NULL,
    payload          jsonb NOT NULL,
    changed          jsonb NOT NULL,                  -- {market_id: new table status}
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE INDEX market_messages_event ON market_messages (event_id);

-- Every settlement, resettlement, void and rollback published (append-only).
CREATE TABLE settlements (
    settlement_id    text PRIMARY KEY,                -- <bet_id>/<n>; ledger key settlement:<id>
    bet_id           text NOT NULL REFERENCES bets,
    player_id        text NOT NULL,
    kind             text NOT NULL,
    result           text,
    payout           numeric NOT NULL,
    message          text NOT NULL,                   -- the JSON published on settlements
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX settlements_source ON settlements (source_topic, source_partition, source_offset);
CREATE INDEX settlements_bet ON settlements (bet_id);

-- Each payments input's outcome: a decision (published) or a producer's retry of a
-- payment already decided (nothing published again).
CREATE TABLE payment_events (
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    payment_id       text NOT NULL,
    player_id        text NOT NULL,
    type             text NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('decided', 'duplicate')),
    decision         text,                            -- the JSON published, when decided
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset),
    CHECK ((outcome = 'decided') = (decision IS NOT NULL))
);
CREATE INDEX payment_events_payment ON payment_events (payment_id);

-- Inputs on the bets topic that repeat a bet id already decided (producer retries).
CREATE TABLE bet_duplicates (
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    bet_id           text NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

CREATE TRIGGER market_messages_append_only BEFORE UPDATE OR DELETE ON market_messages
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER settlements_append_only BEFORE UPDATE OR DELETE ON settlements
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER payment_events_append_only BEFORE UPDATE OR DELETE ON payment_events
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER bet_duplicates_append_only BEFORE UPDATE OR DELETE ON bet_duplicates
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
