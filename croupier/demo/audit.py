"""Steps 10 and 11: the audit trail verified and rebuilt, the regulator files written."""

from __future__ import annotations

from decimal import Decimal

import psycopg

from croupier import checks
from croupier.demo.context import Demo
from croupier.demo.printing import heading, print_table

D = Decimal


def audit_and_reports(demo: Demo) -> None:
    heading("10. The audit trail: verified, every wallet of this run rebuilt from it alone")
    from sinks.postgres import audit
    from sinks.postgres.rebuild import rebuild

    dsn, schema = demo.settings.pg_dsn.get_secret_value(), demo.settings.pg_schema
    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        checked = audit.verify(conn)
        # `croupier check`'s verdict on the chains (each wallet's is its own, below).
        chains = checks.audit_trail(checked, [])
        ok = demo.checks.expect(chains.ok, f"audit verify: {chains.examples}")
        state = "every chain verifies" if chains.ok else chains.examples
        print(f"  {checked.records} records in {checked.chains} hash chains: {state}  {ok}")
        rows = []
        for p in demo.players:
            (wallet,) = rebuild(conn, p.player_id)
            shown = {k: v for (c, k), v in wallet.balances.items() if c == p.currency}
            ok = demo.checks.expect(wallet.ok, f"rebuild of {p.short}: {wallet.differences}")
            rows.append((p.player_id, wallet.operations, len(wallet.entries),
                         f"{shown.get('cash', D('0.00'))} / {shown.get('pending', D('0.00'))}",
                         "agrees with the ledger" if wallet.ok else "DIFFERS", ok))  # fmt: skip
    print_table(["player", "operations", "entries", "cash / pending (from the trail)",
                 "beside the ledger", "check"], rows)  # fmt: skip

    heading("11. Regulator reports: the DK and ES streams verified and written as files")
    from config.policies import load_policies
    from croupier import report_files

    policies = load_policies(demo.settings.policy_dir)
    demo.progress.wait_reports(demo.deadline)
    for j in ("DK", "ES"):
        policy = policies.get(j)
        assert policy is not None
        where = demo.settings.report_signing_key.parent / "files" / j
        written = report_files.write(demo.settings, policy, where, idle_timeout=3)
        problems = written.problems or report_files.verify(demo.settings, policy, where)
        ok = demo.checks.expect(not problems, f"reports of {j}: {problems}")
        print(f"  reports.{j}: {written.records} new record(s), chain verified, written as "
              f"{policy.reporting.format} to {where} ({len(written.files)} file(s)); "
              f"the directory verifies: {ok}")  # fmt: skip
        for f in written.files[:4]:
            print(f"    {f}")
