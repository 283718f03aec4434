"""The seamless wallet: Hub88's ``/user/balance`` and ``/transaction/bet|win|rollback``,
and a generic JSON variant (``/wallet/v1/...``) that speaks the ``casino`` contract itself.

A call becomes one ``casino`` message keyed by its ``transaction_uuid`` (the contract's
``transaction_id``), so an aggregator's retry reaches the same transaction and the casino
flow's own idempotency answers it. The gateway waits for that transaction's answer on
``casino-results`` until the deadline; past it, Hub88's retryable ``RS_ERROR_UNKNOWN``,
and the retry is answered from ``casino_transactions`` when the flow has decided it by
then. Balances come from the ledger. Our reason codes become Hub88's statuses and the
generic variant's HTTP statuses by one table, ``STATUS``.

Hub88's amounts are integers in 1/100000 of the currency unit (``100500`` is 1.005); an
amount finer than the currency's minor unit is refused ``RS_ERROR_WRONG_TYPES``.
"""

from __future__ import annotations

import asyncio
import base64
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from croupier.gateway import scoping, tokens
from croupier.gateway.auth import rsa_partner
from croupier.gateway.kafka import Unavailable, Waiters
from croupier.gateway.problems import Problem
from croupier.gateway.store import Store
from schemas.base import Id
from schemas.casino import CASINO_CALL
from schemas.money import Currency, minor_unit, to_minor_unit
from schemas.outbound import ReasonCode
from sinks.postgres.casino import request_hash

OK = "RS_OK"
RETRYABLE = "RS_ERROR_UNKNOWN"  # Hub88 retries or rolls back on it; the retry finds the store
INVALID_SIGNATURE = "RS_ERROR_INVALID_SIGNATURE"
WRONG_SYNTAX = "RS_ERROR_WRONG_SYNTAX"
WRONG_TYPES = "RS_ERROR_WRONG_TYPES"
WRONG_CURRENCY = "RS_ERROR_WRONG_CURRENCY"
DUPLICATE = ReasonCode.DUPLICATE_CONFLICT.value
UNSIGNED = "X-Signature must be the base64 RSA-SHA256 signature of the body"
HUB88_UNITS = 5  # Hub88 amounts are integers of 10**-5 currency units

# The one table: a reason code -> (Hub88's status, the generic variant's HTTP status).
STATUS: dict[ReasonCode, tuple[str, int]] = {
    ReasonCode.SELF_EXCLUDED: ("RS_ERROR_USER_DISABLED", 403),
    ReasonCode.GEO_BLOCKED: ("RS_ERROR_USER_DISABLED", 403),
    ReasonCode.ODDS_CHANGED: ("RS_ERROR_UNKNOWN", 409),
    ReasonCode.MARKET_SUSPENDED: ("RS_ERROR_UNKNOWN", 409),
    ReasonCode.MARKET_UNKNOWN: ("RS_ERROR_UNKNOWN", 404),
    ReasonCode.INSUFFICIENT_FUNDS: ("RS_ERROR_NOT_ENOUGH_MONEY", 402),
    ReasonCode.LOSS_LIMIT: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.DEPOSIT_LIMIT: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.SESSION_LIMIT: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.NO_SESSION: ("RS_ERROR_TOKEN_EXPIRED", 403),
    ReasonCode.UNKNOWN_PLAYER: ("RS_ERROR_INVALID_TOKEN", 404),
    ReasonCode.DUPLICATE_CONFLICT: ("RS_ERROR_DUPLICATE_TRANSACTION", 409),
    ReasonCode.GAME_NOT_CERTIFIED: ("RS_ERROR_INVALID_GAME", 403),
    ReasonCode.UNKNOWN_GAME: ("RS_ERROR_INVALID_GAME", 404),
    ReasonCode.UNKNOWN_ROUND: ("RS_ERROR_TRANSACTION_DOES_NOT_EXIST", 404),
    ReasonCode.ROUND_CLOSED: ("RS_ERROR_UNKNOWN", 409),
    ReasonCode.TRANSACTION_ROLLED_BACK: ("RS_ERROR_UNKNOWN", 409),
    ReasonCode.ROLLBACK_AFTER_CREDIT: ("RS_ERROR_UNKNOWN", 409),
    ReasonCode.INVALID: (WRONG_SYNTAX, 422),
    ReasonCode.MALFORMED_JSON: (WRONG_SYNTAX, 400),
    ReasonCode.ALREADY_REGISTERED: ("RS_ERROR_UNKNOWN", 409),
    ReasonCode.UNDERAGE: ("RS_ERROR_USER_DISABLED", 403),
    ReasonCode.UNLICENSED_JURISDICTION: ("RS_ERROR_USER_DISABLED", 403),
    ReasonCode.INTERNAL_ERROR: (RETRYABLE, 500),
    ReasonCode.PROCESSING_ERROR: (RETRYABLE, 500),
    ReasonCode.TOO_LARGE: (WRONG_SYNTAX, 413),
    ReasonCode.CLOCK_SKEW: (WRONG_SYNTAX, 422),
    ReasonCode.MAX_STAKE: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.MAX_LEGS: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.MAX_ODDS: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.MAX_PAYOUT: ("RS_ERROR_LIMIT_REACHED", 403),
    ReasonCode.RETRY_LATER: (RETRYABLE, 503),
}


class _Hub88(BaseModel):
    # Hub88 adds fields over time (meta, sub_partner_id, ...): ignored, never an error.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    user: Id
    request_uuid: str = Field(min_length=1, max_length=64)
    token: str | None = Field(default=None, max_length=512)
    game_code: Id | None = None


class BalanceRequest(_Hub88):
    currency: Currency | None = None


class TransactionRequest(_Hub88):
    transaction_uuid: Id
    round: Id
    game_code: Id
    currency: Currency
    amount: StrictInt = Field(ge=0, le=10**18)
    round_closed: StrictBool = False
    reference_transaction_uuid: Id | None = None


class RollbackRequest(_Hub88):
    transaction_uuid: Id
    reference_transaction_uuid: Id
    round: Id
    game_code: Id
    round_closed: StrictBool = False


def from_hub88(units: int, currency: str) -> Decimal | None:
    """Hub88's integer amount as a decimal in ``currency``'s minor units, or None when it
    is finer than that."""
    exact = Decimal(units).scaleb(-HUB88_UNITS)
    quantized = to_minor_unit(exact, currency)
    return quantized if quantized == exact else None


def to_hub88(amount: Decimal) -> int:
    return int(amount.scaleb(HUB88_UNITS))


@dataclass
class _Slot:
    lock: asyncio.Lock
    users: int = 0


class Wallet:
    """Turns a call into a ``casino`` message and waits for its answer."""

    def __init__(self, publish: Any, store: Store, waiters: Waiters, deadline: float) -> None:
        self.publish = publish
        self.store = store
        self.waiters = waiters
        self.deadline = deadline
        self._slots: dict[str, _Slot] = {}
        # Debits this gateway published lately: a Hub88 rollback names its debit but not
        # the amount, and the debit may not be in the store yet.
        self._debits: dict[str, tuple[str, str]] = {}

    async def decide(
        self, call: dict[str, Any], parsed: Any = None, *, fresh: bool = False
    ) -> bytes | None:
        """The answer on ``casino-results`` (or the stored first answer), or None when
        none came within the deadline. One request per transaction id at a time, so two
        racing copies never share an answer meant for one of them. ``parsed`` is the
        call as ``CASINO_CALL`` validated it, when the caller did already. ``fresh``: no
        earlier call of this id came through a gateway (its claim is new), so the store
        is not read first; should the flow have the id anyway (produced straight to
        Kafka), its own idempotency answers the call as the store would."""
        tx = str(call["transaction_id"])
        slot = self._slots.get(tx)
        if slot is None:
            slot = self._slots[tx] = _Slot(asyncio.Lock())
        slot.users += 1
        try:
            async with asyncio.timeout(self.deadline):
                async with slot.lock:
                    return await self._decide(tx, call, parsed, fresh)
        except TimeoutError:
            return None
        finally:
            slot.users -= 1
            if slot.users == 0:
                del self._slots[tx]

    async def _decide(self, tx: str, call: dict[str, Any], parsed: Any, fresh: bool) -> bytes:
        if parsed is None:
            parsed = CASINO_CALL.validate_python(call)
        mine = request_hash(parsed)
        if not fresh:
            stored = await self.store.casino_call(tx)
            if stored is not None and stored.request_hash == mine:
                return stored.answer
        if parsed.type == "debit":
            if len(self._debits) > 100_000:
                self._debits.clear()
            self._debits.setdefault(tx, (str(parsed.amount), parsed.currency))
        answers = self.waiters.expect(tx)
        try:
            await self.publish("casino", parsed.player_id, orjson.dumps(call))
            while True:
                answer = await answers.get()
                if await self._meant_for(tx, mine, answer):
                    return answer
        finally:
            self.waiters.forget(tx, answers)

    async def _meant_for(self, tx: str, mine: str, answer: bytes) -> bool:
        """Whether ``answer`` (published for ``tx``) answers a request hashed ``mine``.

        An answer is published after its decision is committed, so the store then holds the
        transaction's first request: an answer to a request like it answers ours; when ours
        conflicts with it, only a duplicate-conflict refusal does (a late answer to the
        first request must never satisfy a conflicting retry)."""
        if b'"error":"' + DUPLICATE.encode() + b'"' in answer:
            return True  # answers a conflicting request whatever the store holds
        stored = await self.store.casino_call(tx)
        if stored is None or stored.request_hash == mine:
            return True
        return bool(orjson.loads(answer).get("error") == ReasonCode.DUPLICATE_CONFLICT.value)

    async def debit_of(self, tx: str) -> tuple[str, str] | None:
        """(amount, currency) of the debit ``tx``: as stored (its first call decided), else
        as this gateway last published it (a debit still on its way)."""
        stored = await self.store.casino_call(tx)
        if stored is not None:
            return (str(stored.amount), stored.currency) if stored.type == "debit" else None
        return self._debits.get(tx)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


# -- Hub88 -------------------------------------------------------------------------------


def _hub88_reply(user: str, request_uuid: str, status: str, **more: Any) -> Response:
    # Hub88 reads the status from the body; the HTTP status is always 200.
    return _json({"user": user, "status": status, "request_uuid": request_uuid, **more})


def _loose_ids(body: bytes) -> tuple[str, str]:
    """``user`` and ``request_uuid`` echoed on an error, when they are strings."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    user, ruid = data.get("user"), data.get("request_uuid")
    user = user[:64] if isinstance(user, str) else ""
    return user, (ruid[:64] if isinstance(ruid, str) else "")


async def _signed(request: Request, header: str) -> tuple[bytes, str | None]:
    state = request.app.state.gw
    body = await request.body()
    return body, rsa_partner(state.credentials.partners, body, request.headers.get(header))


Kind = Literal["bet", "win", "rollback"]


def _operator_signed(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Sign a Hub88 answer's body with the operator's key (``X-Hub88-Signature``), as
    Hub88 verifies, when the operator's key is configured."""

    @functools.wraps(handler)
    async def signed(request: Request) -> Response:
        response = await handler(request)
        key = request.app.state.gw.credentials.operator
        if key is not None:
            # A 2048-bit RSA signature is ~0.5 ms of CPU; OpenSSL signs without the GIL,
            # so in the default executor it runs beside the loop (on another core).
            sign = functools.partial(key.sign, bytes(response.body), padding.PKCS1v15(),
                                     hashes.SHA256())  # fmt: skip
            raw = await asyncio.get_running_loop().run_in_executor(None, sign)
            response.headers["X-Hub88-Signature"] = base64.b64encode(raw).decode()
        return response

    return signed


@_operator_signed
async def hub88_balance(request: Request) -> Response:
    body, partner = await _signed(request, "X-Hub88-Signature")
    user, ruid = _loose_ids(body)
    if partner is None:
        return _hub88_reply(user, ruid, INVALID_SIGNATURE)
    try:
        req = BalanceRequest.model_validate_json(body)
    except ValidationError:
        return _hub88_reply(user, ruid, WRONG_TYPES)
    refused = await tokens.refusal(request.app.state.gw.store, req.user, req.token, partner)
    if refused is not None:
        return _hub88_reply(req.user, req.request_uuid, refused)
    found = await request.app.state.gw.store.balance(req.user, req.currency)
    if found is None:
        return _hub88_reply(req.user, req.request_uuid, STATUS[ReasonCode.UNKNOWN_PLAYER][0])
    amount, currency = found
    return _hub88_reply(req.user, req.request_uuid, OK, currency=currency,
                        balance=to_hub88(amount))  # fmt: skip


@_operator_signed
async def hub88_bet(request: Request) -> Response:
    return await _hub88_transaction(request, "bet")


@_operator_signed
async def hub88_win(request: Request) -> Response:
    return await _hub88_transaction(request, "win")


@_operator_signed
async def hub88_rollback(request: Request) -> Response:
    return await _hub88_transaction(request, "rollback")


async def _hub88_transaction(request: Request, kind: Kind) -> Response:
    state = request.app.state.gw
    body, partner = await _signed(request, "X-Hub88-Signature")
    user, ruid = _loose_ids(body)
    if partner is None:
        return _hub88_reply(user, ruid, INVALID_SIGNATURE)
    try:
        req: TransactionRequest | RollbackRequest
        if kind == "rollback":
            req = RollbackRequest.model_validate_json(body)
        else:
            req = TransactionRequest.model_validate_json(body)
    except ValidationError:
        return _hub88_reply(user, ruid, WRONG_TYPES)
    if kind == "bet":  # a win or a rollback is not refused for its token (Hub88's rule)
        refused = await tokens.refusal(state.store, req.user, req.token, partner)
        if refused is not None:
            return _hub88_reply(req.user, req.request_uuid, refused)
    reference = req.reference_transaction_uuid
    foreign, fresh = await _claim(state.store, partner, req.transaction_uuid, req.user,
                                  req.round, reference)  # fmt: skip
    if foreign is not None:
        return _hub88_reply(req.user, req.request_uuid, foreign)
    call: dict[str, Any] = {
        "transaction_id": req.transaction_uuid, "round_id": req.round, "game_id": req.game_code,
        "player_id": req.user, "timestamp": _now(),
    }  # fmt: skip
    if isinstance(req, TransactionRequest):
        amount = from_hub88(req.amount, req.currency)
        if amount is None or (kind == "bet" and amount <= 0):
            return _hub88_reply(req.user, req.request_uuid, WRONG_TYPES)
        wallet_currency = await state.store.currency(req.user)
        if wallet_currency is not None and wallet_currency != req.currency:
            return _hub88_reply(req.user, req.request_uuid, WRONG_CURRENCY)
        call.update(amount=str(amount), currency=req.currency)
        if kind == "bet":
            call["type"] = "debit"
        else:
            call.update(type="credit", round_closed=req.round_closed)
    else:
        debit = await state.wallet.debit_of(req.reference_transaction_uuid)
        if debit is None:
            # A rollback of a debit never seen is still recorded (a tombstone that refuses
            # the debit should it come late); its amount is then only a placeholder.
            currency = await state.store.currency(req.user) or "EUR"
            debit = (str(minor_unit(currency)), currency)
        call.update(type="rollback", reference_transaction_id=req.reference_transaction_uuid,
                    amount=debit[0], currency=debit[1])  # fmt: skip
    try:
        parsed = CASINO_CALL.validate_python(call)
    except ValidationError:
        return _hub88_reply(req.user, req.request_uuid, WRONG_SYNTAX)
    try:
        answer = await state.wallet.decide(call, parsed, fresh=fresh)
    except Unavailable:
        answer = None
    if answer is None:
        return _hub88_reply(req.user, req.request_uuid, RETRYABLE)
    result = orjson.loads(answer)
    error = result.get("error")
    status = OK if error is None else STATUS[ReasonCode(error)][0]
    return _hub88_reply(req.user, req.request_uuid, status, currency=result["currency"],
                        balance=to_hub88(Decimal(result["balance"])))  # fmt: skip


async def _claim(
    store: Store, partner: str, tx: str, player: str, round_id: str, reference: str | None
) -> tuple[str | None, bool]:
    """Claim the call's transaction id for ``partner``: Hub88's status refusing a call
    that is not the partner's own (``scoping``), or None; and whether the claim is new."""
    claimed = await store.claim_transaction(tx, partner, player, round_id, reference)
    return scoping.refusal(partner, claimed), claimed.fresh


# -- the generic variant -----------------------------------------------------------------

TOKEN_HEADER = "X-Session-Token"
_GENERIC_TOKEN = {  # Hub88's token statuses as the generic variant's problems
    tokens.INVALID_TOKEN: (401, "invalid-token", "Invalid session token"),
    tokens.TOKEN_EXPIRED: (401, "token-expired", "Session token expired"),
}
_GENERIC_FOREIGN = {  # and the scoping refusals
    scoping.DUPLICATE: (409, "duplicate_conflict", "Transaction id taken"),
    scoping.NOT_FOUND: (404, "unknown_round", "No such round or transaction"),
}


async def _generic_token(request: Request, user: str, token: str | None, partner: str) -> None:
    state = request.app.state.gw
    refused = await tokens.refusal(state.store, user, token, partner)
    if refused is not None:
        why = f"{TOKEN_HEADER} must be the player's live session token for this partner"
        raise Problem(*_GENERIC_TOKEN[refused], why)


async def generic_balance(request: Request) -> Response:
    state = request.app.state.gw
    body, partner = await _signed(request, "X-Signature")
    if partner is None:
        raise Problem(401, "invalid-signature", "Invalid signature", UNSIGNED)
    try:
        req = BalanceRequest.model_validate_json(body)
    except ValidationError as exc:
        raise Problem(422, "invalid", "Invalid request", _errors(exc)) from exc
    await _generic_token(request, req.user, request.headers.get(TOKEN_HEADER, req.token), partner)
    found = await state.store.balance(req.user, req.currency)
    if found is None:
        raise Problem(404, "unknown_player", "Unknown player", f"no wallet for {req.user}")
    return _json({"player_id": req.user, "balance": str(found[0]), "currency": found[1]})


async def generic_call(request: Request) -> Response:
    """``/wallet/v1/debit|credit|rollback``: the body is a ``casino`` call itself."""
    state = request.app.state.gw
    kind = request.path_params["kind"]
    body, partner = await _signed(request, "X-Signature")
    if partner is None:
        raise Problem(401, "invalid-signature", "Invalid signature", UNSIGNED)
    try:
        call = orjson.loads(body)
        parsed = CASINO_CALL.validate_python(call)
    except (orjson.JSONDecodeError, ValidationError) as exc:
        detail = _errors(exc) if isinstance(exc, ValidationError) else "not JSON"
        raise Problem(422, "invalid", "Invalid request", detail) from exc
    if parsed.type != kind:
        raise Problem(422, "invalid", "Invalid request", f"type {parsed.type!r} sent to /{kind}")
    if parsed.type == "debit":  # as Hub88's bet: the player's token for this partner
        await _generic_token(request, parsed.player_id, request.headers.get(TOKEN_HEADER),
                             partner)  # fmt: skip
    reference = getattr(parsed, "reference_transaction_id", None)
    foreign, fresh = await _claim(state.store, partner, parsed.transaction_id,
                                  parsed.player_id, parsed.round_id, reference)  # fmt: skip
    if foreign is not None:
        raise Problem(*_GENERIC_FOREIGN[foreign], "this transaction, its round or the "
                      "transaction it references is another partner's")  # fmt: skip
    try:
        answer = await state.wallet.decide(call, parsed, fresh=fresh)
    except Unavailable:
        answer = None
    if answer is None:
        raise Problem(503, "timeout", "No answer in time",
                      "send the same call again: it is answered once, whatever happens",
                      headers={"Retry-After": "1"})  # fmt: skip
    result = orjson.loads(answer)
    status = 200 if result.get("error") is None else STATUS[ReasonCode(result["error"])][1]
    return Response(answer, status_code=status, media_type="application/json")


def _errors(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False, include_input=False, include_context=False)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs[:5])
