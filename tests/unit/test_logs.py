"""The one log format: human lines with their context, JSON lines that always parse."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config import logs


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A logger writing through the handler ``dict_config`` makes, into a buffer."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield io.StringIO(), logging.getLogger("croupier.test")
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def configure(buffer: io.StringIO, fmt: str) -> None:
    logging.config.dictConfig(logs.dict_config("INFO", {logs.ENV: fmt}))
    handler = logging.root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)


def test_human_lines_keep_faust_shape_and_end_with_context(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buffer, logger = capture
    configure(buffer, "human")
    logger.error("set aside %s", "b-1", extra={"flow": "bets", "partition": 2, "offset": 41})
    logger.info("plain")
    first, second = buffer.getvalue().splitlines()
    assert first.startswith("[") and "] [ERROR] croupier.test: set aside b-1" in first
    assert first.endswith(" flow=bets partition=2 offset=41")
    assert "[INFO] croupier.test: plain" in second and second.endswith("plain")


def test_json_lines_carry_level_logger_message_and_context(
    capture: tuple[io.StringIO, logging.Logger],
) -> None:
    buffer, logger = capture
    configure(buffer, "JSON")  # case does not matter
    logger.warning("lag %d", 7, extra={"flow": "odds", "partition": 0, "offset": 9})
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    first, second = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["level"] == "WARNING" and first["logger"] == "croupier.test"
    assert first["message"] == "lag 7"
    assert (first["flow"], first["partition"], first["offset"]) == ("odds", 0, 9)
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc_info"]


def test_an_unknown_format_is_refused() -> None:
    assert logs.log_format({}) == "human"
    with pytest.raises(ValueError, match="CROUPIER_LOG_FORMAT"):
        logs.log_format({logs.ENV: "xml"})


@given(st.text(), st.text(min_size=1))
def test_any_message_is_one_json_line(message: str, flow: str) -> None:
    """What a log line quotes comes from outside (a payload, an error text): newlines,
    quotes, control characters and lone surrogates still make one parseable line."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    config = logs.dict_config("INFO", {logs.ENV: "json"})["formatters"]["croupier"]
    factory = config.pop("()")
    from pythonjsonlogger.json import JsonFormatter

    assert factory == "pythonjsonlogger.json.JsonFormatter"
    handler.setFormatter(JsonFormatter(**config))
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s", (message,), None)
    record.flow = flow
    handler.emit(record)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1
    parsed = json.loads(lines[0])
    assert parsed["message"] == message and parsed["flow"] == flow and parsed["level"] == "INFO"


def test_a_named_worker_says_its_name_on_every_line_in_both_forms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``croupier worker --name worker-a`` (CROUPIER_WORKER_NAME): the README's multi-host
    recipe tells workers apart by it."""
    for form in ("human", "json"):
        logs.setup(env={"CROUPIER_LOG_FORMAT": form, "CROUPIER_WORKER_NAME": "worker-a"})
        logging.getLogger("croupier.test").warning("decided", extra={"flow": "bets"})
    logs.setup(env={})
    logging.getLogger("croupier.test").warning("anonymous")
    human, line, plain = capsys.readouterr().err.strip().splitlines()[-3:]
    assert human.endswith("decided worker=worker-a flow=bets")
    assert json.loads(line)["worker"] == "worker-a"
    assert "worker=" not in plain


def test_a_worker_name_is_a_label_not_anything_else() -> None:
    from config.settings import Settings

    assert Settings(CROUPIER_WORKER_NAME="worker-eu1.host:2").worker_name == "worker-eu1.host:2"
    for bad in ("two words", "new\nline", "x" * 101):
        with pytest.raises(ValueError, match="CROUPIER_WORKER_NAME"):
            Settings(CROUPIER_WORKER_NAME=bad)
