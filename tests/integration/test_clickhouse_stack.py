"""The stack's embedded ClickHouse: two users with made passwords, files only its owner reads."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from croupier.stack import ENV_CLICKHOUSE, ENV_CLICKHOUSE_ANALYST, Stack, StackConfig
from croupier.stack.clickhouse import ANALYST, WRITER, EmbeddedClickHouse, answers, ping
from sinks.clickhouse.client import connect
from tests.integration.clickhouse_server import free_port

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_embedded_clickhouse_has_a_writer_and_an_analyst(tmp_path: Path) -> None:
    ch = EmbeddedClickHouse(home=tmp_path / "clickhouse", logs=tmp_path, port=free_port())
    assert ch.url == ch.base_url  # nothing made before the first start
    ch.start()
    try:
        passwords = ch.passwords()
        assert set(passwords) == {WRITER, ANALYST} and passwords[WRITER] != passwords[ANALYST]
        assert len(passwords[WRITER]) >= 32
        for name in ("credentials.json", "users.json"):
            assert mode(ch.home / name) == 0o600
        assert passwords[WRITER] not in (ch.home / "users.json").read_text()
        assert ch.running() and answers(ch.url) and answers(ch.analyst_url)
        assert not answers(ch.base_url)  # anonymous
        assert not answers(ch.url.replace(passwords[WRITER], "wrong"))
        writer = connect(ch.url)
        analyst = connect(ch.analyst_url)
        try:
            writer.command("CREATE TABLE t (a UInt8) ENGINE = Memory")
            writer.command("INSERT INTO t VALUES (1)")
            assert analyst.query("SELECT count() FROM t") == [(1,)]
            with pytest.raises(Exception, match="READONLY"):
                analyst.command("INSERT INTO t VALUES (2)")
        finally:
            writer.close()
            analyst.close()
    finally:
        ch.stop()
    assert not ping(ch.base_url) and not ch.running()
    again = EmbeddedClickHouse(home=tmp_path / "clickhouse", logs=tmp_path, port=ch.port)
    assert again.passwords() == passwords  # kept across restarts


def test_stack_env_file_is_private_and_names_both_urls(tmp_path: Path) -> None:
    stack = Stack(StackConfig(root=tmp_path))
    stack.clickhouse.passwords()  # as the first start makes them
    stack._write_env(stack.service_env())
    assert mode(stack.env_file) == 0o600
    text = stack.env_file.read_text()
    assert stack.clickhouse.url in text and stack.clickhouse.analyst_url in text
    assert f"export {ENV_CLICKHOUSE}=" in text and f"export {ENV_CLICKHOUSE_ANALYST}=" in text
    status = {p.name: p for p in stack.status()}["clickhouse"]
    assert stack.clickhouse.passwords()[WRITER] not in status.where
    assert not status.running
