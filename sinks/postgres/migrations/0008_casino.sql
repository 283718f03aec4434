-- The casino seamless wallet (sinks/postgres/casino.py, rules/casino.py). Money moves in the
-- ledger under `casino:<transaction_id>`; these tables hold what the aggregator protocol
-- needs on top: the first answer to every transaction id, the rounds, and every call's
-- answer by source position (a replay publishes the same bytes).

-- Every transaction id Croupier answered, with its first answer: a retry gets it again.
-- A rollback of an id never seen is stored too (moved = false): the late debit is refused.
CREATE TABLE casino_transactions (
    transaction_id    text PRIMARY KEY,
    type              text NOT NULL CHECK (type IN ('debit', 'credit', 'rollback')),
    player_id         text NOT NULL,
    round_id          text NOT NULL,
    game_id           text NOT NULL,
    amount            numeric NOT NULL CHECK (amount >= 0),
    currency          char(3) NOT NULL,
    reference_id      text,                       -- a rollback's debit
    request_hash      text NOT NULL,
    status            text NOT NULL CHECK (status IN ('ok', 'rejected')),
    error             text,
    moved             boolean NOT NULL,           -- whether the ledger moved money for it
    rng_build         text,                       -- Croupier's own games: the RNG build used
    answer            text NOT NULL,              -- the JSON published on casino-results
    decided_at        timestamptz NOT NULL,
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    CHECK ((status = 'rejected') = (error IS NOT NULL)),
    CHECK ((type = 'rollback') = (reference_id IS NOT NULL)),
    CHECK (NOT moved OR status = 'ok')
);
CREATE INDEX casino_transactions_reference ON casino_transactions (reference_id)
    WHERE reference_id IS NOT NULL;
CREATE INDEX casino_transactions_round ON casino_transactions (round_id);
CREATE TRIGGER casino_transactions_append_only BEFORE UPDATE OR DELETE ON casino_transactions
    FOR EACH ROW EXECUTE FUNCTION forbid_change();

-- A round starts with its first accepted debit; a credit marks it credited, and one with
-- round_closed closes it. Those two only ever go from null to a time (trigger below).
CREATE TABLE casino_rounds (
    round_id     text PRIMARY KEY,
    player_id    text NOT NULL,
    game_id      text NOT NULL,
    currency     char(3) NOT NULL,
    opened_at    timestamptz NOT NULL,
    credited_at  timestamptz,
    closed_at    timestamptz,
    CHECK (closed_at IS NULL OR credited_at IS NOT NULL)
);
CREATE INDEX casino_rounds_player ON casino_rounds (player_id, opened_at);

CREATE FUNCTION casino_rounds_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'casino_rounds rows are never deleted';
    END IF;
    IF (NEW.round_id, NEW.player_id, NEW.game_id, NEW.currency, NEW.opened_at)
         IS DISTINCT FROM (OLD.round_id, OLD.player_id, OLD.game_id, OLD.currency, OLD.opened_at)
       OR (OLD.credited_at IS NOT NULL AND NEW.credited_at IS DISTINCT FROM OLD.credited_at)
       OR (OLD.closed_at IS NOT NULL AND NEW.closed_at IS DISTINCT FROM OLD.closed_at) THEN
        RAISE EXCEPTION 'casino round % can only be credited and closed, once', OLD.round_id;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER casino_rounds_forward BEFORE UPDATE OR DELETE ON casino_rounds
    FOR EACH ROW EXECUTE FUNCTION casino_rounds_forward_only();

-- Every call at its source position, with the answer published for it (a retry's answer
-- is its first answer; a conflict's is its own refusal).
CREATE TABLE casino_calls (
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    transaction_id    text NOT NULL,
    player_id         text NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('decided', 'duplicate', 'conflict')),
    answer            text NOT NULL,
    standing_version  bigint,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE TRIGGER casino_calls_append_only BEFORE UPDATE OR DELETE ON casino_calls
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
