"""The gateway's Prometheus metrics, in a registry of its own (one per app, so tests and
the bench can build several), served at ``/metrics`` to loopback clients."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "croupier_gateway_requests", "HTTP requests by route, method and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "croupier_gateway_request_seconds", "HTTP request latency by route",
            ["route"], buckets=BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.waiting = Gauge(
            "croupier_gateway_waiting_transactions",
            "wallet calls waiting for their answer on casino-results", registry=self.registry,
        )  # fmt: skip
        self.streams = Gauge(
            "croupier_gateway_sse_streams", "open bet-decision streams", registry=self.registry
        )
