"""Payment webhooks: ``POST /payments/{provider}``, signed with the provider's secret.

``X-Signature`` is the hex HMAC-SHA256 of ``X-Timestamp + "." + body``; the timestamp
(whole seconds since the epoch) must be within the replay window of the gateway's clock
and the signature new inside it. The body is one ``payments`` contract event, published
as sent; 202 only after Kafka has it (``acks=all``).
"""

from __future__ import annotations

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
    try:
        verify_webhook(secret, body, request.headers.get("X-Timestamp"),
                       request.headers.get("X-Signature"),
                       window=state.gateway.replay_window, guard=state.guard)  # fmt: skip
    except WebhookRefused as refused:
        raise Problem(*_REFUSED[refused.reason], str(refused)) from refused
    event = decode(PAYMENT_EVENT, body)
    if isinstance(event, DecodeFailure):
        raise Problem(422, event.reason, "Not a payments event", event.error)
    try:
        await state.publisher.publish("payments", event.player_id, body)
    except Unavailable as exc:
        raise Problem(503, "unavailable", "Kafka did not take it", "send it again",
                      headers={"Retry-After": "1"}) from exc  # fmt: skip
    return Response(orjson.dumps({"payment_id": event.payment_id, "status": "queued"}),
                    status_code=202, media_type="application/json")  # fmt: skip
