"""The reporter: audit records become each jurisdiction's regulator stream.

Every ``CROUPIER_REPORT_INTERVAL`` seconds a worker turns the audit records it has not
read into report records, a chain per jurisdiction signed with the operator's report key
(``CROUPIER_REPORT_SIGNING_KEY``; its regulators verify with the public key), and
publishes the new ones to ``reports.<J>`` (``sinks/postgres/reports.py`` has the two passes
and why they are exact). The jurisdictions are those of the policy files. The key is read
when the timer is declared, never made: a missing key stops the worker's start with the
way to make one.

An audit record the reporter cannot report is set aside in ``report_rejections`` by the
pass itself. Anything else a pass raises is logged by ``app_timer`` and the next tick
tries again.
"""

from __future__ import annotations

import logging
from typing import Any

from config.settings import Settings
from rules.policy import Policies
from sinks.base import SinkUnavailable
from sinks.postgres.reports import ReportSink
from sinks.signing import load_private_key
from streams.context import app_timer, publish

log = logging.getLogger(__name__)


def register(app: Any, settings: Settings, *, sink: ReportSink, policies: Policies) -> None:
    """Declare the reporter's timer (nothing when the interval is 0)."""
    if settings.report_interval <= 0:
        return
    key = load_private_key(settings.report_signing_key, what="report signing key")
    jurisdictions = frozenset(policies.jurisdictions)
    opened: list[bool] = []

    async def send(jurisdiction: str, items: list[tuple[bytes, bytes]]) -> None:
        await publish(app, settings.topic(f"reports.{jurisdiction}"), items)
        await app.producer.flush()

    @app_timer(app, settings.report_interval)
    async def reporter() -> None:
        if not opened:
            await sink.open()
            opened.append(True)
        try:
            while await sink.derive(key, jurisdictions) > 0:
                pass
            while await sink.publish(send) > 0:
                pass
        except SinkUnavailable as exc:  # the next tick tries again
            log.warning("reporter: %s", exc)
