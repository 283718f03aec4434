"""Adapters to the outside: PostgreSQL ledger, ClickHouse, audit trail, report writers."""
