-- Foundation: players' standing, decided player events, and dead letters.
-- Every consumed message leaves exactly one row, in player_events (decided) or in
-- dead_letters (refused), keyed by its Kafka position: that key makes a redelivery a no-op.

CREATE TABLE players (
    player_id      text PRIMARY KEY,
    jurisdiction   text NOT NULL,
    currency       char(3) NOT NULL,
    birth_date     date NOT NULL,
    registered_at  timestamptz NOT NULL,
    version        bigint NOT NULL CHECK (version >= 1),
    last_event     text NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- The Kafka position of the last event applied: with it, this row is a complete
    -- standing that a worker can trust over its table after a crash.
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL
);

CREATE TABLE player_events (
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    player_id         text NOT NULL,
    event_type        text NOT NULL,
    occurred_at       timestamptz NOT NULL,
    outcome           text NOT NULL CHECK (outcome IN ('applied', 'unchanged')),
    payload           jsonb NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);
CREATE INDEX player_events_player ON player_events (player_id, occurred_at);

CREATE TABLE dead_letters (
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    key               bytea,
    value             bytea NOT NULL,
    reason            text NOT NULL,
    error             text NOT NULL,
    dead_lettered_at  timestamptz NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- Both logs are append-only: a correction is a new row, never an edit.
CREATE FUNCTION forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER player_events_append_only BEFORE UPDATE OR DELETE ON player_events
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER dead_letters_append_only BEFORE UPDATE OR DELETE ON dead_letters
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
