-- How far each consumer group has processed each partition, written in the same
-- transaction as the rows it processed. Kafka's committed offsets are a hint; this is the
-- truth: an agent that finds a partition's offsets starting past it reads the skipped
-- messages back from the topic before going on.
CREATE TABLE consumer_progress (
    consumer_group  text NOT NULL,
    topic           text NOT NULL,
    partition       integer NOT NULL,
    next_offset     bigint NOT NULL CHECK (next_offset >= 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
