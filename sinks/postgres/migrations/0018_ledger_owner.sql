-- The ledger gets an owner of its own: croupier_ledger, a role nobody logs in as.
--
-- It owns ledger_accounts, ledger_transactions, ledger_entries (and their sequences) and
-- the two functions the application may call: ledger_post(ops), the only writer, and
-- ledger_lock_cash(owners), which locks players' cash accounts for the casino flow (a
-- SELECT ... FOR NO KEY UPDATE needs UPDATE rights the application no longer has). Both
-- are SECURITY DEFINER with their search_path fixed to this schema (pg_catalog first,
-- pg_temp last, so nobody's temporary objects can stand in for ours). The application role
-- gets EXECUTE on them and SELECT on the tables (migrate.grant_app_role), nothing else.
--
-- The posting switch (croupier.ledger_posting, a setting any role could set) no longer
-- decides anything: the guards below check who is writing (current_user is
-- croupier_ledger only inside the definer functions) and watch every column of an
-- account. A future migration that must write a ledger table runs SET LOCAL ROLE
-- croupier_ledger first.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'croupier_ledger') THEN
        CREATE ROLE croupier_ledger NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object THEN NULL;  -- another database's migrator made it first
END $$;

-- Accounts: INSERT and UPDATE by the owner only; an account's id, owner, kind and currency
-- never change (only a balance moves); DELETE and TRUNCATE are refused already (0002).
CREATE OR REPLACE FUNCTION ledger_balance_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger accounts change only through ledger_post(), and only their '
                    'balance: UPDATE by % refused', current_user
        USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER ledger_balance_guard ON ledger_accounts;
-- Checked without calling a function on the posting path (the WHEN is false there).
CREATE TRIGGER ledger_balance_guard BEFORE UPDATE ON ledger_accounts
    FOR EACH ROW
    WHEN (current_user <> 'croupier_ledger'
          OR (NEW.account_id, NEW.owner, NEW.kind, NEW.currency)
             IS DISTINCT FROM (OLD.account_id, OLD.owner, OLD.kind, OLD.currency))
    EXECUTE FUNCTION ledger_balance_guard();

-- Rows come into the ledger only from its owner: a statement-level check, once per
-- INSERT (or COPY), so the posting path pays nothing per row.
CREATE FUNCTION ledger_writer_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is written only through ledger_post(): % by % refused',
        TG_TABLE_NAME, TG_OP, current_user USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_accounts_writer_only BEFORE INSERT ON ledger_accounts
    FOR EACH STATEMENT WHEN (current_user <> 'croupier_ledger')
    EXECUTE FUNCTION ledger_writer_only();
CREATE TRIGGER ledger_transactions_writer_only BEFORE INSERT ON ledger_transactions
    FOR EACH STATEMENT WHEN (current_user <> 'croupier_ledger')
    EXECUTE FUNCTION ledger_writer_only();
CREATE TRIGGER ledger_entries_writer_only BEFORE INSERT ON ledger_entries
    FOR EACH STATEMENT WHEN (current_user <> 'croupier_ledger')
    EXECUTE FUNCTION ledger_writer_only();

-- The casino flow locks the batch's cash accounts (in player order, as ledger_post does)
-- and reads their balances before it decides. owners: player ids joined by commas.
CREATE FUNCTION ledger_lock_cash(owners text)
RETURNS TABLE (owner text, currency char(3), balance numeric)
LANGUAGE sql AS $$
    SELECT a.owner, a.currency, a.balance FROM ledger_accounts a
     WHERE a.owner = ANY (string_to_array(owners, ',')) AND a.kind = 'cash'
     ORDER BY a.owner, a.currency FOR NO KEY UPDATE
$$;

DO $$
DECLARE
    s text := current_schema();
BEGIN
    -- A migrator that is not a superuser must be able to act as the owner to hand its
    -- tables over (it holds ADMIN on the role it created); the owner needs CREATE on the
    -- schema while it takes them, and only then.
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT croupier_ledger TO %I', current_user);
    END IF;
    EXECUTE format('GRANT USAGE, CREATE ON SCHEMA %I TO croupier_ledger', s);
    ALTER TABLE ledger_accounts OWNER TO croupier_ledger;      -- with their sequences
    ALTER TABLE ledger_transactions OWNER TO croupier_ledger;
    ALTER TABLE ledger_entries OWNER TO croupier_ledger;
    ALTER FUNCTION ledger_post(jsonb) OWNER TO croupier_ledger;
    ALTER FUNCTION ledger_lock_cash(text) OWNER TO croupier_ledger;
    EXECUTE format('ALTER FUNCTION ledger_post(jsonb) SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', s);
    EXECUTE format('ALTER FUNCTION ledger_lock_cash(text) SECURITY DEFINER '
                   'SET search_path = pg_catalog, %I, pg_temp', s);
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM croupier_ledger', s);
END $$;

-- Functions are executable by PUBLIC by default: only the application role (granted in
-- migrate.grant_app_role) and the owner's members may call these.
REVOKE ALL ON FUNCTION ledger_post(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger_lock_cash(text) FROM PUBLIC;
