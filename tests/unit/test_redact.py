"""No password reaches a command's output or a log line: ``croupier.redact``."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from croupier.redact import (
    MASK,
    install_log_redaction,
    redact,
    redact_record,
    uninstall_log_redaction,
)

# Passwords drawn from characters the rest of each URL or DSN never uses, so "the password
# does not appear" cannot pass by accident nor fail because a host name contains it.
PASSWORD_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$%&()*+,;=:~-_.[]{}|^`"
passwords = st.text(alphabet=PASSWORD_CHARS, min_size=4, max_size=40).filter(
    lambda p: any(c.isalnum() for c in p)
)
raw_passwords = st.text(alphabet=PASSWORD_CHARS.replace("&", ""), min_size=4, max_size=40).filter(
    lambda p: any(c.isalnum() for c in p)
)
words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
schemes = st.sampled_from(["postgresql", "postgres", "http", "https", "kafka", "clickhouse"])


def hidden(secret: str, text: str) -> bool:
    # A short password made only of punctuation could match elsewhere; ours hold a letter
    # or digit the rest never uses, so any occurrence is a leak.
    return secret not in text


@given(schemes, words, passwords, words, words)
def test_a_url_password_never_shows(scheme: str, user: str, pw: str, host: str, db: str) -> None:
    for shown in (quote(pw, safe=""), pw.replace("@", "")):
        url = f"{scheme}://{user}:{shown}@{host}.example:5432/{db}?sslmode=require"
        out = redact(f"cannot reach {url} (refused)")
        assert hidden(shown, out), out
        assert f"{scheme}://{user}:{MASK}@{host}.example:5432/{db}" in out  # the rest is kept


@given(words, raw_passwords, words)
def test_a_raw_at_sign_in_a_password_hides_up_to_the_last_at(user: str, pw: str, host: str) -> None:
    out = redact(f"http://{user}:{pw}@x@{host}:8123/")
    assert pw not in out and out.endswith(f"@{host}:8123/")


@given(words, passwords, words)
def test_a_libpq_key_value_password_never_shows(user: str, pw: str, host: str) -> None:
    plain = pw.replace(" ", "")
    quoted = "'" + pw.replace("\\", "\\\\").replace("'", "\\'") + " x'"
    for value in (plain, quoted):
        out = redact(f"host={host} user={user} password={value} dbname=croupier")
        assert hidden(pw, out), out
        assert f"host={host} user={user}" in out and "dbname=croupier" in out
    assert hidden(pw, redact(f"host={host} PASSWORD = {plain}"))


@given(words, raw_passwords, words)
def test_a_password_query_parameter_never_shows(user: str, pw: str, host: str) -> None:
    for value in (quote(pw, safe=""), pw):
        out = redact(f"http://{host}:8123/?user={user}&password={value}&database=croupier")
        assert hidden(value, out), out
        assert out.endswith("&database=croupier") and f"user={user}" in out


@given(passwords)
def test_a_json_member_and_a_known_secret_never_show(pw: str) -> None:
    assert hidden(pw, redact('{"user": "a", "password": "' + pw.replace('"', "") + '"}'))
    assert redact(f"dsn is {pw}!", [pw]) == f"dsn is {MASK}!"


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:8123",
        "postgresql://croupier@127.0.0.1:55432/croupier",
        "reached 127.0.0.1:9092 in 3 ms; user=croupier",
        "mailto:someone@example.com",
    ],
)
def test_text_without_a_password_is_left_alone(text: str) -> None:
    assert redact(text) == text


def test_the_log_safety_net_redacts_messages_arguments_and_tracebacks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("croupier.test.redact")
    install_log_redaction()
    try:
        with caplog.at_level(logging.INFO):
            log.info("connecting to %s", "postgresql://app:s3cretA@h/db")
            log.warning("DSN host=h password=s3cretB")
            try:
                raise ConnectionError("refused: http://u:s3cretC@ch:8123/")
            except ConnectionError:
                log.exception("ClickHouse failed")
        text = caplog.text
    finally:
        uninstall_log_redaction()
    assert "app:***@h/db" in text and "password=***" in text and "refused: http://u:***@ch" in text
    for secret in ("s3cretA", "s3cretB", "s3cretC"):
        assert secret not in text


def test_without_the_safety_net_a_log_line_would_show_it(caplog: pytest.LogCaptureFixture) -> None:
    """The control: the test above fails if the net does nothing."""
    with caplog.at_level(logging.INFO):
        logging.getLogger("croupier.test.redact").info("at %s", "http://u:s3cretD@h/")
    assert "s3cretD" in caplog.text
    record = caplog.records[-1]
    redact_record(record)
    assert "s3cretD" not in record.getMessage()


def test_check_and_stack_status_never_print_a_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing answers (ports 1 and 2): ``check`` names each service it cannot reach, and
    ``stack status`` each external part, all without the passwords in their URLs."""
    from croupier import cli, exits

    monkeypatch.setenv("CROUPIER_STACK_DIR", f"{tmp_path}/stack")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("CROUPIER_PG_DSN", "postgresql://app:PgSecret1@127.0.0.1:1/croupier")
    monkeypatch.setenv("CROUPIER_PG_ADMIN_DSN", "host=127.0.0.1 port=1 password=PgSecret2")
    monkeypatch.setenv("CROUPIER_CLICKHOUSE_URL", "http://writer:ChSecret3@127.0.0.1:2/")
    assert cli.main(["check", "--wait", "0.1"]) == exits.EXIT_NOT_RUNNING
    out = capsys.readouterr()
    assert "ClickHouse at http://writer:***@127.0.0.1:2/" in out.err
    cli.main(["stack", "status"])
    cli.main(["stack", "status", "--json"])
    out2 = capsys.readouterr()
    assert "127.0.0.1:1/croupier" in out2.out
    for secret in ("PgSecret1", "PgSecret2", "ChSecret3"):
        assert secret not in out.out + out.err + out2.out + out2.err
