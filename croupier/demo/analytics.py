"""Step 12: the analyst's view, GGR and hold per market, beside the ledger."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import psycopg

from croupier.demo.context import Demo
from croupier.demo.printing import heading

D = Decimal


def analytics(demo: Demo) -> None:
    heading("12. The analyst's view, the pipeline still running: GGR and hold per market")
    from croupier import analytics, sql

    s = demo.settings
    left = max(10.0, demo.deadline - time.monotonic())
    caught = analytics.wait_caught_up(s, timeout=left)
    ok = demo.checks.expect(caught, "the analytics sink did not catch up with `audit`")
    print(f"  the analytics sink has every committed fact of `audit` in ClickHouse  {ok}")
    # The run's own event ids (hex): shown as an analyst would type them.
    where = f"event_id IN ('{demo.m1}', '{demo.m2}')"
    query = f"SELECT event_id, market_id, currency, bets, handle, ggr, hold FROM ggr_by_market WHERE {where} ORDER BY event_id, market_id"  # noqa: S608, E501
    print(f'  $ croupier sql "{query}"')
    for line in sql.run(s.clickhouse_url, s.clickhouse_database, query).splitlines():
        print(f"    {line}")
    # The same money as the ledger: GGR of this run's settled single bets on the two
    # matches, stakes minus payouts, per currency, from PostgreSQL.
    total = f"SELECT currency, sum(ggr) AS ggr FROM ggr_by_market WHERE {where} GROUP BY 1"  # noqa: S608
    rows = json.loads(sql.run(s.clickhouse_url, s.clickhouse_database, total, "json"))
    in_clickhouse = {r["currency"]: D(str(r["ggr"])) for r in rows if r["ggr"] is not None}
    with psycopg.connect(s.pg_dsn.get_secret_value(),
                         options=f"-c search_path={s.pg_schema}") as conn:  # fmt: skip
        in_ledger = {c: D(str(g)) for c, g in conn.execute(
            """SELECT b.currency, sum(b.stake - b.payout) FROM bets b
                WHERE b.status = 'settled'
                  AND (SELECT count(*) FROM bet_legs l WHERE l.bet_id = b.bet_id) = 1
                  AND EXISTS (SELECT 1 FROM bet_legs l WHERE l.bet_id = b.bet_id
                                 AND l.event_id IN (%s, %s))
                GROUP BY 1""", (demo.m1, demo.m2)).fetchall()}  # fmt: skip
    ok = demo.checks.expect(in_clickhouse == in_ledger,
                            f"GGR: ClickHouse {in_clickhouse}, ledger {in_ledger}")  # fmt: skip
    shown = ", ".join(f"{g} {c}" for c, g in sorted(in_ledger.items())) or "none"
    print(f"  GGR of the settled single bets, ClickHouse beside the ledger: {shown}  {ok}")
