"""The bet API for front ends: ``POST /bets`` (202 and the ticket once Kafka has the bet),
``GET /bets/{id}`` (the decision once there is one) and ``GET /bets/stream`` (Server-Sent
Events: the decisions of the bets this API key posted, or only those of one player with
``?player=``). Every route needs an ``X-Api-Key`` and is rate limited per key.

A key sees only its own bets: the first key to post a bet id holds it (a row of
``gateway_tickets``, written before the bet goes to Kafka, so every gateway process and
every restart agrees); another key posting that id gets 409, and reading it gets the same
404 as an id never posted.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from croupier.gateway.auth import api_key_owner
from croupier.gateway.kafka import Unavailable
from croupier.gateway.problems import Problem
from schemas.base import ID_PATTERN
from schemas.bets import BET_REQUEST
from schemas.decode import DecodeFailure, decode

KEEPALIVE = 15.0  # seconds between SSE comments, so proxies keep the stream open
QUEUE = 10_000  # decisions a slow SSE client may lag behind before it is cut off
REMEMBERED = 200_000  # recent decisions and ticket owners kept in memory


@dataclass(eq=False)
class _Subscriber:
    owner: str
    player: str | None
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE))


Holder = Callable[[str], Awaitable[tuple[str, str] | None]]
Claim = Callable[[list[tuple[str, str, str]]], Awaitable[dict[str, tuple[str, str]]]]
CLAIMS = 500  # bet ids claimed in one call to PostgreSQL at most


class Decisions:
    """Recent decisions, who holds which bet (a cache of ``gateway_tickets``), and the SSE
    subscribers. A decision goes only to the streams of the key that holds its bet."""

    def __init__(self, holder: Holder | None = None, claim: Claim | None = None) -> None:
        self.recent: OrderedDict[str, bytes] = OrderedDict()
        self.owners: OrderedDict[str, str] = OrderedDict()
        self.subscribers: set[_Subscriber] = set()
        self._holder = holder
        self._lookups: set[asyncio.Task[None]] = set()
        self._claim = claim
        self._claims: list[tuple[str, str, str, asyncio.Future[tuple[str, str]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def claim(self, bet_id: str, owner: str, player_id: str) -> tuple[str, str]:
        """Claim ``bet_id`` for ``owner`` in ``gateway_tickets``; its holder (key name,
        player) after it. The posts that come while a claim is on its way to PostgreSQL
        go together in the next call (one round trip for many posts)."""
        assert self._claim is not None  # the app passes the store's
        fut: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
        self._claims.append((bet_id, owner, player_id, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        assert self._claim is not None
        while self._claims:
            batch, self._claims = self._claims[:CLAIMS], self._claims[CLAIMS:]
            try:
                held = await self._claim([(b, k, p) for b, k, p, _ in batch])
            except Exception as exc:  # each post answers it (503), none is left waiting
                for *_, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for b, _, _, fut in batch:
                if not fut.done():
                    fut.set_result(held.get(b, ("", "")))

    def posted(self, bet_id: str, owner: str) -> None:
        self.owners[bet_id] = owner
        if len(self.owners) > REMEMBERED:
            self.owners.popitem(last=False)

    def decided(self, data: dict[str, Any]) -> None:
        bet_id = str(data["bet_id"])
        raw = orjson.dumps(data)
        self.recent[bet_id] = raw
        if len(self.recent) > REMEMBERED:
            self.recent.popitem(last=False)
        if not self.subscribers:
            return
        owner = self.owners.get(bet_id)
        if owner is None and self._holder is not None:
            # Posted through another gateway process (or before a restart): its ticket says.
            task = asyncio.get_running_loop().create_task(self._look_up(bet_id, data, raw))
            self._lookups.add(task)
            task.add_done_callback(self._lookups.discard)
            return
        self._push(owner, data, raw)

    async def _look_up(self, bet_id: str, data: dict[str, Any], raw: bytes) -> None:
        assert self._holder is not None
        try:
            held = await self._holder(bet_id)
        except Exception:  # PostgreSQL away: the stream misses it; GET still answers
            return
        if held is not None:
            self.posted(bet_id, held[0])
            self._push(held[0], data, raw)

    def _push(self, owner: str | None, data: dict[str, Any], raw: bytes) -> None:
        if owner is None:
            return  # nobody's ticket (posted straight to Kafka): no front end's stream
        for sub in list(self.subscribers):
            if sub.owner != owner or (sub.player and data.get("player_id") != sub.player):
                continue
            try:
                sub.queue.put_nowait(raw)
            except asyncio.QueueFull:
                self.subscribers.discard(sub)  # too slow: its stream ends, it reconnects
                sub.queue = asyncio.Queue(1)
                sub.queue.put_nowait(None)


def _caller(request: Request) -> str:
    state = request.app.state.gw
    owner = api_key_owner(state.credentials.keys, request.headers.get("X-Api-Key"))
    if owner is None:
        raise Problem(401, "invalid-api-key", "Invalid API key", "send a valid X-Api-Key",
                      headers={"WWW-Authenticate": "ApiKey"})  # fmt: skip
    wait = state.limiter.take(owner)
    if wait > 0:
        raise Problem(429, "rate-limited", "Too many requests",
                      f"this key's rate is {state.gateway.rate:g}/s",
                      headers={"Retry-After": str(max(1, round(wait)))})  # fmt: skip
    return owner


async def post_bet(request: Request) -> Response:
    owner = _caller(request)
    state = request.app.state.gw
    body = await request.body()
    bet = decode(BET_REQUEST, body)
    if isinstance(bet, DecodeFailure):
        raise Problem(422, bet.reason, "Not a bet request", bet.error)
    try:
        holder = await state.decisions.claim(bet.bet_id, owner, bet.player_id)
    except psycopg.Error as exc:
        raise Problem(503, "unavailable", "PostgreSQL did not take the ticket",
                      "post it again", headers={"Retry-After": "1"}) from exc  # fmt: skip
    if holder != (owner, bet.player_id):
        raise Problem(409, "bet-id-taken", "Bet id taken",
                      f"{bet.bet_id} was posted before, by another front end or for another "
                      "player; choose a new id")  # fmt: skip
    state.decisions.posted(bet.bet_id, owner)
    try:
        await state.publisher.publish("bets", bet.player_id, body)
    except Unavailable as exc:
        raise Problem(503, "unavailable", "Kafka did not take it", "post it again",
                      headers={"Retry-After": "1"}) from exc  # fmt: skip
    ticket = {"bet_id": bet.bet_id, "player_id": bet.player_id, "status": "pending",
              "decision": f"/bets/{bet.bet_id}"}  # fmt: skip
    return Response(orjson.dumps(ticket), status_code=202, media_type="application/json",
                    headers={"Location": f"/bets/{bet.bet_id}"})  # fmt: skip


async def get_bet(request: Request) -> Response:
    owner = _caller(request)
    state = request.app.state.gw
    bet_id = request.path_params["bet_id"]
    if not re.fullmatch(ID_PATTERN, bet_id) or len(bet_id) > 128:
        raise Problem(404, "no-decision", "No decision", "not a bet id")
    none = Problem(404, "no-decision", "No decision (yet)",
                   f"no decision for {bet_id}: pending, or never posted",
                   headers={"Retry-After": "1"})  # fmt: skip
    held = state.decisions.owners.get(bet_id)
    if held is None:
        ticket = await state.store.ticket(bet_id)
        held = None if ticket is None else ticket[0]
    if held != owner:
        raise none  # another key's bet answers as one never posted: its existence is not told
    decision = state.decisions.recent.get(bet_id) or await state.store.bet_decision(bet_id)
    if decision is None:
        raise none
    return Response(decision, media_type="application/json")


async def stream_bets(request: Request) -> Response:
    owner = _caller(request)
    state = request.app.state.gw
    player = request.query_params.get("player")
    sub = _Subscriber(owner, player)
    state.decisions.subscribers.add(sub)
    streams = request.app.state.metrics.streams
    streams.inc()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": decisions follow\n\n"
            while True:
                try:
                    raw = await asyncio.wait_for(sub.queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if raw is None:
                    return
                bet_id = orjson.loads(raw)["bet_id"]
                yield b"id: " + bet_id.encode() + b"\nevent: decision\ndata: " + raw + b"\n\n"
        finally:
            state.decisions.subscribers.discard(sub)
            streams.dec()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
