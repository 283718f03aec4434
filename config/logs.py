"""One log format for every Croupier process: human lines by default, JSON lines with
``CROUPIER_LOG_FORMAT=json`` (python-json-logger).

Both carry the time, the process id, the level, the logger and the message; where a
record concerns a flow, a partition or an offset (``extra={"flow": ..., "partition": ...,
"offset": ...}``), the human line ends with ``flow=bets partition=2 offset=41`` and the
JSON line has those keys. The human form keeps the shape Faust's workers always wrote
(``[time] [pid] [LEVEL] ...``), so the lines an operator greps for read the same.

Imports nothing of ours: every process (a worker through Faust's ``logging_config``, the
auditor, the analytics sink, the ClickHouse front) calls ``setup`` or ``dict_config``.
"""

from __future__ import annotations

import logging
import logging.config
import os
from collections.abc import Mapping
from typing import Any

ENV = "CROUPIER_LOG_FORMAT"
FORMATS = ("human", "json")
HUMAN = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# The record's attributes a JSON line carries, renamed as operators' tools expect.
JSON_FIELDS = "{asctime}{levelname}{name}{message}{process}"
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger"}
# Context a record may carry (``extra=``), named in both forms.
CONTEXT = ("worker", "flow", "topic", "partition", "offset", "producer", "jurisdiction", "sink")
NAME_ENV = "CROUPIER_WORKER_NAME"  # `croupier worker --name`: on every line of that process


class Named(logging.Filter):
    """Marks every record with the process's name (``worker=...``)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.worker = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


class HumanFormatter(logging.Formatter):
    """``HUMAN``, then the record's context fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(HUMAN)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT if hasattr(record, key)
        )
        if not context:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} {context}{newline}{rest}"


def log_format(env: Mapping[str, str] | None = None) -> str:
    """``human`` or ``json`` from ``CROUPIER_LOG_FORMAT`` (unset: human)."""
    value = (env if env is not None else os.environ).get(ENV, "human").strip().lower() or "human"
    if value not in FORMATS:
        msg = f"{ENV} must be one of {', '.join(FORMATS)}, not {value!r}"
        raise ValueError(msg)
    return value


def dict_config(level: str | int = "INFO", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` mapping: one stderr handler in the chosen format on
    the root logger (Faust's worker takes it as its ``logging_config``)."""
    if log_format(env) == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": JSON_FIELDS,
            "style": "{",
            "rename_fields": RENAMED,
        }
    else:
        formatter = {"()": HumanFormatter}
    name = level if isinstance(level, int) else str(level).upper()
    named = (env if env is not None else os.environ).get(NAME_ENV, "").strip()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"croupier": formatter},
        "filters": {"named": {"()": Named, "name": named}} if named else {},
        "handlers": {
            "croupier": {
                "class": "logging.StreamHandler",
                "formatter": "croupier",
                "stream": "ext://sys.stderr",
                "filters": ["named"] if named else [],
            }
        },
        "root": {"level": name, "handlers": ["croupier"]},
    }


def setup(level: str | int = "INFO", env: Mapping[str, str] | None = None) -> None:
    """Log this process's records in the chosen format (replaces the root's handlers)."""
    logging.config.dictConfig(dict_config(level, env))
    logging.getLogger("librdkafka").setLevel(logging.NOTSET)  # a command quiets it; we log it
