"""The embedded PostgreSQL asks every login for its SCRAM password, and an older stack's
``trust`` data directory is converted on its next start, its data kept."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import psycopg
import pytest

from croupier.stack.postgres import EmbeddedPostgres
from croupier.stack.process import StackError, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[EmbeddedPostgres]:
    root = ROOT / ".stack" / "test-pg-passwords"  # beside the session stack, not in it
    shutil.rmtree(root, ignore_errors=True)
    pg = EmbeddedPostgres(home=root / "postgres", logs=root / "logs", port=free_port())
    try:
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


def refused(dsn: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(dsn, connect_timeout=10).close()


def test_a_new_server_asks_for_scram_passwords(server: EmbeddedPostgres) -> None:
    pg = server
    pg.start()
    assert pg.credentials_file.stat().st_mode & 0o777 == 0o600
    assert not pg.trusting()
    psycopg.connect(pg.dsn).close()
    with psycopg.connect(pg.admin_dsn) as conn:
        stored = conn.execute(
            "SELECT rolname, rolpassword FROM pg_authid "
            "WHERE rolname IN ('postgres', 'croupier') ORDER BY 1"
        ).fetchall()
    assert [name for name, _ in stored] == ["croupier", "postgres"]
    assert all(str(hashed).startswith("SCRAM-SHA-256$") for _, hashed in stored)
    nobody = f"postgresql://postgres@127.0.0.1:{pg.port}/croupier"
    refused(nobody)
    refused(f"postgresql://postgres:wrong@127.0.0.1:{pg.port}/croupier")
    refused(f"postgresql://croupier:wrong@127.0.0.1:{pg.port}/croupier")
    # The same passwords after a restart.
    pg.stop()
    pg.start()
    psycopg.connect(pg.dsn).close()


def test_an_older_trust_data_directory_is_converted(server: EmbeddedPostgres) -> None:
    pg = server
    pg.data.mkdir(parents=True)
    pg.logs.mkdir(parents=True)
    pg.logfile.touch()
    user = pg._user()
    if user is not None:
        pg._prepare_for_user(user)
    made = pg._run("initdb", "-D", str(pg.data), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--locale=C")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert pg.trusting() and not pg.credentials_file.exists()

    pg.start()
    assert not pg.trusting()
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
    refused(f"postgresql://postgres@127.0.0.1:{pg.port}/croupier")
    psycopg.connect(pg.dsn).close()
    pg.stop()

    # Lost passwords are named, not silently replaced.
    saved = pg.credentials_file.read_bytes()
    pg.credentials_file.unlink()
    with pytest.raises(StackError, match=r"credentials\.json"):
        pg.start()
    assert not pg.credentials_file.exists()
    pg.credentials_file.write_bytes(saved)
    pg.start()
    with psycopg.connect(pg.admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
