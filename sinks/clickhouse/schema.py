"""Croupier's ClickHouse schema: the audit log, the tables derived from it, and the views.

One DDL for a ClickHouse server and for the embedded chdb engine, applied idempotently
(``apply``). Every name is qualified with the database, so views resolve the same way
whatever database a client defaults to.

**Where rows come from.** The sink inserts each committed audit record (the ``audit``
topic, ``sinks/postgres/audit.py``) as its exact JSON into ``audit_log``, with where Kafka
held it. Column defaults pick out the record's identity, and materialized views map each
entity's records to typed tables as the rows arrive: ``bets``, ``ledger_transactions``,
``casino_transactions``, ``payments``, ``odds_changes``, ``players``, ``dead_letters``
(the views ``ledger_entries`` and ``settlements`` read ``ledger_transactions``). The
mapping lives here, in SQL, so the sink does no per-row work in Python (the throughput
goal) and a server and chdb map alike. Each materialized view costs every insert a few
milliseconds whatever its size, so there are no more than the entities need. Conversions
use the ``OrNull``/``OrZero`` functions: a record of an unexpected shape becomes a row with
empty fields. Money and prices are the exception (below): a value present that does not
fit fails the insert, and the sink sets that one record aside, so nothing fails for ever.

**Duplicates.** Kafka redelivers and the relay may publish a record twice; both bring the
same bytes. Every table is a ``ReplacingMergeTree`` ordered by the fact's identity (the
audit record's source position, entity, entity id and action for ``audit_log``; the
business key for the derived tables), so a repeat collapses into one row when parts
merge, and every view reads with ``FINAL``, so numbers are right before that. Analysts
querying the tables themselves add ``FINAL`` too.

**Money** is ``Decimal(38, 6)``: exact, room for every ISO 4217 currency's minor units and
for the 32 integer digits of any total the wire's bounds allow. **Prices** are
``Decimal(76, 40)``: an accumulator's price keeps the places of all its legs (twenty legs of
two places, ten of four) and the wire's 18 integer digits with room to spare. A money or
price string that does not fit its column (or is not a decimal at all) fails the insert
(``throwIf`` in the mapping): the sink sets that record aside in ``analytics_dead_letters``
instead of storing it as 0 or NULL.

**Partitions** follow the server's clock: ``audit_log`` by the audit record's
``recorded_at`` and every derived table by a time Croupier set (``decided_at``,
``recorded_at``), never by a producer's timestamp. A batch of bets dated across centuries
then still lands in one or two partitions (ClickHouse refuses an insert that touches more
than ``max_partitions_per_insert_block``, 100). Partition keys are fixed when a table is
made: a database made by an older version keeps its keys until it is dropped and the
sink fills it again from the ``audit`` topic.
"""

from __future__ import annotations

import logging
import re

from sinks.clickhouse.client import ClickHouse

log = logging.getLogger(__name__)

MONEY = "Decimal(38, 6)"
# Prices: an accumulator's is the product of its legs', so it has more places than any
# leg. 20 places hold ten two-place legs exactly; PostgreSQL keeps them unbounded.
ODDS_SCALE = 40
ODDS = f"Decimal(76, {ODDS_SCALE})"
# Bumped when a mapping's SELECT changes: ``apply`` replaces mappings of another version.
SCHEMA_VERSION = 3
AUDIT_LOG = "audit_log"
AUDIT_COLUMNS = ("kafka_partition", "kafka_offset", "kafka_ts_ms", "body")
DEAD_LETTERS = "analytics_dead_letters"
DEAD_LETTER_COLUMNS = (
    "source_topic", "kafka_partition", "kafka_offset", "kafka_ts_ms", "body", "code", "error",
)  # fmt: skip

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def money(expr: str) -> str:
    """A decimal string as money (0 when absent or malformed)."""
    return f"toDecimal128OrZero({expr}, 6)"


def price(expr: str) -> str:
    """A decimal string as a price (NULL when absent or malformed)."""
    return f"toDecimal256OrNull({expr}, {ODDS_SCALE})"


def _misfit(expr: str, scale: int, bits: int = 128) -> str:
    """True when ``expr`` is a non-empty string that does not convert to the column type."""
    return f"(notEmpty(ifNull({expr}, '')) AND isNull(toDecimal{bits}OrNull({expr}, {scale})))"


def misfit_money(expr: str) -> str:
    return _misfit(expr, 6)


def misfit_price(expr: str) -> str:
    return _misfit(expr, ODDS_SCALE, 256)


def refuse_if(table: str, *conditions: str) -> str:
    """A WHERE clause failing the insert when a record's money or price does not fit."""
    return (
        f" WHERE throwIf({' OR '.join(conditions)}, 'a money or price value of a {table} "
        "record does not fit its column (or is not a decimal)') = 0"
    )


def at(expr: str) -> str:
    return f"parseDateTime64BestEffortOrZero({expr}, 6, 'UTC')"


_HEAD = (
    "Tuple(entity String, entity_id String, action String, occurred_at String, "
    "recorded_at String, source Tuple(topic String, partition UInt32, offset UInt64), "
    "after Tuple(player_id String))"
)

TABLES: dict[str, str] = {
    # Every audit record once, whole: the history, and the source of every other table.
    "audit_log": f"""
CREATE TABLE IF NOT EXISTS {{db}}.audit_log (
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    kafka_ts_ms      Int64 EPHEMERAL,  -- as sent: text DateTime parsing guesses at numbers
    kafka_ts         DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(kafka_ts_ms, 'UTC'),
    body             String,
    head             {_HEAD} EPHEMERAL JSONExtract(body, '{_HEAD}'),
    entity           LowCardinality(String) DEFAULT tupleElement(head, 'entity'),
    entity_id        String DEFAULT tupleElement(head, 'entity_id'),
    action           LowCardinality(String) DEFAULT tupleElement(head, 'action'),
    source_topic     LowCardinality(String)
                     DEFAULT tupleElement(tupleElement(head, 'source'), 'topic'),
    source_partition UInt32 DEFAULT tupleElement(tupleElement(head, 'source'), 'partition'),
    source_offset    UInt64 DEFAULT tupleElement(tupleElement(head, 'source'), 'offset'),
    occurred_at      DateTime64(6, 'UTC') DEFAULT {at("tupleElement(head, 'occurred_at')")},
    recorded_at      DateTime64(6, 'UTC') DEFAULT {at("tupleElement(head, 'recorded_at')")},
    player_id        String DEFAULT if(entity = 'player', entity_id,
                                       tupleElement(tupleElement(head, 'after'), 'player_id')),
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY (entity, entity_id, action, source_topic, source_partition, source_offset)
""",
    # Audit records ClickHouse refused for their content (not for being away): the bytes
    # as consumed, where Kafka held them, and ClickHouse's error. Never retried by the sink.
    "analytics_dead_letters": """
CREATE TABLE IF NOT EXISTS {db}.analytics_dead_letters (
    source_topic     LowCardinality(String),
    kafka_partition  UInt32,
    kafka_offset     UInt64,
    kafka_ts_ms      Int64 EPHEMERAL,
    kafka_ts         DateTime64(3, 'UTC') DEFAULT fromUnixTimestamp64Milli(kafka_ts_ms, 'UTC'),
    body             String,
    code             Int32,
    error            String,
    dead_lettered_at DateTime64(3, 'UTC') DEFAULT now64(3)
) ENGINE = ReplacingMergeTree
ORDER BY (source_topic, kafka_partition, kafka_offset)
""",
    "bets": f"""
CREATE TABLE IF NOT EXISTS {{db}}.bets (
    bet_id       String,
    player_id    String,
    status       LowCardinality(String),
    reason       Nullable(String),
    currency     LowCardinality(String),
    stake        {MONEY},
    odds         Nullable({ODDS}),
    legs         UInt16,
    leg_events   Array(String),
    leg_markets  Array(String),
    leg_outcomes Array(String),
    leg_odds     Array({ODDS}),
    product      LowCardinality(String),
    placed_at    DateTime64(6, 'UTC'),
    decided_at   DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY bet_id
""",
    # Every ledger operation recorded (applied or refused), with its entries; the house's
    # accounts give revenue exactly as the ledger books it.
    "ledger_transactions": f"""
CREATE TABLE IF NOT EXISTS {{db}}.ledger_transactions (
    key            String,
    txn_id         UInt64,
    operation      LowCardinality(String),
    product        LowCardinality(String),
    player_id      String,
    currency       LowCardinality(String),
    amount         {MONEY},
    payout         Nullable({MONEY}),
    result         Nullable(String),
    reference      Nullable(String),
    bet_id         String,
    status         LowCardinality(String),
    reason         Nullable(String),
    cash_after     {MONEY},
    pending_after  {MONEY},
    entry_owner    Array(String),
    entry_account  Array(LowCardinality(String)),
    entry_amount   Array({MONEY}),
    house_stakes   {MONEY},
    house_payouts  {MONEY},
    house_casino   {MONEY},
    house_payments {MONEY},
    ggr            {MONEY},
    occurred_at    DateTime64(6, 'UTC'),
    recorded_at    DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY key
""",
    "casino_transactions": f"""
CREATE TABLE IF NOT EXISTS {{db}}.casino_transactions (
    transaction_id           String,
    type                     LowCardinality(String),
    player_id                String,
    round_id                 String,
    game_id                  LowCardinality(String),
    amount                   {MONEY},
    currency                 LowCardinality(String),
    reference_transaction_id Nullable(String),
    status                   LowCardinality(String),
    error                    Nullable(String),
    moved                    Bool,
    balance_before           {MONEY},
    balance_after            {MONEY},
    rng_build                Nullable(String),
    occurred_at              DateTime64(6, 'UTC'),
    recorded_at              DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY transaction_id
""",
    "payments": f"""
CREATE TABLE IF NOT EXISTS {{db}}.payments (
    payment_id String,
    type       LowCardinality(String),
    player_id  String,
    status     LowCardinality(String),
    reason     Nullable(String),
    amount     Nullable({MONEY}),
    currency   LowCardinality(String),
    occurred_at DateTime64(6, 'UTC'),
    decided_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (payment_id, type)
""",
    # One row per outcome price (or per market, when it has none) an odds change set.
    "odds_changes": f"""
CREATE TABLE IF NOT EXISTS {{db}}.odds_changes (
    event_id         String,
    market_id        String,
    outcome_id       String,
    changed_at       DateTime64(6, 'UTC'),
    action           LowCardinality(String),
    producer         Nullable(String),
    status           LowCardinality(String),
    odds             Nullable({ODDS}),
    market_version   UInt64,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    recorded_at      DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(recorded_at)
ORDER BY (event_id, market_id, outcome_id, changed_at, source_topic, source_partition,
          source_offset)
""",
    "players": """
CREATE TABLE IF NOT EXISTS {db}.players (
    player_id    String,
    jurisdiction LowCardinality(String),
    currency     LowCardinality(String),
    version      UInt64,
    last_event   LowCardinality(String),
    updated_at   DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(version)
ORDER BY player_id
""",
    "dead_letters": """
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    letter_id        String,
    source_topic     LowCardinality(String),
    source_partition UInt32,
    source_offset    UInt64,
    reason           LowCardinality(String),
    error            String,
    recorded_at      DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
ORDER BY letter_id
""",
}


def _house(account: str) -> str:
    return f"arraySum(arrayFilter((a, k) -> k = '{account}', entry_amount, entry_account))"


def _parsed(entity: str, shape: str, *columns: str) -> str:
    """The records of ``entity``, their ``after`` parsed once into the named tuple ``a``."""
    picked = ", ".join(("entity_id", "player_id", "occurred_at", *columns))
    return (
        f"(SELECT {picked}, JSONExtract(body, 'after', '{shape}') AS a "
        f"FROM {{db}}.audit_log WHERE entity = '{entity}')"
    )


def f(name: str, of: str = "a") -> str:
    """A field of a parsed tuple."""
    return f"tupleElement({of}, '{name}')"


_BET = (
    "Tuple(status String, reason Nullable(String), currency String, stake String, "
    "odds Nullable(String), decided_at String, selections Array(Tuple(event_id String, "
    "market_id String, outcome_id String, odds String)))"
)
_LEDGER = (
    "Tuple(txn_id UInt64, operation String, currency String, amount String, "
    "payout Nullable(String), result Nullable(String), reference Nullable(String), "
    "status String, reason Nullable(String), cash_after String, pending_after String, "
    "entries Array(Tuple(owner String, account String, amount String)))"
)
_CASINO = (
    "Tuple(type String, round_id String, game_id String, amount String, currency String, "
    "reference_transaction_id Nullable(String), status String, error Nullable(String), "
    "moved Bool, rng_build Nullable(String), balance String)"
)
_PAYMENT = (
    "Tuple(type String, status String, reason Nullable(String), amount Nullable(String), "
    "currency Nullable(String), decided_at String)"
)
_ODDS = (
    "Tuple(producer Nullable(String), markets Map(String, Tuple(status String, "
    "odds Map(String, String), version UInt64)))"
)

# Materialized views: name -> (target table, SELECT). Each parses a record's ``after`` once
# (JSONExtract into a named tuple). They fire on every insert into their source, so a
# redelivered record is mapped again and collapses in the target like its row.
MAPPINGS: dict[str, tuple[str, str]] = {
    "bets_mv": (
        "bets",
        f"""
SELECT entity_id AS bet_id, player_id, {f("status")} AS status, {f("reason")} AS reason,
       {f("currency")} AS currency, {money(f("stake"))} AS stake,
       {price(f("odds"))} AS odds,
       length({f("selections")}) AS legs,
       arrayMap(x -> {f("event_id", "x")}, {f("selections")}) AS leg_events,
       arrayMap(x -> {f("market_id", "x")}, {f("selections")}) AS leg_markets,
       arrayMap(x -> {f("outcome_id", "x")}, {f("selections")}) AS leg_outcomes,
       arrayMap(x -> toDecimal256OrZero({f("odds", "x")}, {ODDS_SCALE}),
                {f("selections")}) AS leg_odds,
       'sportsbook' AS product,
       occurred_at AS placed_at,
       {at(f("decided_at"))} AS decided_at
  FROM {_parsed("bet", _BET)}{
            refuse_if(
                "bet",
                misfit_money(f("stake")),
                misfit_price(f("odds")),
                f"arrayExists(x -> {misfit_price(f('odds', 'x'))}, {f('selections')})",
            )
        }""",
    ),
    "ledger_transactions_mv": (
        "ledger_transactions",
        f"""
SELECT entity_id AS key, {f("txn_id")} AS txn_id, {f("operation")} AS operation,
       multiIf(operation IN ('stake', 'settle', 'unsettle'), 'sportsbook',
               startsWith(operation, 'casino_'), 'casino', 'payments') AS product,
       player_id, {f("currency")} AS currency, {money(f("amount"))} AS amount,
       toDecimal128OrNull({f("payout")}, 6) AS payout, {f("result")} AS result,
       {f("reference")} AS reference,
       multiIf(operation = 'stake', replaceRegexpOne(key, '^bet:', ''),
               operation = 'settle', replaceRegexpOne(ifNull(reference, ''), '^bet:', ''),
               operation = 'unsettle', replaceRegexpOne(key, '^settlement:(.*)/[0-9]+$', '\\\\1'),
               '') AS bet_id,
       {f("status")} AS status, {f("reason")} AS reason,
       {money(f("cash_after"))} AS cash_after, {money(f("pending_after"))} AS pending_after,
       arrayMap(x -> {f("owner", "x")}, {f("entries")}) AS entry_owner,
       arrayMap(x -> {f("account", "x")}, {f("entries")}) AS entry_account,
       arrayMap(x -> {money(f("amount", "x"))}, {f("entries")}) AS entry_amount,
       {_house("house_stakes")} AS house_stakes,
       {_house("house_payouts")} AS house_payouts,
       {_house("house_casino")} AS house_casino,
       {_house("house_payments")} AS house_payments,
       house_stakes + house_payouts + house_casino AS ggr,
       occurred_at, recorded_at
  FROM {_parsed("ledger_transaction", _LEDGER, "recorded_at")}{
            refuse_if(
                "ledger_transaction",
                *(misfit_money(f(n)) for n in ("amount", "payout", "cash_after", "pending_after")),
                f"arrayExists(x -> {misfit_money(f('amount', 'x'))}, {f('entries')})",
            )
        }""",
    ),
    "casino_transactions_mv": (
        "casino_transactions",
        f"""
SELECT entity_id AS transaction_id, {f("type")} AS type, player_id, {f("round_id")} AS round_id,
       {f("game_id")} AS game_id, {money(f("amount"))} AS amount, {f("currency")} AS currency,
       {f("reference_transaction_id")} AS reference_transaction_id,
       {f("status")} AS status, {f("error")} AS error, {f("moved")} AS moved,
       {money("JSONExtractString(body, 'before', 'balance')")} AS balance_before,
       {money(f("balance"))} AS balance_after, {f("rng_build")} AS rng_build,
       occurred_at, recorded_at
  FROM {_parsed("casino_transaction", _CASINO, "body", "recorded_at")}{
            refuse_if(
                "casino_transaction",
                misfit_money(f("amount")),
                misfit_money(f("balance")),
                misfit_money("JSONExtractString(body, 'before', 'balance')"),
            )
        }""",
    ),
    "payments_mv": (
        "payments",
        f"""
SELECT entity_id AS payment_id, {f("type")} AS type, player_id, {f("status")} AS status,
       {f("reason")} AS reason, toDecimal128OrNull({f("amount")}, 6) AS amount,
       ifNull({f("currency")}, '') AS currency, occurred_at,
       {at(f("decided_at"))} AS decided_at
  FROM {_parsed("payment", _PAYMENT)}{refuse_if("payment", misfit_money(f("amount")))}""",
    ),
    "odds_changes_mv": (
        "odds_changes",
        f"""
SELECT entity_id AS event_id, market_id, outcome_id, occurred_at AS changed_at, action,
       {f("producer")} AS producer, {f("status", "market")} AS status,
       toDecimal256OrNull(nullIf(price, ''), {ODDS_SCALE}) AS odds,
       {f("version", "market")} AS market_version,
       source_topic, source_partition, source_offset, recorded_at
  FROM {
            _parsed(
                "odds",
                _ODDS,
                "action",
                "source_topic",
                "source_partition",
                "source_offset",
                "recorded_at",
            )
        }
 ARRAY JOIN mapKeys({f("markets")}) AS market_id, mapValues({f("markets")}) AS market
 ARRAY JOIN arrayResize(mapKeys({f("odds", "market")}),
                        greatest(length({f("odds", "market")}), 1), '') AS outcome_id,
            arrayResize(mapValues({f("odds", "market")}),
                        greatest(length({f("odds", "market")}), 1), '') AS price{
            refuse_if("odds", misfit_price("price"))
        }""",
    ),
    "players_mv": (
        "players",
        f"""
SELECT entity_id AS player_id, {f("jurisdiction")} AS jurisdiction,
       {f("currency")} AS currency, {f("version")} AS version,
       action AS last_event, occurred_at AS updated_at
  FROM {
            _parsed(
                "player", "Tuple(jurisdiction String, currency String, version UInt64)", "action"
            )
        }""",
    ),
    "dead_letters_mv": (
        "dead_letters",
        f"""
SELECT entity_id AS letter_id, source_topic, source_partition, source_offset,
       {f("reason")} AS reason, {f("error")} AS error, recorded_at
  FROM {
            _parsed(
                "dead_letter",
                "Tuple(reason String, error String)",
                "source_topic",
                "source_partition",
                "source_offset",
                "recorded_at",
            )
        }""",
    ),
}

_JURISDICTIONS = """(SELECT player_id, argMax(jurisdiction, version) AS jurisdiction
                   FROM {db}.players FINAL GROUP BY player_id)"""
_ACCEPTED_BETS = """(SELECT bet_id, player_id, currency, stake, odds, legs, leg_events,
                           leg_markets, leg_outcomes,
                           if(legs = 1, leg_events[1], '') AS event_id,
                           if(legs = 1, leg_markets[1], '(accumulator)') AS market_id
                      FROM {db}.bets FINAL WHERE status = 'accepted')"""
_SETTLED = """(SELECT bet_id, sum(ggr) AS bet_ggr,
                     sumIf(1, kind = 'settle') - sumIf(1, kind = 'unsettle') AS settled
                FROM {db}.settlements WHERE status = 'applied' GROUP BY bet_id)"""

# Plain views: analysts' questions, always over deduplicated rows. Money stays Decimal;
# hold is a ratio (GGR / handle), NULL when there is no handle.
VIEWS: dict[str, str] = {
    # Every ledger entry: account and signed amount, one row each.
    "ledger_entries": """
SELECT key, n AS entry_no, txn_id, operation, player_id, o AS owner, k AS account, currency,
       a AS amount, occurred_at
  FROM {db}.ledger_transactions FINAL
 ARRAY JOIN arrayEnumerate(entry_owner) AS n, entry_owner AS o, entry_account AS k,
            entry_amount AS a""",
    # Settlements, voids and their rollbacks (``unsettle``) as the ledger booked them.
    "settlements": """
SELECT replaceRegexpOne(key, '^settlement:', '') AS settlement_id, bet_id, player_id,
       operation AS kind, result, currency, abs(house_stakes) AS stake,
       abs(house_payouts) AS payout, ggr, status, occurred_at AS settled_at
  FROM {db}.ledger_transactions FINAL WHERE operation IN ('settle', 'unsettle')""",
    # Turnover (handle) and GGR per day (UTC), product and jurisdiction: the ledger's own
    # books. Handle: sportsbook stakes when placed, casino debits net of rollbacks. GGR: the
    # house's stakes and payouts accounts (settlements and their rollbacks, when booked) and
    # its casino account.
    "ggr_daily": f"""
SELECT day, product, jurisdiction, currency, sum(handle_part) AS handle, sum(ggr_part) AS ggr,
       if(handle = 0, NULL, ggr / handle) AS hold, countIf(is_bet) AS bets
  FROM (SELECT toDate(occurred_at) AS day, product, player_id, currency,
               multiIf(operation IN ('stake', 'casino_debit'), amount,
                       operation = 'casino_rollback', house_casino, toDecimal128(0, 6))
                   AS handle_part,
               ggr AS ggr_part, operation IN ('stake', 'casino_debit') AS is_bet
          FROM {{db}}.ledger_transactions FINAL
         WHERE status = 'applied' AND product IN ('sportsbook', 'casino')) t
  LEFT JOIN {_JURISDICTIONS} j USING (player_id)
 GROUP BY day, product, jurisdiction, currency""",
    # GGR and hold per market: a single bet counts for its market, an accumulator for the
    # '(accumulator)' row (its result depends on several markets).
    "ggr_by_market": f"""
SELECT event_id, market_id, currency, count() AS bets, sum(stake) AS handle,
       sum(bet_ggr) AS ggr, if(handle = 0, NULL, ggr / handle) AS hold,
       countIf(settled > 0) AS settled_bets
  FROM {_ACCEPTED_BETS} b LEFT JOIN {_SETTLED} s USING (bet_id)
 GROUP BY event_id, market_id, currency""",
    # Open exposure per outcome: accepted bets not (or no longer) settled. liability is
    # what the house pays out beyond the stakes it holds if the outcome wins; an
    # accumulator is counted in full on each of its legs (its worst case on each).
    "market_liability": f"""
SELECT event_id, market_id, outcome_id, currency, count() AS open_bets,
       sum(stake) AS open_stake, sum(payout_part) AS potential_payout,
       potential_payout - open_stake AS liability
  FROM (SELECT leg_event AS event_id, leg_market AS market_id, leg_outcome AS outcome_id,
               currency, stake,
               toDecimal128(toDecimal256(stake, 6) * toDecimal256(ifNull(odds, 0), 20), 6)
                 AS payout_part
          FROM {_ACCEPTED_BETS} b LEFT JOIN {_SETTLED} s USING (bet_id)
         ARRAY JOIN leg_events AS leg_event, leg_markets AS leg_market,
                    leg_outcomes AS leg_outcome
         WHERE s.settled <= 0)
 GROUP BY event_id, market_id, outcome_id, currency""",
    "odds_history": """
SELECT event_id, market_id, outcome_id, changed_at, action, status, odds, producer,
       market_version
  FROM {db}.odds_changes FINAL""",
    # Everything a player did and what became of it: bets and their settlements, casino
    # calls, payments. Filter by player_id and order by at.
    "player_history": """
SELECT player_id, placed_at AS at, 'sportsbook' AS product, concat('bet.', status) AS kind,
       bet_id AS reference, stake AS amount, currency, status,
       concat(toString(legs), ' leg(s) at ', ifNull(toString(odds), '-'),
              ifNull(concat(', ', reason), '')) AS detail
  FROM {db}.bets FINAL
UNION ALL
SELECT player_id, settled_at, 'sportsbook',
       if(kind = 'settle', 'bet.settled', 'bet.settlement_rolled_back'), bet_id,
       if(kind = 'unsettle', -payout, payout), currency, status,
       concat('settlement ', settlement_id, ifNull(concat(': ', result), ''))
  FROM {db}.settlements
UNION ALL
SELECT player_id, occurred_at, 'casino', concat('casino.', type), transaction_id, amount,
       currency, status,
       concat('game ', game_id, ', round ', round_id, ifNull(concat(', ', error), ''))
  FROM {db}.casino_transactions FINAL
UNION ALL
SELECT player_id, occurred_at, 'payments', concat('payment.', type), payment_id, amount,
       currency, status, ifNull(reason, '')
  FROM {db}.payments FINAL""",
    # Deposits and withdrawals per player per limit period (calendar day, ISO week, month;
    # UTC) from the ledger: what a deposit limit counts.
    "payment_totals": f"""
SELECT player_id, currency, period,
       toDate(multiIf(period = 'day', toStartOfDay(occurred_at),
                      period = 'week', toDateTime(toMonday(occurred_at), 'UTC'),
                      toDateTime(toStartOfMonth(occurred_at), 'UTC'))) AS period_start,
       sumIf(amount, operation = 'deposit') AS deposits,
       countIf(operation = 'deposit') AS deposit_count,
       sumIf(amount, operation = 'withdrawal_reserve') AS withdrawals_requested,
       sumIf(reserve_out, operation = 'withdrawal_confirm') AS withdrawals_paid,
       sumIf(reserve_out, operation = 'withdrawal_release') AS withdrawals_released
  FROM (SELECT player_id, currency, operation, amount, occurred_at,
               -{_house("withdrawal_reserve")} AS reserve_out
          FROM {{db}}.ledger_transactions FINAL
         WHERE status = 'applied' AND product = 'payments')
 ARRAY JOIN ['day', 'week', 'month'] AS period
 GROUP BY player_id, currency, period, period_start""",
}


def statements(database: str) -> list[str]:
    """The DDL, in order, for ``database``: every statement idempotent."""
    if not _IDENTIFIER.fullmatch(database):
        msg = f"ClickHouse database {database!r} must be letters, digits and '_'"
        raise ValueError(msg)
    out = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    out += [ddl.format(db=database).strip() for ddl in TABLES.values()]
    # Tables made by an older version: the same columns, wider types (no-ops otherwise).
    out += [
        f"ALTER TABLE {database}.bets MODIFY COLUMN odds Nullable({ODDS}), "
        f"MODIFY COLUMN leg_odds Array({ODDS})",
        f"ALTER TABLE {database}.odds_changes MODIFY COLUMN odds Nullable({ODDS})",
        f"ALTER TABLE {database}.casino_transactions ADD COLUMN IF NOT EXISTS recorded_at "
        "DateTime64(6, 'UTC')",
        f"ALTER TABLE {database}.odds_changes ADD COLUMN IF NOT EXISTS recorded_at "
        "DateTime64(6, 'UTC')",
    ]
    for name, (target, select) in MAPPINGS.items():
        body = select.format(db=database).strip()
        out.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{name} "
            f"TO {database}.{target} AS {body} COMMENT '{_version()}'"
        )
    # Views are replaced: a newer definition takes effect on the next start.
    out += [
        f"CREATE OR REPLACE VIEW {database}.{name} AS {select.format(db=database).strip()}"
        for name, select in VIEWS.items()
    ]
    return out


def _version() -> str:
    return f"croupier schema {SCHEMA_VERSION}"


def apply(ch: ClickHouse, database: str) -> None:
    """Create the database, tables, mappings and views that are missing (idempotent).

    A mapping made by another schema version is dropped first and made again. Audit
    records inserted between the two would miss that mapping's table, so the sink applies
    the schema before it consumes; run ``croupier analytics schema`` with the sink stopped.
    """
    statements_ = statements(database)
    ch.command(statements_[0])  # the database
    names = ", ".join(f"'{name}'" for name in MAPPINGS)
    found = ch.query(
        f"SELECT name, comment FROM system.tables WHERE database = '{database}' "
        f"AND name IN ({names})"
    )
    for name, comment in found:
        if comment != _version():
            ch.command(f"DROP VIEW IF EXISTS {database}.{name}")
    for statement in statements_[1:]:
        ch.command(statement)
    keys = ch.query(
        f"SELECT name, partition_key FROM system.tables WHERE database = '{database}' "
        "AND partition_key LIKE '%occurred_at%'"
    )
    if keys:
        log.warning(
            "ClickHouse database %s was made by an older version: %s partitioned by a "
            "producer's time (a batch dated across more than 100 months is split until it "
            "goes in); drop the database and let the sink fill it again from the audit topic "
            "to partition by the server's time",
            database, ", ".join(name for name, _ in keys),
        )  # fmt: skip
