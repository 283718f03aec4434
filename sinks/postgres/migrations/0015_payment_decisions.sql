-- Every payment decision keyed by its business id (rules/payments.py): a payment id's open
-- (deposit or withdrawal request) and its close (a withdrawal's completed or failed), each
-- decided once, refused or not. A retry of the same content is answered the stored
-- decision; other content is a dead letter (duplicate_conflict). Answers that must not
-- stick (retry_later: a close before its request) are stored only by position.
CREATE TABLE payment_decisions (
    payment_id        text NOT NULL,
    phase             text NOT NULL CHECK (phase IN ('open', 'close')),
    type              text NOT NULL,
    player_id         text NOT NULL,
    request_hash      text,                       -- NULL only for decisions from before 0015
    status            text NOT NULL CHECK (status IN ('accepted', 'rejected')),
    reason            text,
    currency          char(3),                    -- an open's currency
    decision          text NOT NULL,              -- the JSON published on payment-decisions
    decided_at        timestamptz NOT NULL,
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    PRIMARY KEY (payment_id, phase),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);
CREATE TRIGGER payment_decisions_append_only BEFORE UPDATE OR DELETE ON payment_decisions
    FOR EACH ROW EXECUTE FUNCTION forbid_change();
CREATE TRIGGER payment_decisions_no_truncate BEFORE TRUNCATE ON payment_decisions
    FOR EACH STATEMENT EXECUTE FUNCTION forbid_change();

-- The decisions taken before: their first decided position per phase (a refused close is
-- left out: before 0015 a close ahead of its request was refused for good, now it may be
-- decided again).
INSERT INTO payment_decisions (payment_id, phase, type, player_id, request_hash, status,
                               reason, currency, decision, decided_at, source_topic,
                               source_partition, source_offset)
SELECT DISTINCT ON (e.payment_id, p.phase)
       e.payment_id, p.phase, e.type, e.player_id, NULL, d->>'status', d->>'reason', NULL,
       e.decision, e.recorded_at, e.source_topic, e.source_partition, e.source_offset
  FROM payment_events e
 CROSS JOIN LATERAL (SELECT CASE WHEN e.type IN ('deposit', 'withdrawal') THEN 'open'
                                 ELSE 'close' END AS phase,
                            e.decision::jsonb AS d) p
 WHERE e.outcome = 'decided'
   AND NOT (p.phase = 'close' AND p.d->>'status' = 'rejected')
 ORDER BY e.payment_id, p.phase, e.recorded_at, e.source_partition, e.source_offset;

-- A position's outcome: decided, a retry answered the stored decision (duplicate; before
-- 0015 those published nothing and stored none), or an answer that does not stick (retry).
ALTER TABLE payment_events DROP CONSTRAINT payment_events_outcome_check;
ALTER TABLE payment_events DROP CONSTRAINT payment_events_check;
ALTER TABLE payment_events ADD CONSTRAINT payment_events_outcome_check
    CHECK (outcome IN ('decided', 'duplicate', 'retry'));
ALTER TABLE payment_events ADD CONSTRAINT payment_events_decision_check
    CHECK (decision IS NOT NULL OR outcome = 'duplicate');

-- Casino calls answered without deciding their transaction id (retry_later: a credit
-- before its round's debit) are stored by position only.
ALTER TABLE casino_calls DROP CONSTRAINT casino_calls_outcome_check;
ALTER TABLE casino_calls ADD CONSTRAINT casino_calls_outcome_check
    CHECK (outcome IN ('decided', 'duplicate', 'conflict', 'retry'));
