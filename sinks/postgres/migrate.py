"""Apply the numbered SQL files in ``migrations/`` once each, in order, under a lock; then
give the application's role its rights.

Migrations run as the schema's owner (``CROUPIER_PG_ADMIN_DSN``). The application connects
as a role that is a member of ``croupier_app`` (``CROUPIER_PG_DSN``), which may:

* read every table;
* write the ledger, the audit trail, the decisions and the report chains only through
  their SECURITY DEFINER functions (``LEDGER_FUNCTIONS``, ``AUDIT_FUNCTIONS``,
  ``DECISION_FUNCTIONS``, ``REPORT_FUNCTIONS``), which check what a grant cannot (a bet
  accepted holds its stake, a record follows its chain's head): those tables
  (``READ_ONLY``) belong to the NOLOGIN roles ``croupier_ledger``, ``croupier_audit`` and
  ``croupier_decisions`` (migrations 0018, 0019, 0021) and the application has SELECT on
  them and nothing else;
* INSERT into the other tables (the logs of what came in: player events, dead letters,
  reality checks), and UPDATE those that hold a state rather than a log (market states,
  players, sessions, progress cursors): a ``forbid_change`` trigger on UPDATE takes that
  privilege from the role too, so the logs are INSERT only;
* never DELETE or TRUNCATE anything.
"""

from __future__ import annotations

import contextlib
import hashlib
from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

LOCK_KEY = 0x43524F55  # "CROU": one migrator at a time per database
APP_ROLE = "croupier_app"
LEDGER_ROLE = "croupier_ledger"  # owns the ledger; nobody logs in as it
AUDIT_ROLE = "croupier_audit"  # owns the audit trail; nobody logs in as it
# Tables the application reads and never writes itself, and the functions it writes them by.
READ_ONLY = (
    "ledger_accounts", "ledger_transactions", "ledger_entries",
    "audit_records", "audit_heads", "audit_checkpoints",
    "bets", "bet_legs", "bet_duplicates", "settlements", "market_messages",
    "casino_rounds", "casino_transactions", "casino_calls",
    "payment_decisions", "payment_events",
    "report_records", "report_heads", "report_rejections",
    "gateway_tickets", "gateway_webhooks_seen", "gateway_tokens", "gateway_transactions",
    "schema_migrations",
)  # fmt: skip
LEDGER_FUNCTIONS = ("ledger_post(jsonb)", "ledger_lock_cash(text)")
AUDIT_FUNCTIONS = (
    "audit_lock_heads(text[])",
    "audit_append(jsonb)",
    "audit_add_checkpoint(text, bytea, bytea)",
)
DECISION_FUNCTIONS = (
    "bets_record(jsonb, jsonb, jsonb)",
    "bets_lock(text[])",
    "bets_settle(jsonb, jsonb)",
    "legs_set_results(text, text, jsonb)",
    "legs_clear_results(text, text)",
    "legs_set_cancelled(text, text, boolean, timestamptz, timestamptz)",
    "market_message_record(text, integer, bigint, text, text, jsonb, jsonb)",
    "casino_lock_rounds(text, text)",
    "casino_record(jsonb, jsonb, jsonb, timestamptz, text, text)",
    "payments_record(jsonb, jsonb)",
    # SECURITY INVOKER (0029): a placement's reads and locks in one statement, with the
    # application's own rights.
    "bets_load(text[], text[], text[], text[], jsonb[], jsonb[], timestamptz, text[], text, "
    "text[], integer[], bigint[])",
    "casino_named(text)",  # SECURITY INVOKER (0031): a casino batch's transactions by index
)
REPORT_FUNCTIONS = ("report_lock_heads()", "report_append(jsonb)", "report_reject(jsonb)")
GATEWAY_FUNCTIONS = (  # migrations 0023, 0025: tickets, webhook signatures, tokens, claims
    "gateway_tickets_claim(jsonb)",
    "gateway_seen(text, text, timestamptz)",
    "gateway_token_issue(text, text, timestamptz, text)",
    "gateway_token_revoke(text, text)",
    "gateway_transactions_claim(jsonb)",
    "gateway_prune(interval)",
)

_CREATE_ROLE = f"""
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
        CREATE ROLE {APP_ROLE} NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN NULL;  -- another database's migrator made it first
END $$"""

# Each append-only guard (forbid_change without a WHEN condition) and the events it refuses.
_GUARDS = """
SELECT c.relname, (t.tgtype & 8) <> 0, (t.tgtype & 16) <> 0, (t.tgtype & 32) <> 0
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_proc p ON p.oid = t.tgfoid
 WHERE n.nspname = %s AND p.proname = 'forbid_change' AND t.tgqual IS NULL
   AND NOT t.tgisinternal"""


class MigrationError(RuntimeError):
    """An applied migration was edited, or a migration failed."""


def migrations() -> list[tuple[str, str]]:
    """(version, SQL text) of every migration, in order."""
    folder = resources.files("sinks.postgres") / "migrations"
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text()) for f in files]


def migrate(dsn: str, schema: str) -> list[str]:
    """Bring ``schema`` up to date; return the versions applied now."""
    applied_now: list[str] = []
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done: dict[str, str] = dict(
            conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
        )
        for version, text in migrations():
            checksum = hashlib.sha256(text.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    msg = (
                        f"migration {version} was changed after it was applied to schema "
                        f"{schema!r}; add a new migration instead of editing an applied one"
                    )
                    raise MigrationError(msg)
                continue
            conn.execute(text.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                (version, checksum),
            )
            applied_now.append(version)
        grant_app_role(conn, schema)
    return applied_now


def ensure_app_login(admin_dsn: str, app_dsn: str) -> str | None:
    """Make the login ``app_dsn`` names a member of ``croupier_app`` (created if missing;
    its password set to the DSN's, when the DSN has one); its name, or None when it is the
    owner's own login."""
    admin_user = conninfo_to_dict(admin_dsn).get("user")
    app = conninfo_to_dict(app_dsn)
    user, password = app.get("user"), app.get("password")
    if not user or user == admin_user:
        return None
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(_CREATE_ROLE)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
        if not exists:
            create = sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(str(user)))
            if password:
                create += sql.SQL(" PASSWORD {}").format(sql.Literal(str(password)))
            with contextlib.suppress(psycopg.errors.DuplicateObject):  # another made it first
                conn.execute(create)
        elif password:  # the DSN is the truth (an older stack's login had no password)
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):  # not ours to set
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(str(user)), sql.Literal(str(password))))  # fmt: skip
        conn.execute(sql.SQL("GRANT {} TO {}").format(
            sql.Identifier(APP_ROLE), sql.Identifier(str(user))))  # fmt: skip
    return str(user)


def grant_app_role(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    """Give ``croupier_app`` its rights on ``schema``'s tables and functions (see the
    module's docstring); revokes what an older version of this function granted."""
    conn.execute(_CREATE_ROLE)
    ident, role = sql.Identifier(schema), sql.Identifier(APP_ROLE)
    for statement in (
        "GRANT USAGE ON SCHEMA {s} TO {r}",
        "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA {s} TO {r}",
        "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        "REVOKE DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {s} FROM {r}",
    ):
        conn.execute(sql.SQL(statement).format(s=ident, r=role))
    for table in READ_ONLY:
        conn.execute(sql.SQL("REVOKE INSERT, UPDATE ON {}.{} FROM {}").format(
            ident, sql.Identifier(table), role))  # fmt: skip
    # The owners' sequences (txn_id, entry_id, ...): readable, never moved by the app.
    owned = conn.execute(
        """SELECT s.relname FROM pg_class s
             JOIN pg_depend d ON d.objid = s.oid AND d.deptype = 'a'
             JOIN pg_class t ON t.oid = d.refobjid
             JOIN pg_namespace n ON n.oid = s.relnamespace
            WHERE s.relkind = 'S' AND n.nspname = %s AND t.relname = ANY(%s)""",
        (schema, list(READ_ONLY)),
    ).fetchall()
    for (seq,) in owned:
        conn.execute(sql.SQL("REVOKE USAGE, UPDATE ON SEQUENCE {}.{} FROM {}").format(
            ident, sql.Identifier(str(seq)), role))  # fmt: skip
    for signature in (
        *LEDGER_FUNCTIONS, *AUDIT_FUNCTIONS, *DECISION_FUNCTIONS, *REPORT_FUNCTIONS,
        *GATEWAY_FUNCTIONS,
    ):  # fmt: skip
        conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {}.{} TO {}").format(
            ident, sql.SQL(signature), role))  # fmt: skip
    for guarded, _delete, update, _truncate in conn.execute(_GUARDS, (schema,)).fetchall():
        if update:
            conn.execute(sql.SQL("REVOKE UPDATE ON {}.{} FROM {}").format(
                ident, sql.Identifier(str(guarded)), role))  # fmt: skip
