"""Payment webhooks: ``POST /payments/{provider}``, signed with the provider's secret.

``X-Signature`` is the hex HMAC-SHA256 of ``X-Timestamp + "." + body``; the timestamp
(whole seconds since the epoch) must be within the replay window of the gateway's clock
and the signature new: every (provider, signature) accepted is kept in PostgreSQL
(``gateway_webhooks_seen``), so a replay is refused by any gateway process, after any
restart. The body is one ``payments`` contract event, published as sent; 202 only after
Kafka has it (``acks=all``).

The signature is recorded once Kafka has the event, not before: a delivery Kafka refused
(503) can be sent again as it was. Two copies racing in at the same instant may then both
be published; the payments flow's own idempotency (``payment_id``) keeps that harmless.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from croupier.gateway.auth import WebhookRefused, verify_webhook
from croupier.gateway.kafka import Unavailable
from croupier.gateway.problems import Problem
from schemas.decode import DecodeFailure, decode
from schemas.payments import PAYMENT_EVENT

_REFUSED = {
    "signature": (401, "invalid-signature", "Invalid signature"),
    "expired": (401, "expired", "Timestamp outside the replay window"),
    "replayed": (409, "replayed", "Webhook replayed"),
}


async def payment_webhook(request: Request) -> Response:
    state = request.app.state.gw
    provider = request.path_params["provider"]
    body = await request.body()
    secret = state.credentials.providers.get(provider)
    if secret is None:
        # The same answer as a bad signature: no way to learn which providers exist.
        raise Problem(*_REFUSED["signature"], "the signature does not match")
    stamp, signature = request.headers.get("X-Timestamp"), request.headers.get("X-Signature")
    try:
        verify_webhook(secret, body, stamp, signature,
                       window=state.gateway.replay_window)  # fmt: skip
    except WebhookRefused as refused:
        raise Problem(*_REFUSED[refused.reason], str(refused)) from refused
    assert stamp is not None and signature is not None  # verified above
    signature = signature.lower()
    if await state.store.webhook_seen_before(provider, signature):
        raise Problem(*_REFUSED["replayed"], "this signature was seen before")
    event = decode(PAYMENT_EVENT, body)
    if isinstance(event, DecodeFailure):
        raise Problem(422, event.reason, "Not a payments event", event.error)
    try:
        await state.publisher.publish("payments", event.player_id, body)
    except Unavailable as exc:
        raise Problem(503, "unavailable", "Kafka did not take it", "send it again",
                      headers={"Retry-After": "1"}) from exc  # fmt: skip
    await state.store.webhook_seen(provider, signature, datetime.fromtimestamp(int(stamp), UTC))
    return Response(orjson.dumps({"payment_id": event.payment_id, "status": "queued"}),
                    status_code=202, media_type="application/json")  # fmt: skip
