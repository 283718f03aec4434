"""Apply the numbered SQL files in ``migrations/`` once each, in order, under a lock."""

from __future__ import annotations

import hashlib
from importlib import resources

import psycopg
from psycopg import sql

LOCK_KEY = 0x43524F55  # "CROU": one migrator at a time per database


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
    return applied_now
