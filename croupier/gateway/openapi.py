"""The gateway's OpenAPI 3.1 document: served at ``/openapi.json`` and checked in at
``docs/openapi/gateway.json`` (a test keeps the two equal; ``croupier gateway openapi``
writes it). Request and answer schemas come from the wire models themselves."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, TypeAdapter

from croupier.gateway.wallet import STATUS, BalanceRequest, RollbackRequest, TransactionRequest
from schemas.bets import BetRequest
from schemas.casino import CASINO_CALL
from schemas.outbound import BetDecision, CasinoResult
from schemas.payments import PAYMENT_EVENT

REF = "#/components/schemas/{model}"


def _schemas() -> dict[str, Any]:
    found: dict[str, Any] = {}

    def add(name: str, schema: dict[str, Any]) -> None:
        for sub, body in schema.pop("$defs", {}).items():
            found[sub] = body
        found[name] = schema

    models: list[type[BaseModel]] = [BalanceRequest, TransactionRequest, RollbackRequest,
                                     BetRequest, BetDecision, CasinoResult]  # fmt: skip
    for model in models:
        add(model.__name__, model.model_json_schema(ref_template=REF))
    adapters: dict[str, TypeAdapter[Any]] = {"CasinoCall": CASINO_CALL,
                                              "PaymentEvent": PAYMENT_EVENT}  # fmt: skip
    for name, adapter in adapters.items():
        add(name, adapter.json_schema(ref_template=REF))
    found["Hub88Answer"] = {
        "type": "object",
        "required": ["user", "status", "request_uuid"],
        "properties": {
            "user": {"type": "string"},
            "status": {"type": "string", "enum": sorted(
                {"RS_OK", "RS_ERROR_UNKNOWN", "RS_ERROR_INVALID_SIGNATURE",
                 "RS_ERROR_WRONG_TYPES", "RS_ERROR_WRONG_SYNTAX", "RS_ERROR_WRONG_CURRENCY"}
                | {hub88 for hub88, _ in STATUS.values()})},
            "request_uuid": {"type": "string"},
            "currency": {"type": "string"},
            "balance": {"type": "integer", "description": "in 1/100000 of the currency unit"},
        },
    }  # fmt: skip
    found["Problem"] = {
        "type": "object",
        "description": "RFC 9457 problem details (application/problem+json)",
        "required": ["type", "title", "status"],
        "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                       "status": {"type": "integer"}, "detail": {"type": "string"},
                       "instance": {"type": "string"}},
    }  # fmt: skip
    found["Ticket"] = {
        "type": "object",
        "required": ["bet_id", "player_id", "status", "decision"],
        "properties": {"bet_id": {"type": "string"}, "player_id": {"type": "string"},
                       "status": {"const": "pending"}, "decision": {"type": "string"}},
    }  # fmt: skip
    return found


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": REF.format(model=name)}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


SSE = {"schema": {"type": "string"}}
PROBLEM = {"application/problem+json": {"schema": _ref("Problem")}}


def _problems(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "a problem", "content": PROBLEM} for c in codes}


def _hub88(summary: str, request: str) -> dict[str, Any]:
    return {"post": {
        "tags": ["Hub88 wallet"], "summary": summary,
        "security": [{"hub88Signature": []}],
        "requestBody": {"required": True, "content": _json(request)},
        "responses": {"200": {"description": "Hub88's answer; the status is in the body",
                              "content": _json("Hub88Answer")}, **_problems(413)},
    }}  # fmt: skip


SESSION_TOKEN = {"name": "X-Session-Token", "in": "header", "schema": {"type": "string"},
                 "description": "the player's live session token, issued for the partner "
                 "whose key signs the call (`croupier gateway token issue PLAYER --partner "
                 "NAME`); 401 invalid-token or token-expired otherwise"}  # fmt: skip
SCOPED = ("A transaction id belongs to the partner that sent it first; a call whose id is "
          "another partner's is refused 409 duplicate_conflict, one in a round another "
          "partner opened or naming a debit another partner sent 404 unknown_round, before "
          "anything is published.")  # fmt: skip


def _generic(kind: str) -> dict[str, Any]:
    statuses = sorted({http for _, http in STATUS.values()})
    token = kind == "debit"
    return {"post": {
        "tags": ["Generic wallet"], "summary": f"a casino {kind} (the `casino` contract)",
        "description": SCOPED + (" A debit needs the player's session token." if token
                                 else " The session token is not checked."),
        "security": [{"signature": []}],
        "parameters": [{**SESSION_TOKEN, "required": True}] if token else [],
        "requestBody": {"required": True, "content": _json("CasinoCall")},
        "responses": {
            "200": {"description": "ok: the casino-results answer",
                    "content": _json("CasinoResult")},
            **{str(s): {"description": "refused: the casino-results answer with its error",
                        "content": _json("CasinoResult")} for s in statuses if s != 503},
            **_problems(401, 404, 409, 413, 422, 503),
        },
    }}  # fmt: skip


@functools.cache
def document() -> dict[str, Any]:
    api_key: list[dict[str, list[str]]] = [{"apiKey": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Croupier gateway", "version": "1",
                 "description": "The HTTP edge: a Hub88-shaped seamless wallet and a generic "
                 "one, signed payment webhooks, and the bet API. Errors are RFC 9457 "
                 "problems. See docs/gateway.md."},
        "paths": {
            "/healthz": {"get": {"summary": "the process is alive",
                                 "responses": {"200": {"description": "alive"}}}},
            "/readyz": {"get": {"summary": "Kafka's answers and PostgreSQL are reachable",
                                "responses": {"200": {"description": "ready"}, **_problems(503)}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (loopback clients only)",
                                 "responses": {"200": {"description": "text exposition"},
                                               **_problems(403)}}},
            "/openapi.json": {"get": {"summary": "this document",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/user/balance": _hub88("a player's balance; needs their live session token, "
                                   "issued for this partner", "BalanceRequest"),
            "/transaction/bet": _hub88("a stake (a casino debit); needs the player's live "
                                       "session token, issued for this partner; scoped by "
                                       "partner", "TransactionRequest"),
            "/transaction/win": _hub88("a win (a casino credit); the token is not checked; "
                                       "scoped by partner", "TransactionRequest"),
            "/transaction/rollback": _hub88("undo a bet; the token is not checked; scoped by "
                                            "partner", "RollbackRequest"),
            "/wallet/v1/balance": {"post": {
                "tags": ["Generic wallet"], "summary": "a player's balance",
                "description": "Needs the player's session token for this partner: "
                               "X-Session-Token, or `token` in the body.",
                "security": [{"signature": []}],
                "parameters": [{**SESSION_TOKEN, "required": False}],
                "requestBody": {"required": True, "content": _json("BalanceRequest")},
                "responses": {"200": {"description": "the balance"}, **_problems(401, 404, 422)},
            }},
            "/wallet/v1/debit": _generic("debit"),
            "/wallet/v1/credit": _generic("credit"),
            "/wallet/v1/rollback": _generic("rollback"),
            "/payments/{provider}": {"post": {
                "tags": ["Payments"], "summary": "a provider's signed webhook",
                "description": "409 replayed: this signature was accepted before, by any "
                               "gateway process.",
                "parameters": [
                    {"name": "provider", "in": "path", "required": True,
                     "schema": {"type": "string"}},
                    {"name": "X-Timestamp", "in": "header", "required": True,
                     "schema": {"type": "string"}, "description": "seconds since the epoch"},
                    {"name": "X-Signature", "in": "header", "required": True,
                     "schema": {"type": "string"},
                     "description": "hex HMAC-SHA256 of X-Timestamp + '.' + body"},
                ],
                "requestBody": {"required": True, "content": _json("PaymentEvent")},
                "responses": {"202": {"description": "Kafka has it (acks=all)"},
                              **_problems(401, 409, 413, 422, 503)},
            }},
            "/bets": {"post": {
                "tags": ["Bets"], "summary": "place a bet: 202 and the ticket once Kafka has it",
                "description": "The first key to post a bet id holds it, for that player: "
                               "another key, or another player, gets 409 bet-id-taken; the "
                               "same key posting it again is a retry.",
                "security": api_key,
                "requestBody": {"required": True, "content": _json("BetRequest")},
                "responses": {"202": {"description": "the ticket", "content": _json("Ticket")},
                              **_problems(401, 409, 413, 422, 429, 503)},
            }},
            "/bets/{bet_id}": {"get": {
                "tags": ["Bets"], "summary": "a bet's decision",
                "description": "Only to the key that posted the bet; any other key gets the "
                               "404 of a bet id never posted.",
                "security": api_key,
                "parameters": [{"name": "bet_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the decision",
                                      "content": _json("BetDecision")},
                              **_problems(401, 404, 429)},
            }},
            "/bets/stream": {"get": {
                "tags": ["Bets"], "summary": "Server-Sent Events: decisions of this key's bets",
                "security": api_key,
                "parameters": [{"name": "player", "in": "query", "required": False,
                                "schema": {"type": "string"},
                                "description": "only this player's (of this key's bets)"}],
                "responses": {"200": {"description": "event: decision; data: a BetDecision",
                                      "content": {"text/event-stream": SSE}},
                              **_problems(401, 429)},
            }},
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "hub88Signature": {"type": "apiKey", "in": "header", "name": "X-Hub88-Signature",
                                   "description": "base64 RSA-SHA256 (PKCS#1 v1.5) of the body"},
                "signature": {"type": "apiKey", "in": "header", "name": "X-Signature",
                              "description": "base64 RSA-SHA256 (PKCS#1 v1.5) of the body"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }  # fmt: skip
