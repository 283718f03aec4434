"""The auditor: the audit trail's background work in a process of its own.

Workers write audit records inside the transactions of the changes they record; what
follows from them is not on any decision's path: publishing them to ``audit`` (the
relay), turning them into each jurisdiction's report stream (the reporter), and signing
checkpoints (with the key watch of ``streams/audit_keys.py``: a checkpoint signed by a
key that is not the pinned one is logged and counted as an alert). In a worker those
run as timers on the event loop that decides bets, and cost it as much as the records
themselves (``BENCHMARKS.md``). ``croupier audit run`` runs them here instead,
on another core, and workers started with ``CROUPIER_AUDIT_RELAY_INTERVAL``,
``CROUPIER_REPORT_INTERVAL`` and ``CROUPIER_AUDIT_CHECKPOINT_INTERVAL`` at 0 leave them
to it (``make up`` does both).

The passes are the same code as the workers' timers (``sinks/postgres/audit.py``,
``sinks/postgres/reports.py``), under the same advisory locks, so any number of
auditors and workers may run them at once and each record is still published in order,
at least once, and derived once. Only the publishing differs: librdkafka (confluent-kafka)
instead of Faust's aiokafka producer, a few microseconds a message instead of tens, with
the same murmur2 partitioning of keys as Java clients and Faust, so a republished record
lands where it did the first time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from confluent_kafka import KafkaException, Producer

from config.kafka import librdkafka_conf
from config.priority import step_back
from config.settings import Settings
from rules.policy import Policies
from sinks.base import SinkUnavailable
from sinks.postgres.relay import AuditRelay
from sinks.postgres.reports import ReportSink
from sinks.signing import load_private_key
from streams import metrics
from streams.audit_keys import KeyWatch
from streams.pacing import Pacer

log = logging.getLogger(__name__)

READY = "auditor: running"  # logged once both sinks are open


class KafkaOut:
    """Publish batches and return once every message is acknowledged by the brokers."""

    def __init__(self, settings: Settings) -> None:
        self._producer = Producer({
            **librdkafka_conf(settings),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "partitioner": "murmur2_random",  # Java's and Faust's partitioning of keys
        })  # fmt: skip

    async def send(self, topic: str, items: list[tuple[bytes, bytes]]) -> None:
        failures: list[str] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failures.append(str(err))

        for key, value in items:
            while True:
                try:
                    self._producer.produce(topic, value, key, on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let it drain
                    await asyncio.to_thread(self._producer.poll, 0.1)
        left = await asyncio.to_thread(self._producer.flush, 60)
        if left or failures:
            msg = f"Kafka did not take {left or len(failures)} messages: {failures[:1]}"
            raise SinkUnavailable(msg)

    def close(self) -> None:
        self._producer.flush(30)


async def run(settings: Settings, policies: Policies, *, stop: asyncio.Event) -> None:
    """Relay, report and checkpoint until ``stop`` is set."""
    dsn, schema, group = settings.pg_dsn.get_secret_value(), settings.pg_schema, settings.app_id
    relay = AuditRelay(dsn, schema, consumer_group=group, max_connections=1)
    reports = ReportSink(dsn, schema, consumer_group=group, max_connections=1)
    # The report key signs reports.<J>; like the audit key, made by `make up` or
    # `audit keygen --reports`, never here.
    report_key = load_private_key(settings.report_signing_key, what="report signing key")
    jurisdictions = frozenset(policies.jurisdictions)
    watch = KeyWatch(settings)  # the key is made by `make up` or `audit keygen`, never here
    out = KafkaOut(settings)
    audit_topic = settings.topic("audit")

    async def to_audit(items: list[tuple[bytes, bytes]]) -> None:
        await out.send(audit_topic, items)

    async def to_reports(jurisdiction: str, items: list[tuple[bytes, bytes]]) -> None:
        await out.send(settings.topic(f"reports.{jurisdiction}"), items)

    def sign() -> tuple[int, int] | None:
        with psycopg.connect(dsn, options=f"-c search_path={schema}", connect_timeout=5) as conn:
            return watch.sign(conn)

    await relay.open()
    await reports.open()
    metrics.add_check("postgres", metrics.pg_reachable(dsn))
    metrics.add_check("auditor.running", lambda: not stop.is_set())
    log.warning(READY)
    interval = min(settings.audit_relay_interval or 0.5, settings.report_interval or 1.0)
    signed_at = time.monotonic()
    # On a saturated machine the passes yield to the decisions (streams/pacing.py).
    pacer = Pacer(stop=stop) if settings.audit_yield else None
    took = 0.0  # how long the last pass took

    async def step(work: Callable[[], Awaitable[int]]) -> int:
        nonlocal took
        if pacer is not None:
            await pacer.turn(took)
        started = time.perf_counter()
        done = await work()
        took = time.perf_counter() - started
        return done

    try:
        while not stop.is_set():
            try:
                # Drain the trail first, then the reports derived from it.
                while True:
                    relayed = await step(lambda: relay.relay(to_audit))
                    if relayed <= 0:
                        break
                    metrics.observe_sink("audit.relay", took, relayed)  # the pass, not its wait
                while await step(lambda: reports.derive(report_key, jurisdictions)) > 0:
                    pass
                while await step(lambda: reports.publish(to_reports)) > 0:
                    pass
                if pacer is not None:
                    pacer.caught_up()
                took = 0.0
                every = settings.audit_checkpoint_interval or 60.0
                if time.monotonic() - signed_at >= every:
                    signed = await asyncio.to_thread(sign)
                    signed_at = time.monotonic()
                    if signed is not None:
                        log.info("audit checkpoint %d signed %d chain heads", *signed)
            except (SinkUnavailable, psycopg.Error, KafkaException) as exc:
                log.warning("auditor: %s; trying again", exc)
            except Exception:  # a bug: logged whole, and the auditor stays up to try again
                log.exception("auditor: a pass failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    finally:
        out.close()
        await relay.close()
        await reports.close()


def main(settings: Settings, policies: Policies) -> int:
    """Run until SIGTERM or SIGINT; 0 on a clean stop."""
    from config import logs

    logs.setup()
    step_back(settings.background_nice, what="auditor")
    metrics.serve(settings.metrics_port, "auditor", settings.metrics_bind)
    # The platform's state (backlogs, checkpoint, liability, GGR) from here, once.
    from sinks.signing import parse_pin

    pin = parse_pin(settings.audit_public_key) if settings.audit_public_key else None
    metrics.serve_platform(settings.pg_dsn.get_secret_value(), settings.pg_schema, pin=pin,
                           ggr_fresh=settings.ggr_refresh)  # fmt: skip

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        stopper: Callable[[], None] = stop.set
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopper)
        await run(settings, policies, stop=stop)

    asyncio.run(serve())
    return 0
