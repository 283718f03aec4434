"""The gateway's Starlette app (``create_app``) and its server (``serve``).

Around every route, one ASGI middleware: the request size limit (413), metrics by route
template and status, and RFC 9457 problems for whatever a handler raises. It also calls
the matched route's handler itself: Starlette's own layers (its error and exception
middleware, the router, the route's wrapper) were a sixth of the gateway's CPU per call
and did nothing this middleware does not; what matches no route (404, 405) and the
lifespan still go through Starlette.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config.settings import Settings
from croupier.gateway import READY, bets, wallet, webhooks
from croupier.gateway.auth import RateLimiter
from croupier.gateway.config import Credentials, GatewaySettings
from croupier.gateway.kafka import Listener, Publisher, Waiters
from croupier.gateway.metrics import Metrics
from croupier.gateway.openapi import document
from croupier.gateway.problems import Problem, problem_response
from croupier.gateway.state import GatewayState
from croupier.gateway.store import Store

log = logging.getLogger(__name__)


class _TooLarge(Exception):
    pass


class Edge:
    """The ASGI middleware around the routes."""

    def __init__(self, app: ASGIApp, routes: list[Route], metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics
        self.max_body = max_body
        # Routes without path parameters, by path and method: one dict lookup instead of a
        # regex match per route for every request (the templated ones are matched as before).
        self._static = {
            (r.path, method): r for r in routes if "{" not in r.path for method in r.methods or ()
        }

    def _too_large(self) -> Problem:
        return Problem(413, "too-large", "Request body too large", f"at most {self.max_body} bytes")

    def _route(self, scope: Scope) -> tuple[Route | None, Scope]:
        """The route this request matches fully, and what it adds to the scope."""
        static = self._static.get((scope["path"], scope["method"]))
        if static is not None:
            return static, {"endpoint": static.endpoint, "path_params": {}}
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return route, child
        return None, {}

    async def _handle(self, route: Route, scope: Scope, receive: Receive, send: Send) -> None:
        """What Starlette's router and ``request_response`` would do, without their layers."""
        request = Request(scope, receive, send)
        try:
            response = await route.endpoint(request)
        except Problem as p:
            response = problem_response(p, scope["path"])
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        matched, child = self._route(scope)
        route = "unmatched" if matched is None else matched.path
        started = time.perf_counter()
        status = 500
        sent = False

        async def sending(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                sent = True
            await send(message)

        received = 0

        async def receiving() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # Raised inside the handler's read: Starlette answers it as a Problem.
                    raise self._too_large()
            return message

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body):
                raise _TooLarge
            if matched is None:  # 404, 405: Starlette answers
                await self.app(scope, receiving, sending)
            else:
                scope.update(child)
                scope["app"] = self.app  # request.app, as Starlette sets it
                await self._handle(matched, scope, receiving, sending)
        except _TooLarge:
            if not sent:
                await problem_response(self._too_large(), scope["path"])(scope, receive, sending)
        except Exception:
            log.exception("gateway: %s %s failed", scope["method"], route)
            if not sent:
                p = Problem(500, "internal", "Internal error", "the gateway failed; try again")
                await problem_response(p, scope["path"])(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


async def _problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)  # registered for Problem only
    return problem_response(exc, request.url.path)


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    state: GatewayState = request.app.state.gw
    listening = state.listener is not None and state.listener.assigned.is_set()
    if listening and await state.store.ping():
        return Response(b'{"status":"ready"}', media_type="application/json")
    why = "waiting for Kafka's answers topic or PostgreSQL"
    raise Problem(503, "not-ready", "Not ready", why, headers={"Retry-After": "1"})


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def metrics(request: Request) -> Response:
    if not _loopback(request):
        raise Problem(403, "forbidden", "Forbidden", "metrics answer loopback clients only")
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    return Response(orjson.dumps(document(), option=orjson.OPT_SORT_KEYS),
                    media_type="application/json")  # fmt: skip


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/user/balance", wallet.hub88_balance, methods=["POST"]),
        Route("/transaction/bet", wallet.hub88_bet, methods=["POST"]),
        Route("/transaction/win", wallet.hub88_win, methods=["POST"]),
        Route("/transaction/rollback", wallet.hub88_rollback, methods=["POST"]),
        Route("/wallet/v1/balance", wallet.generic_balance, methods=["POST"]),
        Route("/wallet/v1/{kind:str}", wallet.generic_call, methods=["POST"]),
        Route("/payments/{provider:str}", webhooks.payment_webhook, methods=["POST"]),
        Route("/bets", bets.post_bet, methods=["POST"]),
        Route("/bets/stream", bets.stream_bets, methods=["GET"]),
        Route("/bets/{bet_id:str}", bets.get_bet, methods=["GET"]),
    ]


async def _prune(store: Store, keep_days: float, every: float) -> None:
    """Prune the gateway's state every ``every`` seconds (the first time at a random moment
    within that, so several gateway processes do not all prune at once)."""
    await asyncio.sleep(random.uniform(0, every))
    while True:
        try:
            counts = await store.prune(keep_days)
        except Exception:  # PostgreSQL away: the next round prunes it
            log.warning("gateway: pruning failed", exc_info=True)
        else:
            if any(counts):
                log.info("gateway: pruned %d tickets, %d transaction claims, %d tokens, "
                         "%d webhook signatures", *counts)  # fmt: skip
        await asyncio.sleep(every)


def create_app(
    settings: Settings, gateway: GatewaySettings, *, credentials: Credentials | None = None
) -> ASGIApp:
    """The gateway as an ASGI app; its Kafka clients and pool start with its lifespan."""
    creds = credentials if credentials is not None else Credentials.load(gateway.directory)
    table = routes()
    observed = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        publisher = Publisher(settings, loop)
        store = Store(settings.pg_dsn.get_secret_value(), settings.pg_schema,
                      token_ttl=gateway.token_cache)  # fmt: skip
        await store.open()
        waiters = Waiters()
        observed.waiting.set_function(lambda: len(waiters))
        decisions = bets.Decisions(store.ticket, store.claim_tickets)
        state = GatewayState(
            settings=settings, gateway=gateway, credentials=creds, publisher=publisher,
            store=store, waiters=waiters, decisions=decisions,
            wallet=wallet.Wallet(publisher.publish, store, waiters, gateway.deadline),
            limiter=RateLimiter(gateway.rate, gateway.burst),
        )  # fmt: skip
        state.listener = Listener(settings, loop, waiters.answer, decisions.decided)
        app.state.gw = state
        app.state.metrics = observed
        pruner = None
        if gateway.prune_every > 0:
            pruner = asyncio.create_task(_prune(store, gateway.retention, gateway.prune_every))
        try:
            yield
        finally:
            if pruner is not None:
                pruner.cancel()
            state.listener.close()
            publisher.close()
            await store.close()

    app = Starlette(routes=table, lifespan=lifespan,
                    exception_handlers={Problem: _problem})  # fmt: skip
    app.state.metrics = observed
    return Edge(app, table, observed, gateway.max_body)


async def serve(settings: Settings, gateway: GatewaySettings, *, ready: Any = print) -> None:
    """Run the gateway until SIGINT/SIGTERM; say ``READY`` once it listens and its listener
    has its partitions."""
    import uvicorn

    app = create_app(settings, gateway)
    if settings.metrics_port > 0:  # the stack's scrape port too, as every process has
        from prometheus_client import REGISTRY

        from streams import metrics as process_metrics

        inner_app = app.app if isinstance(app, Edge) else app
        REGISTRY.register(inner_app.state.metrics.registry)  # type: ignore[attr-defined]

        # The scrape port's /readyz says what the gateway's own does: listening, PostgreSQL.
        def listening() -> bool:  # the state is made when the app starts, after this
            gw: GatewayState | None = getattr(inner_app.state, "gw", None)  # type: ignore[attr-defined]
            return gw is not None and gw.listener is not None and gw.listener.assigned.is_set()

        process_metrics.add_check("gateway.listening", listening)
        process_metrics.add_check(
            "postgres", process_metrics.pg_reachable(settings.pg_dsn.get_secret_value())
        )
        process_metrics.serve(settings.metrics_port, "gateway", settings.metrics_bind)
    config = uvicorn.Config(app, host=gateway.host, port=gateway.port, loop="none",
                            http="httptools", lifespan="on", access_log=False,
                            log_level="warning", timeout_graceful_shutdown=5)  # fmt: skip
    server = uvicorn.Server(config)
    sockets = None
    if gateway.reuse_port:  # one of several processes on one port: the kernel shares it out
        sock = socket.socket(socket.AF_INET6 if ":" in gateway.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((gateway.host, gateway.port))
        sock.set_inheritable(True)
        sockets = [sock]
    task = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started and not task.done():  # noqa: ASYNC110 - uvicorn sets a flag
        await asyncio.sleep(0.05)
    if server.started:
        inner = app.app if isinstance(app, Edge) else app
        state: GatewayState = inner.state.gw  # type: ignore[attr-defined]
        assert state.listener is not None  # set by the lifespan
        await asyncio.to_thread(state.listener.assigned.wait, 60)
        ready(f"{READY} http://{gateway.host}:{gateway.port}", flush=True)
    await task
