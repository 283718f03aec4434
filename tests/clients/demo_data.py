"""A little analytics data shaped like one ``make demo`` run, for the client tests.

The ids are the demo's (``croupier/demo/``): run ``c0ffee`` gives players
``demo-c0ffee-uk`` (UK, GBP) and ``demo-c0ffee-es`` (ES, EUR), matches ``demo-c0ffee-m1``
and ``demo-c0ffee-m2``, bets ``demo-c0ffee-b1``..., a deposit ``demo-c0ffee-es-dep``.
The records are audit records as the relay publishes them; ``load`` writes them through
the analytics sink's own writer, so every table and view fills as it does in the stack.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from schemas.records import AuditRecord, SourcePosition
from sinks.clickhouse.sink import AuditLogWriter, Fetched

RUN = "demo-c0ffee-"
UK, ES = f"{RUN}uk", f"{RUN}es"
M1, M2 = f"{RUN}m1", f"{RUN}m2"
T = "2026-11-24T19:00:00+00:00"
SETTLED_AT = "2026-11-24T21:00:00+00:00"
DATABASE = "croupier"


def _record(entity: str, entity_id: str, action: str, offset: int, after: dict[str, Any], *,
            topic: str, at: str = T, before: dict[str, Any] | None = None) -> bytes:  # fmt: skip
    record = AuditRecord(
        entity=entity, entity_id=entity_id, action=action,
        source=SourcePosition(topic=topic, partition=0, offset=offset),
        occurred_at=at, recorded_at=at, before=before, after=after,
    )  # fmt: skip
    return record.model_dump_json().encode()


def _ledger(key: str, op: str, offset: int, player: str, currency: str, amount: str,
            entries: list[tuple[str, str, str]], *, at: str = T,
            **extra: Any) -> bytes:  # fmt: skip
    after = {
        "txn_id": offset, "key": key, "operation": op, "player_id": player,
        "currency": currency, "amount": amount, "payout": None, "result": None,
        "reference": None, "status": "applied", "reason": None, "cash_after": "0",
        "pending_after": "0",
        "entries": [{"owner": o, "account": a, "amount": m} for o, a, m in entries], **extra,
    }  # fmt: skip
    return _record("ledger_transaction", key, f"ledger.{op}", offset, after, topic="bets", at=at)


def _bet(bet_id: str, player: str, currency: str, stake: str, odds: str | None, offset: int,
         legs: list[tuple[str, str, str, str]], reason: str | None = None) -> bytes:  # fmt: skip
    after = {
        "bet_id": bet_id, "player_id": player, "status": "rejected" if reason else "accepted",
        "reason": reason, "decided_at": T, "currency": currency, "stake": stake, "odds": odds,
        "standing_version": 1,
        "selections": [{"event_id": e, "market_id": m, "outcome_id": o, "odds": p}
                       for e, m, o, p in legs],
    }  # fmt: skip
    action = "bet.rejected" if reason else "bet.accepted"
    return _record("bet", bet_id, action, offset, after, topic="bets")


def _odds(event: str, offset: int, prices: dict[str, str], status: str = "active") -> bytes:
    market = {"status": status, "odds": prices, "updated_at": T, "version": offset}
    action = "odds.changed" if status == "active" else "odds.stopped"
    return _record("odds", event, action, offset, {"producer": "live", "markets": {"1x2": market}},
                   topic="odds")  # fmt: skip


def records() -> list[bytes]:
    """The run's audit records, in the order the relay would publish them."""
    b1, b2, b3, b4 = (f"{RUN}b{n}" for n in (1, 2, 3, 4))
    home, draw = (M1, "1x2", "home", "2.10"), (M1, "1x2", "draw", "3.40")
    return [
        _record("player", UK, "player.registered", 1,
                {"player_id": UK, "jurisdiction": "UK", "currency": "GBP", "version": 1},
                topic="players"),
        _record("player", ES, "player.registered", 2,
                {"player_id": ES, "jurisdiction": "ES", "currency": "EUR", "version": 1},
                topic="players"),
        _ledger(f"deposit:{UK}-dep", "deposit", 3, UK, "GBP", "100.00",
                [(UK, "cash", "100.00"), ("house", "house_payments", "-100.00")]),
        _ledger(f"deposit:{ES}-dep", "deposit", 4, ES, "EUR", "100.00",
                [(ES, "cash", "100.00"), ("house", "house_payments", "-100.00")]),
        _record("payment", f"{ES}-dep", "payment.accepted", 4,
                {"payment_id": f"{ES}-dep", "player_id": ES, "status": "accepted",
                 "reason": None, "decided_at": T, "type": "deposit", "amount": "100.00",
                 "currency": "EUR"}, topic="payments"),
        _odds(M1, 5, {"home": "2.10", "draw": "3.40", "away": "3.60"}),
        _odds(M2, 6, {"home": "1.50", "draw": "4.00", "away": "6.00"}),
        _bet(b1, UK, "GBP", "10.00", "2.10", 7, [home]),
        _ledger(f"bet:{b1}", "stake", 7, UK, "GBP", "10.00",
                [(UK, "cash", "-10.00"), (UK, "pending", "10.00")]),
        _bet(b2, ES, "EUR", "5.00", "3.40", 8, [draw]),
        _ledger(f"bet:{b2}", "stake", 8, ES, "EUR", "5.00",
                [(ES, "cash", "-5.00"), (ES, "pending", "5.00")]),
        _bet(b3, UK, "GBP", "5.00", None, 9, [(M1, "1x2", "home", "2.00")], "odds_changed"),
        _bet(b4, UK, "GBP", "4.00", "1.50", 10, [(M2, "1x2", "home", "1.50")]),
        _ledger(f"bet:{b4}", "stake", 10, UK, "GBP", "4.00",
                [(UK, "cash", "-4.00"), (UK, "pending", "4.00")]),
        _odds(M1, 11, {}, "suspended"),
        _ledger(f"settlement:{b1}/1", "settle", 12, UK, "GBP", "0", bet_id=b1,
                at=SETTLED_AT, payout="21.00", reference=f"bet:{b1}", result="win",
                entries=[(UK, "pending", "-10.00"), ("house", "house_stakes", "10.00"),
                         ("house", "house_payouts", "-21.00"), (UK, "cash", "21.00")]),
        _ledger(f"withdrawal:{ES}-wd", "withdrawal_reserve", 13, ES, "EUR", "30.00",
                [(ES, "cash", "-30.00"), (ES, "withdrawal_reserve", "30.00")]),
        _ledger(f"withdrawal-close:{ES}-wd", "withdrawal_confirm", 14, ES, "EUR", "0",
                [(ES, "withdrawal_reserve", "-30.00"), ("house", "house_payments", "30.00")],
                reference=f"withdrawal:{ES}-wd"),
    ]  # fmt: skip


def load(writer_url: str, database: str = DATABASE) -> None:
    """Apply the schema to ``database`` and write the run's records into it."""
    writer = AuditLogWriter(writer_url, database)
    try:
        writer.write([Fetched(0, i, 1_764_000_000_000, v) for i, v in enumerate(records())])
    finally:
        writer.close()


TEMP_TABLE = "croupier_probe"

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_sql() -> list[str]:
    """The ```sql blocks of the README's analytics section, as written there."""
    section = README.read_text().split("## Analytics", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def parameterized(sql: str) -> tuple[str, dict[str, Any]]:
    """A README query as a tool sends it: its values bound as ``{name:Type}`` parameters.

    ``x LIKE 'demo-%-uk'`` (every demo run's UK player) becomes ``x = {id_uk:String}``
    bound to this run's ``demo-c0ffee-uk``; any other string literal a parameter of its own.
    """
    params: dict[str, Any] = {}

    def demo_id(m: re.Match[str]) -> str:
        params[f"id_{m[1]}"] = f"{RUN}{m[1]}"
        return f"= {{id_{m[1]}:String}}"

    def literal(m: re.Match[str]) -> str:
        name = f"s{len(params)}"
        params[name] = m[1]
        return f"{{{name}:String}}"

    sql = re.sub(r"LIKE 'demo-%-(\w+)'", demo_id, sql)
    sql = re.sub(r"'([^']*)'", literal, sql)
    return " ".join(sql.split()), params


def _queries() -> list[dict[str, Any]]:
    out = []
    for text in readme_sql():
        sql, params = parameterized(text)
        view = re.search(r"\bFROM (\w+)", sql)
        assert view is not None, sql
        out.append({"name": view[1], "sql": sql, "params": params})
    assert len(out) >= 6 and len({q["name"] for q in out}) == len(out), out
    return out


# The README's analyst queries (its analytics section) with the demo's ids bound as
# parameters, as every client of the matrix runs them.
QUERIES: list[dict[str, Any]] = _queries()

# What Grafana's ClickHouse data source asks (src/data/CHDatasource.ts: the database, table
# and column pickers, the ad hoc filters' version probe) and the system tables behind them.
METADATA: list[dict[str, Any]] = [
    {"name": "version", "sql": "SELECT version()"},
    {"name": "databases", "sql": "SHOW DATABASES"},
    {"name": "tables", "sql": f'SHOW TABLES FROM "{DATABASE}"'},
    {"name": "describe", "sql": f'DESC TABLE "{DATABASE}"."ggr_daily"'},
    {"name": "system_databases", "sql": "SELECT name FROM system.databases ORDER BY name"},
    {"name": "system_tables",
     "sql": f"SELECT name, engine FROM system.tables WHERE database = '{DATABASE}' "
            "ORDER BY name"},
    {"name": "system_columns",
     "sql": f"SELECT name, type, table FROM system.columns WHERE database IN ('{DATABASE}') "
            "AND table = 'ggr_daily' ORDER BY position"},
]  # fmt: skip


def spec() -> dict[str, Any]:
    """What every client program reads on stdin."""
    return {"database": DATABASE, "queries": QUERIES, "metadata": METADATA,
            "temp_table": TEMP_TABLE}  # fmt: skip
