"""``croupier sql``: an analyst's query against ClickHouse, printed as a table, CSV or JSON.

It goes to ``CROUPIER_CLICKHOUSE_URL`` over the HTTP interface, a ClickHouse server or the
embedded engine's own process alike, so it works while the pipeline writes. Unqualified
names resolve in ``CROUPIER_CLICKHOUSE_DATABASE`` (unless the URL names a database).
ClickHouse formats the result itself; JSON keeps decimals as strings, so money stays exact.
"""

from __future__ import annotations

import json
import logging
import math
from urllib.parse import urlsplit, urlunsplit

from sinks.clickhouse.client import connect

FORMATS = {"table": "PrettyCompactMonoBlock", "csv": "CSVWithNames", "json": "JSONEachRow"}
_SETTINGS = {
    "output_format_json_quote_decimals": 1,
    "output_format_json_quote_64bit_integers": 1,
    "output_format_pretty_color": 0,
}


_GRACE = 10.0  # seconds the HTTP wait adds to the query's own limit, for its error to arrive


def _bounded(timeout: float) -> dict[str, object]:
    # Whole seconds for older servers; rounded up, never to 0 (which means no limit).
    return {"max_execution_time": max(1, math.ceil(timeout)), "timeout_overflow_mode": "throw"}


class SqlError(Exception):
    """ClickHouse refused the statement; the message is ClickHouse's."""


class Unreachable(Exception):
    """Nothing answers at the ClickHouse URL."""


def with_database(url: str, database: str) -> str:
    """``url`` defaulting to ``database``, unless it names one (or is not HTTP)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/{database}"))


def run(url: str, database: str, query: str, fmt: str = "table", *, timeout: float = 60.0) -> str:
    """The statement's result, formatted; raise ``SqlError`` or ``Unreachable``.

    ClickHouse stops the statement after ``timeout`` seconds (``max_execution_time``) and
    says so; the HTTP wait is bounded too, a little longer, for a server that does not.
    """
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    # The driver logs a warning of its own for an unreachable server; the error says it.
    logging.getLogger("clickhouse_connect.driver._backend.http_sync").setLevel(logging.ERROR)
    try:
        try:
            ch = connect(with_database(url, database), timeout=timeout + _GRACE)
        except DatabaseError as exc:
            if "UNKNOWN_DATABASE" not in str(exc):
                raise
            ch = connect(
                url, timeout=timeout + _GRACE
            )  # no schema yet: names must be qualified (or fail as unknown)
    except OperationalError as exc:
        msg = f"cannot reach ClickHouse at {url}: {_reason(exc)}"
        raise Unreachable(msg) from exc
    except DatabaseError as exc:
        raise SqlError(_clickhouse_message(exc)) from exc
    try:
        body = ch.query_raw(query, FORMATS[fmt], settings=_SETTINGS | _bounded(timeout))
    except OperationalError as exc:
        if "timed out" in str(exc).lower():
            msg = f"no answer within {timeout:g} s; give a larger --timeout or a cheaper query"
            raise SqlError(msg) from exc
        msg = f"lost ClickHouse at {url}: {_reason(exc)}"
        raise Unreachable(msg) from exc
    except DatabaseError as exc:
        text = _clickhouse_message(exc)
        if "TIMEOUT_EXCEEDED" in text:
            text = (f"stopped after --timeout {timeout:g} s; give a larger --timeout or a "
                    f"cheaper query ({text.splitlines()[0][:200]})")  # fmt: skip
        raise SqlError(text) from exc
    finally:
        ch.close()
    text = body.decode()
    if fmt == "json":
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.dumps(rows, indent=2) + "\n"
    return text


def _clickhouse_message(exc: Exception) -> str:
    """ClickHouse's own words ("Code: N. DB::Exception: ..."), without the driver's."""
    text = str(exc)
    start = text.find("Code: ")
    return (text[start:] if start >= 0 else text).strip()


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    for hint in ("Connection refused", "timed out", "Name or service not known"):
        if hint in text:
            return hint.lower()
    return text.splitlines()[0] if text else type(exc).__name__
