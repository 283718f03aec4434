"""Passwords out of text before it is printed or logged: one helper for every command.

``redact(text)`` replaces with ``***``:

* the password of a URL or URI DSN: ``scheme://user:PASSWORD@host`` (``postgresql://``,
  ``http(s)://``, ``kafka://``..., whatever the scheme; the user name stays);
* the value of a secret-named parameter: ``password=``, ``passwd=``, ``pwd=``,
  ``sslpassword=``, ``secret=``, ``token=``, ``api_key=``, ``sasl_password=`` (any case),
  as a URL query parameter (up to the next ``&``, ``#`` or blank), as a libpq key=value
  pair (``password=x``, ``password = 'a b\\' c'``), or as a JSON member
  (``"password": "x"``);
* every string in ``secrets`` (values known to be secret, such as a whole DSN).

It errs on the side of hiding too much: text after ``user:`` up to the last ``@`` of the
word is hidden even when that ``@`` is in a path. Bottom module: nothing of ours imported,
so every layer may use it.

``install_log_redaction()`` is the safety net for what a caller forgot: every log record
made after it (any logger, any handler) has its message, arguments and traceback passed
through ``redact``. The command line installs it first thing, so workers and the auditor
run under it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

MASK = "***"

# A URL's user information: after "scheme://", up to the last "@" of the word.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)([^\s'\"<>]*)")
_NAMES = r"password|passwd|pwd|sslpassword|secret|token|access_token|api_key|apikey|sasl_password"
# A query parameter: after "?" or "&", the value ends at "&", "#" or a blank.
_QUERY = re.compile(rf"([?&](?:{_NAMES})=)[^&#\s]*", re.IGNORECASE)
# A key=value pair (libpq): quoted with backslash escapes, or up to a blank.
_KV = re.compile(
    rf"(?<![\w.\-?&])((?:{_NAMES})\s*=\s*)('(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|\S+)",
    re.IGNORECASE,
)
# A JSON or Python mapping member: "password": "x" (or 'password': 'x').
_MEMBER = re.compile(
    rf"""((["'])(?:{_NAMES})\2\s*:\s*)("(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|[^\s,}}]+)""",
    re.IGNORECASE,
)


def _userinfo(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    at = rest.rfind("@")
    if at < 0:
        return match.group(0)
    userinfo, host = rest[:at], rest[at:]
    user, colon, _ = userinfo.partition(":")
    if not colon:
        return match.group(0)  # a user name and no password
    return f"{scheme}{user}:{MASK}{host}"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every password it carries (URL, DSN, parameter, ``secrets``) as ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL.sub(_userinfo, text)
    text = _QUERY.sub(rf"\g<1>{MASK}", text)
    text = _KV.sub(rf"\g<1>{MASK}", text)
    return _MEMBER.sub(rf"\g<1>{MASK}", text)


def _redacted(value: object) -> object:
    """A log argument redacted: text (and anything printed as text) with a password."""
    if isinstance(value, int | float | bool) or value is None:
        return value
    shown = str(value)
    hidden = redact(shown)
    return value if hidden == shown else hidden


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` with its message, arguments and traceback redacted (in place)."""
    if isinstance(record.msg, str):
        record.msg = redact(record.msg)
    if isinstance(record.args, tuple):
        record.args = tuple(_redacted(a) for a in record.args)
    elif isinstance(record.args, dict):
        record.args = {k: _redacted(v) for k, v in record.args.items()}
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


_installed: list[Callable[..., logging.LogRecord]] = []


def install_log_redaction() -> None:
    """Redact every log record made from now on, whatever logger or handler takes it."""
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return redact_record(make(*args, **kwargs))

    _installed.append(make)
    logging.setLogRecordFactory(factory)


def uninstall_log_redaction() -> None:
    """Undo ``install_log_redaction`` (for tests)."""
    if _installed:
        logging.setLogRecordFactory(_installed.pop())
